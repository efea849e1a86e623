"""Next-DiT (flowjax.models.nextdit): diffusers parity, masking, zero init, GQA, sizes, errors.

One tiny network (the diffusers test configuration: width 24, 2 layers, 3 heads, 1 key/value
head, condition width 32) with the random weights of tests/fixtures/nextdit_diffusers.npz
(made by make_nextdit_diffusers.py); compiled functions are shared through ``_apply``.
"""

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data.tokens import pack_images, unpack_tokens
from flowjax.models import make_model
from flowjax.models.nextdit import (
    NextDiT,
    nextdit_ffn_hidden,
    nextdit_variant,
    params_from_diffusers,
)
from flowjax.time.grids import shifted_grid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURE = np.load(os.path.join(HERE, "..", "fixtures", "nextdit_diffusers.npz"))
CONFIG = dict(
    patch_size=2,
    hidden_size=24,
    depth=2,
    num_heads=3,
    num_kv_heads=1,
    multiple_of=16,
    context_dim=32,
    train_grid=4,
)
NET = NextDiT(**CONFIG)
PARAMS = params_from_diffusers(
    {k[2:]: FIXTURE[k] for k in FIXTURE.files if k.startswith("w/")}, 2, 3
)
X, T = jnp.asarray(FIXTURE["x"]), jnp.asarray(FIXTURE["t"])
CONTEXT = dict(
    context=jnp.asarray(FIXTURE["context"]), context_mask=jnp.asarray(FIXTURE["context_mask"])
)
# float32 against diffusers in float64 (RoPE in float32): observed max error 2.1e-6 on outputs
# of size ~3; 1e-5 leaves a factor ~5 for other CPUs / XLA versions.
TOL = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def _jitted(fields: tuple):
    return jax.jit(NextDiT(**dict(fields)).apply)


def _apply(params, *args, net=NET, **kwargs):
    fields = tuple(
        (f.name, getattr(net, f.name))
        for f in dataclasses.fields(net)
        if f.name not in ("parent", "name")
    )
    return np.asarray(_jitted(fields)({"params": params}, *args, **kwargs))


def _with(params, fn):
    """A copy of ``params`` with every block's entries passed through ``fn(block) -> dict``."""
    return {k: (fn(dict(v)) if k.startswith("block_") else v) for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Parity with diffusers' LuminaNextDiT2DModel
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, key",
    [
        ({}, "out_plain"),
        ({"proportional_attention": True}, "out_proportional"),
        ({"rope": "pi"}, "out_linear2"),  # an 8 x 8 grid at train_grid 4: scale 2
        ({"rope": "time_switch,watershed=1"}, "out_linear2"),  # t < 1: interpolation
        ({"rope": "time_switch,watershed=0"}, "out_ntk2"),  # t >= 0: base theta * 2
    ],
)
def test_matches_diffusers(fields, key):
    out = _apply(PARAMS, X, T, net=NET.clone(**fields), **CONTEXT)
    np.testing.assert_allclose(out, FIXTURE[key], **TOL)


def test_time_switch_follows_each_samples_time():
    """t = (0.43, 0.26) with the watershed between: sample 0 takes the NTK table, sample 1 the
    interpolated one (diffusers switches the whole batch on t[0])."""
    assert FIXTURE["t"][1] < 0.35 <= FIXTURE["t"][0]
    out = _apply(PARAMS, X, T, net=NET.clone(rope="time_switch,watershed=0.35"), **CONTEXT)
    np.testing.assert_allclose(out[0], FIXTURE["out_ntk2"][0], **TOL)
    np.testing.assert_allclose(out[1], FIXTURE["out_linear2"][1], **TOL)


def _mixed_batch():
    return pack_images([FIXTURE["mixed_x0"], FIXTURE["mixed_x1"]], 2, pad_value=1e4)


def test_mixed_size_batch_matches_diffusers_modules():
    batch = _mixed_batch()
    out = _apply(
        PARAMS,
        jnp.asarray(batch.tokens),
        jnp.asarray(FIXTURE["mixed_t"]),
        mask=jnp.asarray(batch.mask),
        positions=jnp.asarray(batch.positions),
        **CONTEXT,
    )
    np.testing.assert_allclose(out[batch.mask], FIXTURE["out_mixed"][batch.mask], **TOL)
    np.testing.assert_array_equal(out[~batch.mask], 0.0)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


def test_output_is_exactly_zero_at_initialisation():
    key = jax.random.key(1, impl="unsafe_rbg")  # compiles in a third of threefry's time
    params = flax.linen.unbox(jax.jit(NET.init)(key, X, T, **CONTEXT))["params"]
    assert not np.any(_apply(params, X, T, **CONTEXT))
    batch = _mixed_batch()
    out = _apply(
        params,
        jnp.asarray(batch.tokens),
        T,
        mask=jnp.asarray(batch.mask),
        positions=jnp.asarray(batch.positions),
        **CONTEXT,
    )
    assert not np.any(out)


def _shuffled_context():
    """The condition with its valid tokens permuted and a zero-mean change added: the masked
    mean (hence ``c``) is unchanged, the tokens are not."""
    context = np.array(FIXTURE["context"], np.float64)
    mask = FIXTURE["context_mask"]
    rng = np.random.default_rng(3)
    for b in range(context.shape[0]):
        valid = np.flatnonzero(mask[b])
        change = rng.normal(size=(len(valid), context.shape[2]))
        context[b, valid] = context[b, rng.permutation(valid)] + change - change.mean(0)
    return dict(context=jnp.asarray(context, jnp.float32), context_mask=CONTEXT["context_mask"])


def test_with_zero_gates_the_condition_acts_only_through_its_pooled_vector():
    shuffled = _shuffled_context()
    closed = _with(PARAMS, lambda blk: {**blk, "gate": np.zeros_like(blk["gate"])})
    np.testing.assert_allclose(
        _apply(closed, X, T, **shuffled), _apply(closed, X, T, **CONTEXT), rtol=0, atol=1e-5
    )
    # the fixture's gates are open: the same change then moves the output
    moved = np.abs(_apply(PARAMS, X, T, **shuffled) - FIXTURE["out_plain"]).max()
    assert moved > 1e-2


def test_padding_of_any_value_leaves_the_valid_outputs_unchanged():
    """Extra image tokens (any value, any position) and extra condition tokens (any value),
    all masked, change no valid output."""
    base = pack_images(list(np.asarray(X)), 2)
    n = base.tokens.shape[1]
    rng = np.random.default_rng(5)
    tokens = np.concatenate([base.tokens, 1e3 * rng.normal(size=(2, 7, 16))], 1)
    mask = np.concatenate([base.mask, np.zeros((2, 7), bool)], 1)
    positions = np.concatenate([base.positions, rng.integers(0, 50, (2, 7, 2))], 1)
    context = np.concatenate([FIXTURE["context"], 1e3 * rng.normal(size=(2, 3, 32))], 1)
    context_mask = np.concatenate([FIXTURE["context_mask"], np.zeros((2, 3), bool)], 1)
    out = _apply(
        PARAMS,
        jnp.asarray(tokens, jnp.float32),
        T,
        mask=jnp.asarray(mask),
        positions=jnp.asarray(positions, jnp.int32),
        context=jnp.asarray(context, jnp.float32),
        context_mask=jnp.asarray(context_mask),
    )
    alone = unpack_tokens(out[:, :n], base.sizes, 2)
    np.testing.assert_allclose(np.stack(alone), FIXTURE["out_plain"], **TOL)
    np.testing.assert_array_equal(out[:, n:], 0.0)


def test_each_image_of_a_mixed_batch_gets_the_output_it_gets_alone():
    """Proportional attention counts each image's own tokens."""
    net = NET.clone(proportional_attention=True, train_grid=8)
    batch = _mixed_batch()
    t = jnp.asarray(FIXTURE["mixed_t"])
    out = _apply(
        PARAMS,
        jnp.asarray(batch.tokens),
        t,
        net=net,
        mask=jnp.asarray(batch.mask),
        positions=jnp.asarray(batch.positions),
        **CONTEXT,
    )
    images = unpack_tokens(out, batch.sizes, 2)
    for i, image in enumerate((FIXTURE["mixed_x0"], FIXTURE["mixed_x1"])):
        alone = _apply(
            PARAMS,
            jnp.asarray(image)[None],
            t[i : i + 1],
            net=net,
            **{k: v[i : i + 1] for k, v in CONTEXT.items()},
        )
        np.testing.assert_allclose(images[i], alone[0], **TOL)


def test_grouped_query_attention_equals_multi_head_with_repeated_key_value_weights():
    """4 query heads on 2 key/value heads (query head h reads head h // 2) = 4 heads whose
    key/value weights repeat each group's twice, consecutively."""
    gqa = NET.clone(hidden_size=32, num_heads=4, num_kv_heads=2)
    key = jax.random.key(2, impl="unsafe_rbg")
    params = flax.linen.unbox(jax.jit(gqa.init)(key, X, T, **CONTEXT))["params"]
    rng = np.random.default_rng(3)  # every weight moved, so gates and zero layers matter
    params = jax.tree_util.tree_map(
        lambda a: np.float32(a + 0.3 * rng.normal(size=a.shape)), params
    )

    def repeat(blk):
        blk = dict(blk)
        for name in ("k", "v", "ky", "vy"):
            blk[name] = {"kernel": np.repeat(blk[name]["kernel"], 2, axis=1)}
        for name in ("k_norm", "ky_norm"):
            blk[name] = {k: np.repeat(v, 2, axis=0) for k, v in blk[name].items()}
        return blk

    grouped = _apply(params, X, T, net=gqa, **CONTEXT)
    full = _apply(_with(params, repeat), X, T, net=gqa.clone(num_kv_heads=4), **CONTEXT)
    assert np.abs(grouped).max() > 0.1
    np.testing.assert_allclose(grouped, full, **TOL)


def test_proportional_attention_is_the_plain_scale_at_the_training_size():
    at_train = NET.clone(proportional_attention=True, train_grid=8)  # 16 x 16 / patch 2 = 8 x 8
    np.testing.assert_allclose(
        _apply(PARAMS, X, T, net=at_train, **CONTEXT), FIXTURE["out_plain"], **TOL
    )
    assert np.abs(FIXTURE["out_proportional"] - FIXTURE["out_plain"]).max() > 1e-2


def test_scanned_blocks_equal_the_loop():
    stacked = {k: v for k, v in PARAMS.items() if not k.startswith("block_")}
    stacked["blocks"] = {
        "block": jax.tree_util.tree_map(
            lambda *a: np.stack(a), PARAMS["block_0"], PARAMS["block_1"]
        )
    }
    out = _apply(stacked, X, T, net=NET.clone(scan_blocks=True), **CONTEXT)
    np.testing.assert_allclose(out, FIXTURE["out_plain"], **TOL)


@pytest.mark.slow
def test_eight_simulated_devices_give_the_one_device_output_on_a_mixed_size_batch():
    """(data 2, fsdp 2, tensor 2) by the default rules; ~20 s (a process of its own)."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "nextdit_sharded_worker.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8
    # float32 sums in another order: observed 4e-5 at outputs of size 35
    assert r["max_diff"] < 1e-5 * r["scale"], r
    # the weights are really split: embed over fsdp, heads over tensor
    assert r["q_spec"] == ["fsdp", "tensor", "None"] and r["q_shard_shape"] == [16, 2, 8]


def test_parameter_count_of_the_2b_network_matches_diffusers():
    """diffusers' count less its cross-attention query copies (one query in Lumina)."""
    net = NextDiT(**nextdit_variant("2B"), learn_sigma=True)
    shapes = jax.eval_shape(
        lambda: net.init(
            jax.random.key(0),
            jnp.zeros((1, 32, 32, 4)),
            jnp.zeros(1),
            context=jnp.zeros((1, 1, 2048)),
        )
    )
    count = sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(flax.linen.unbox(shapes)))
    assert count == int(FIXTURE["count_2b"]) - int(FIXTURE["count_2b_cross_q"])
    assert nextdit_ffn_hidden(2304, 256, None) == 6144
    assert nextdit_ffn_hidden(24, 16, 1.5) == 96  # int(1.5 * 64) rounded up to 16


def _dot_flops(jaxpr) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of every ``dot_general`` in a jaxpr."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _dot_flops(inner) * eqn.params.get("length", 1)
    return total


@pytest.mark.parametrize("shape", [(16, 16, 4), (8, 12, 4)])
def test_forward_flops_are_the_matrix_multiplies_of_one_image(shape):
    params = jax.tree_util.tree_map(jnp.asarray, PARAMS)
    x = jnp.zeros((1, *shape))
    ctx = {k: v[:1] for k, v in CONTEXT.items()}
    jaxpr = jax.make_jaxpr(lambda p: NET.apply({"params": p}, x, T[:1], **ctx))(params)
    assert NET.forward_flops(shape, context_length=16) == _dot_flops(jaxpr.jaxpr)
    assert NET.num_tokens(shape) == (shape[0] // 2) * (shape[1] // 2)


def test_lumina_time_shift_is_the_shifted_grid():
    """Lumina samples on t' = t / (t + s - s t), s = 4: the SD3 map over sigma = 1 - t."""
    sigma = 1.0 - np.linspace(0.0, 1.0, 11)
    expected = 1.0 - 4.0 * sigma / (1.0 + 3.0 * sigma)
    grid = shifted_grid(10, 4.0)
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-15)
    assert grid[0] == 0.0 and grid[-1] == 1.0


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors while tracing (jax.eval_shape), before any work
# ---------------------------------------------------------------------------------------------


def _trace(net, x, t=T, **kwargs):
    params = jax.tree_util.tree_map(jnp.asarray, PARAMS)
    return jax.eval_shape(lambda: net.apply({"params": params}, x, t, **kwargs))


@pytest.mark.parametrize(
    "net, x, kwargs, match",
    [
        (NET, jnp.zeros((2, 15, 16, 4)), CONTEXT, "not a multiple of the patch 2"),
        (NET.clone(max_tokens=32), X, CONTEXT, "more than max_tokens=32"),
        (
            NET,
            jnp.zeros((2, 5, 16)),
            dict(CONTEXT, mask=jnp.ones((2, 4), bool), positions=jnp.zeros((2, 5, 2), jnp.int32)),
            "mask must be bool",
        ),
        (
            NET,
            X,
            dict(context=CONTEXT["context"], context_mask=jnp.ones((2, 15), bool)),
            "context_mask must be bool",
        ),
        (NET, X, dict(context=jnp.zeros((2, 3, 31))), "context must be"),
        (NET.clone(rope="bogus"), X, CONTEXT, "unknown position encoding"),
        (NET, X, {}, "needs a condition sequence"),
        (NET.clone(num_kv_heads=2), X, CONTEXT, "must divide num_heads"),
        (NET.clone(use_end_time=True), X, CONTEXT, "instantaneous velocities"),
    ],
)
def test_bad_input_is_refused_before_work(net, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _trace(net, x, **kwargs)


def test_labels_are_a_one_token_condition_and_the_model_is_registered():
    fields = {k: v for k, v in CONFIG.items() if k != "context_dim"}
    net = make_model(dict(name="nextdit", conditional=True, **fields), num_classes=10)
    assert isinstance(net, NextDiT) and net.num_classes == 10
    key, labels = jax.random.key(0), jnp.array([3, 10])
    shapes = flax.linen.unbox(jax.eval_shape(net.init, key, X, T, labels))["params"]
    assert shapes["y_embed"]["embedding"].shape == (11, 24)
    with pytest.raises(ValueError, match="class-conditional"):
        jax.eval_shape(net.init, key, X, T)
    with pytest.raises(ValueError, match="takes no context"):
        jax.eval_shape(functools.partial(net.init, **CONTEXT), key, X, T, labels)
