"""FiTv2 (docs/maths/fitv2.md): parity with the official PyTorch network, padding invariance,
mixed batches, zero init, parameter counts, the shared AdaLN projection, scan, FLOPs,
8 devices, bad input."""

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.data.tokens import pack_images
from flowjax.models import make_apply_fn, make_model, num_params
from flowjax.models.fitv2 import FITV2_PRESETS, FiTv2, fitv2_variant
from tests.tolerance import assert_equal_up_to_rounding

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "fitv2_torch.npz")
P, C = 2, 4
#: The size of the fixture (tests/fixtures/make_fitv2_torch.py).
TINY = dict(patch_size=P, hidden_size=24, depth=2, num_heads=2, lora_rank=6, train_grid=4)
KEY = jax.random.PRNGKey(0)


def _net(**kw):
    return FiTv2(**{**TINY, "num_classes": 5, **kw})


@functools.cache
def _apply(**kw):
    """One compiled apply per model configuration, shared by the tests."""
    return jax.jit(make_apply_fn(_net(**kw)))


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def official_to_flowjax(w: dict, depth: int, heads: int) -> dict:
    """The official state dict (``w/<name>``) as this module's parameter tree.

    Linear ``weight [out, in]`` -> ``kernel [in, out]``; ``qkv`` -> ``[D, 3, heads, Dh]`` (the
    official reshape of its output), ``proj`` -> ``[heads, Dh, D]``; the patch embedding's
    input and the final layer's output features permuted from (channel, row, col) to (row,
    col, channel) inside the patch; ``fc1_g / fc1_x / fc2`` -> ``w_gate / w_value / w_out``;
    ``adaLN_modulation.1 / .2`` of a block -> ``lora_down / lora_up``.
    """

    def dense(name, perm_in=None, perm_out=None):
        kernel, bias = w[f"w/{name}.weight"].T, w[f"w/{name}.bias"]
        if perm_in is not None:
            kernel = kernel[perm_in]
        if perm_out is not None:
            kernel, bias = kernel[:, perm_out], bias[perm_out]
        return {"kernel": kernel, "bias": bias}

    d = w["w/x_embedder.proj.weight"].shape[0]
    # flowjax feature (p1, p2, c) reads official feature c p^2 + p1 p + p2.
    perm = np.arange(P * P * C).reshape(C, P, P).transpose(1, 2, 0).reshape(-1)
    params = {
        "x_embed": dense("x_embedder.proj", perm_in=perm),
        "cond_embed": {
            "t_embed": {"Dense_0": dense("t_embedder.mlp.0"), "Dense_1": dense("t_embedder.mlp.2")},
            "y_embed": {"embedding": w["w/y_embedder.embedding_table.weight"]},
        },
        "global_modulation": dense("global_adaLN_modulation.1"),
        "final_mod": dense("final_layer.adaLN_modulation.1"),
        "final": dense("final_layer.linear", perm_out=perm),
    }
    for i in range(depth):
        b = f"blocks.{i}"
        qkv = dense(f"{b}.attn.qkv")
        proj = dense(f"{b}.attn.proj")
        params[f"block_{i}"] = {
            "lora_down": dense(f"{b}.adaLN_modulation.1"),
            "lora_up": dense(f"{b}.adaLN_modulation.2"),
            "qkv": {
                "kernel": qkv["kernel"].reshape(d, 3, heads, d // heads),
                "bias": qkv["bias"].reshape(3, heads, d // heads),
            },
            "proj": {"kernel": proj["kernel"].reshape(heads, d // heads, d), "bias": proj["bias"]},
            "mlp": {
                "w_gate": dense(f"{b}.mlp.fc1_g"),
                "w_value": dense(f"{b}.mlp.fc1_x"),
                "w_out": dense(f"{b}.mlp.fc2"),
            },
        }
    return jax.tree.map(jnp.asarray, params)


@pytest.fixture(scope="module")
def params(ref):
    return official_to_flowjax(ref, TINY["depth"], TINY["num_heads"])


def _mixed(ref):
    return (
        jnp.asarray(ref["mixed_tokens"]),
        jnp.asarray(ref["mixed_t"]),
        jnp.asarray(ref["mixed_y"]),
        dict(mask=jnp.asarray(ref["mixed_mask"]), positions=jnp.asarray(ref["mixed_positions"])),
    )


# ---------------------------------------------------------------------------------------------
# Parity with the official network
# ---------------------------------------------------------------------------------------------


def test_parameter_tree_is_the_official_one(ref, params):
    """Every official weight is used once, and the tree is exactly this module's."""
    x, t, y, kw = _mixed(ref)
    shapes = nn.meta.unbox(jax.eval_shape(_net().init, KEY, x, t, y, **kw))["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, shapes)
    official = sum(v.size for k, v in ref.items() if k.startswith("w/"))
    assert num_params(params) == official


def test_matches_the_official_network_on_a_padded_mixed_batch(ref, params):
    x, t, y, kw = _mixed(ref)
    out = np.asarray(_apply()(params, x, t, y, **kw))
    mask = ref["mixed_mask"]
    # float32 against the float64 reference on the same (float32) weights.
    np.testing.assert_allclose(out[mask], ref["mixed_out"][mask], rtol=1e-5, atol=1e-5)
    assert np.all(out[~mask] == 0.0)
    assert np.abs(ref["mixed_out"][mask]).max() > 0.1  # a real signal, not zeros


@pytest.mark.parametrize("rule", ["visionntk", "visionyarn"])
def test_matches_the_official_decoupled_extrapolation(ref, params, rule):
    """The released ``--interpolation dynntk --decouple`` / ``yarn --decouple`` at a 6x5 grid
    sampled by a network trained at 4 tokens per side."""
    x, t, y = (jnp.asarray(ref[f"grid_{k}"]) for k in "xty")
    out = np.asarray(_apply(rope=rule)(params, x, t, y))
    np.testing.assert_allclose(out, ref[f"{rule}_out"], rtol=1e-5, atol=1e-5)
    plain = np.asarray(_apply()(params, x, t, y))
    # Plain RoPE misses the reference by over 10x the tolerance: the rule is what matches.
    assert np.abs(plain - ref[f"{rule}_out"]).max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Masks and mixed sizes
# ---------------------------------------------------------------------------------------------


def test_appended_padding_of_any_value_leaves_valid_outputs_unchanged(ref, params):
    x, t, y, kw = _mixed(ref)
    base = _apply()(params, x, t, y, **kw)
    extra = 7
    junk = 1e3 * np.random.default_rng(1).normal(size=(x.shape[0], extra, x.shape[2]))
    x2 = jnp.concatenate([x, jnp.asarray(junk, x.dtype)], axis=1)
    mask2 = jnp.concatenate([kw["mask"], jnp.zeros((x.shape[0], extra), bool)], axis=1)
    pos2 = jnp.concatenate(
        [kw["positions"], jnp.full((x.shape[0], extra, 2), 3, jnp.int32)], axis=1
    )
    padded = _apply()(params, x2, t, y, mask=mask2, positions=pos2)
    assert_equal_up_to_rounding(padded[:, : x.shape[1]], base)
    assert np.all(np.asarray(padded[:, x.shape[1] :]) == 0.0)


def test_each_image_of_a_mixed_batch_gets_its_output_alone(params):
    rng = np.random.default_rng(2)
    images = [rng.normal(size=(h, w, C)).astype(np.float32) for h, w in [(8, 8), (4, 10), (6, 4)]]
    batch = pack_images(images, P)
    t = jnp.asarray([0.1, 0.5, 0.8])
    y = jnp.asarray([0, 5, 2])
    out = _apply()(
        params,
        jnp.asarray(batch.tokens),
        t,
        y,
        mask=jnp.asarray(batch.mask),
        positions=jnp.asarray(batch.positions),
    )
    for i, image in enumerate(images):
        alone = _apply()(params, jnp.asarray(image[None]), t[i : i + 1], y[i : i + 1])
        # The image path (full grid) and the token path (one row of a padded batch) agree.
        n = (image.shape[0] // P) * (image.shape[1] // P)
        alone_tokens = pack_images([np.asarray(alone[0])], P).tokens[0]
        assert_equal_up_to_rounding(np.asarray(out[i, :n]), alone_tokens)


def test_zero_init_gives_exactly_zero_output_and_identity_blocks(ref):
    x, t, y, kw = _mixed(ref)
    model = _net()
    params = nn.meta.unbox(jax.jit(functools.partial(model.init, **kw))(KEY, x, t, y))["params"]
    out = _apply()(params, x, t, y, **kw)
    assert float(jnp.max(jnp.abs(out))) == 0.0
    images = jnp.ones((2, 6, 4, C))
    assert float(jnp.max(jnp.abs(_apply()(params, images, t[:2], y[:2])))) == 0.0
    # Every block is the identity: the tokens after each block are the embedded tokens.
    _, feats = jax.jit(functools.partial(make_apply_fn(model), capture=("feature_0", "feature_1")))(
        params, x, t, y, **kw
    )
    embed = params["x_embed"]
    np.testing.assert_array_equal(feats["feature_0"], feats["feature_1"])
    assert_equal_up_to_rounding(feats["feature_0"], x @ embed["kernel"] + embed["bias"])


# ---------------------------------------------------------------------------------------------
# AdaLN-LoRA: one global projection shared by every block
# ---------------------------------------------------------------------------------------------


def test_global_modulation_gradient_is_the_sum_over_blocks(ref, params):
    """``m_b = LoRA_b(c) + g`` for every block ``b``: the gradient of the loss with respect to
    the shared projection's bias is the sum of the blocks' LoRA output-bias gradients."""
    x, t, y, kw = _mixed(ref)
    apply = make_apply_fn(_net())

    @jax.jit
    def grads(p):
        return jax.grad(lambda q: jnp.sum(apply(q, x, t, y, **kw) ** 2))(p)

    g = grads(params)
    per_block = sum(g[f"block_{i}"]["lora_up"]["bias"] for i in range(TINY["depth"]))
    assert_equal_up_to_rounding(g["global_modulation"]["bias"], per_block)
    assert float(jnp.abs(per_block).max()) > 1e-3


# ---------------------------------------------------------------------------------------------
# Sizes, scan, FLOPs
# ---------------------------------------------------------------------------------------------


def _closed_form_params(depth, hidden_size, num_heads, lora_rank, patch_size, classes=1000):
    """FiTv2's parameter count from its definition (kernels + biases), image channels 4."""
    d, r, f = hidden_size, lora_rank, patch_size**2 * 4
    m = int(8 * d / 3)
    block = (d * r + r) + (r * 6 * d + 6 * d) + (3 * d * d + 3 * d) + (d * d + d)
    block += 2 * (d * m + m) + (m * d + d)
    rest = (f * d + d) + (256 * d + d + d * d + d) + (classes + 1) * d
    rest += (6 * d * d + 6 * d) + (2 * d * d + 2 * d) + (d * f + f)
    return depth * block + rest


@pytest.mark.parametrize("variant", ["S/2", "XL/2", "3B/2"])
def test_parameter_counts_at_the_published_sizes(variant):
    fields = fitv2_variant(variant)
    model = FiTv2(**fields, num_classes=1000)
    x, t, y = jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
    variables = nn.meta.unbox(jax.eval_shape(model.init, KEY, x, t, y))
    assert set(variables) == {"params"}
    count = num_params(variables["params"])
    assert count == _closed_form_params(**fields)
    if variant == "XL/2":
        assert abs(count - 671e6) / 671e6 < 0.001  # the paper's 671M
    if variant == "3B/2":
        assert abs(count - 3e9) / 3e9 < 0.01
    assert FITV2_PRESETS["XL"]["lora_rank"] == 288 and fields["patch_size"] == 2


def test_scanned_blocks_equal_the_unrolled_loop(ref, params):
    x, t, y, kw = _mixed(ref)
    stacked = {k: v for k, v in params.items() if not k.startswith("block_")}
    layers = [params[f"block_{i}"] for i in range(TINY["depth"])]
    stacked["blocks"] = {"block": jax.tree.map(lambda *a: jnp.stack(a), *layers)}
    scanned = _apply(scan_blocks=True)(stacked, x, t, y, **kw)
    assert_equal_up_to_rounding(scanned, _apply()(params, x, t, y, **kw))
    shapes = nn.meta.unbox(
        jax.eval_shape(functools.partial(_net(scan_blocks=True).init, **kw), KEY, x, t, y)
    )
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, shapes["params"])


def _xla_flops(fn, *args, **kw):
    cost = jax.jit(functools.partial(fn, **kw)).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_flops_count_the_valid_tokens_of_each_image():
    """The closed form against XLA's count for image batches of two sizes (at this width the
    attention's ``T^2`` term is 10-14% of the total, the element-wise work XLA also counts
    about 5%); a padded mixed batch costs XLA its padded length, while the closed form counts
    each image's own tokens."""
    model = FiTv2(patch_size=2, hidden_size=64, depth=1, num_heads=2, lora_rank=16)
    apply = make_apply_fn(model)
    t = jnp.zeros((1,))
    shapes = [(16, 16, C), (8, 24, C)]
    for shape in shapes:
        x = jnp.zeros((1, *shape))
        params = nn.meta.unbox(jax.eval_shape(model.init, KEY, x, t))["params"]
        ratio = _xla_flops(apply, params, x, t) / model.forward_flops(shape)
        assert 1.0 <= ratio < 1.08, (shape, ratio)
    # Two images packed to the longer one's 64 tokens: XLA's count is that of two 64-token
    # images; the closed form (the useful work) is the sum of the images' own counts.
    batch = pack_images([np.zeros(s, np.float32) for s in shapes], P)
    kw = dict(mask=jnp.asarray(batch.mask), positions=jnp.asarray(batch.positions))
    x2, t2 = jnp.asarray(batch.tokens), jnp.zeros((2,))
    padded = _xla_flops(apply, params, x2, t2, **kw)
    useful = sum(model.forward_flops(s) for s in shapes)
    assert 1.0 <= padded / (2 * model.forward_flops(shapes[0])) < 1.08
    assert padded > useful and model.num_tokens(shapes[1]) == 48


# ---------------------------------------------------------------------------------------------
# Configs and bad input
# ---------------------------------------------------------------------------------------------


def test_variant_through_make_model():
    model = make_model(
        {"name": "fitv2", "variant": "B/4", "rope": "visionyarn", "conditional": True},
        num_classes=10,
    )
    assert isinstance(model, FiTv2) and model.patch_size == 4 and model.depth == 12
    assert model.lora_rank == 192 and model.rotary().name == "visionyarn"
    with pytest.raises(ValueError, match="unknown FiTv2 variant"):
        fitv2_variant("XXL/2")


def test_bad_input_is_refused_before_work(ref, params):
    x, t, y, kw = _mixed(ref)
    apply = make_apply_fn(_net())
    with pytest.raises(ValueError, match="not a multiple of the patch 2"):
        _net().check_input((1, 6, 5, C))
    with pytest.raises(ValueError, match="more than max_tokens=12"):
        _net(max_tokens=12).check_input((1, 8, 8, C))
    with pytest.raises(ValueError, match="more than max_tokens=12"):
        make_apply_fn(_net(max_tokens=12))(params, x, t, y, **kw)
    with pytest.raises(ValueError, match="mask must be bool"):
        apply(params, x, t, y, mask=kw["mask"][:, :-1], positions=kw["positions"])
    with pytest.raises(ValueError, match="unknown position encoding"):
        _net(rope="bogus").check_input((1, 8, 8, C))
    with pytest.raises(ValueError, match="unknown position encoding"):
        make_apply_fn(_net(rope="bogus"))(params, x, t, y, **kw)
    with pytest.raises(ValueError, match="need mask="):
        apply(params, x, t, y)


# ---------------------------------------------------------------------------------------------
# 8 simulated devices
# ---------------------------------------------------------------------------------------------

SHARDED = r"""
import json, sys
import flax.linen as nn, jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from flowjax import parallel
from flowjax.data.tokens import pack_images
from flowjax.models import make_apply_fn
from flowjax.models.fitv2 import FiTv2
from flowjax.parallel.rules import state_shardings

model = FiTv2(patch_size=2, hidden_size=24, depth=2, num_heads=2, lora_rank=6, train_grid=4,
              num_classes=5)
rng = np.random.default_rng(0)
sizes = [(8, 8), (4, 10), (6, 4), (2, 2)]
batch = pack_images([rng.normal(size=(h, w, 4)).astype(np.float32) for h, w in sizes], 2)
x, mask, pos = (jnp.asarray(a) for a in (batch.tokens, batch.mask, batch.positions))
t, y = jnp.asarray([0.1, 0.4, 0.6, 0.9]), jnp.asarray([0, 1, 5, 3])
boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, t, y, mask=mask,
                                          positions=pos))["params"]
params = jax.tree.map(
    lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype), nn.meta.unbox(boxed))
apply = make_apply_fn(model)

def loss(p, x):
    out = apply(p, x, t, y, mask=mask, positions=pos)
    return jnp.sum(out ** 2), out

step = jax.jit(jax.value_and_grad(loss, has_aux=True))
(l1, o1), g1 = step(params, x)

mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
rules = parallel.DEFAULT_RULES
shard = state_shardings(boxed, mesh, rules)
p8 = jax.device_put(params, shard)
x8 = jax.device_put(x, parallel.batch_sharding(mesh, rules))

def sharded(p, x):
    with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return jax.value_and_grad(loss, has_aux=True)(p, x)

(l8, o8), g8 = jax.jit(sharded)(p8, x8)
kernel = p8["block_0"]["mlp"]["w_gate"]["kernel"]
json.dump(dict(
    devices=jax.device_count(),
    loss=[float(l1), float(l8)],
    out_diff=float(jnp.max(jnp.abs(o8 - o1))), out_scale=float(jnp.max(jnp.abs(o1))),
    grad_diff=max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g8),
                                                                 jax.tree.leaves(g1))),
    grad_scale=max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g1)),
    spec=[str(a) for a in kernel.sharding.spec], shards=len(kernel.addressable_shards),
    pad_zero=bool(jnp.all(jnp.where(mask[..., None], 0.0, o8) == 0.0)),
), open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_eight_devices_equal_one_on_a_mixed_batch(tmp_path):
    out = tmp_path / "out.json"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONPATH=REPO,
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["devices"] == 8
    assert r["spec"] == ["fsdp", "tensor"] and r["shards"] == 8  # the weights really are split
    eps = float(np.finfo(np.float32).eps)
    assert abs(r["loss"][0] - r["loss"][1]) <= 64 * eps * r["loss"][0]
    assert r["out_diff"] <= 64 * eps * r["out_scale"]
    assert r["grad_diff"] <= 64 * eps * r["grad_scale"]
    assert r["pad_zero"]
