"""DiT (docs/maths/dit.md): zero init, identity blocks, parameter counts, CFG batching,
patchify, position embedding, FLOPs against XLA, mixed precision, remat, grad accumulation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flowjax.models import (
    DiT,
    dit_forward_flops,
    dit_variant,
    make_apply_fn,
    make_model,
    num_params,
    patchify,
    unpatchify,
)
from flowjax.models.dit import DiTBlock
from flowjax.models.positions import SinCos2D
from flowjax.objectives import FlowMatching
from flowjax.objectives.guidance import cfg_velocity
from flowjax.training import TrainState, make_train_step
from tests.tolerance import assert_equal_up_to_rounding

KEY = jax.random.PRNGKey(0)
TINY = dict(patch_size=2, hidden_size=32, depth=1, num_heads=2)


def _inputs(batch=3, shape=(8, 8, 1), classes=10):
    x = jnp.asarray(np.random.RandomState(1).normal(size=(batch, *shape)), jnp.float32)
    t = jnp.asarray(np.linspace(0.1, 0.9, batch), jnp.float32)
    y = jnp.asarray(np.arange(batch) % (classes + 1), jnp.int32)
    return x, t, y


def _params(model, x, t, y, **kw):
    return nn.meta.unbox(jax.jit(model.init)(KEY, x, t, y, **kw))["params"]


def _apply(model):
    return jax.jit(make_apply_fn(model))


def _random_params(model, x, t, y, scale=0.1):
    """Parameters of ``model``'s shapes drawn with numpy (non-zero output; nothing to compile)."""
    shapes = nn.meta.unbox(jax.eval_shape(model.init, KEY, x, t, y))["params"]
    rng = np.random.RandomState(0)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


@pytest.mark.parametrize("use_end_time", [False, True])
def test_output_is_zero_and_blocks_are_identity_at_init(use_end_time):
    model = DiT(**TINY, num_classes=10, use_end_time=use_end_time)
    x, t, y = _inputs()
    kw = dict(t_end=jnp.minimum(t + 0.3, 1.0)) if use_end_time else {}
    params = _params(model, x, t, y, **kw)
    out = _apply(model)(params, x, t, y, **kw)
    assert out.shape == x.shape and float(jnp.max(jnp.abs(out))) == 0.0
    rng = np.random.RandomState(2)
    tokens = jnp.asarray(rng.normal(size=(3, 16, 32)), jnp.float32)
    cond = jnp.asarray(rng.normal(size=(3, 32)), jnp.float32)
    block = jax.jit(DiTBlock(32, 2).apply)
    for i in range(TINY["depth"]):
        same = block({"params": params[f"block_{i}"]}, tokens, cond)
        np.testing.assert_array_equal(np.asarray(same), np.asarray(tokens))


def _count(variant, **kw):
    """Trainable parameters: the ``params`` collection, which must be the only one (the fixed
    sin-cos position table is a constant of the forward pass, not a variable)."""
    model = DiT(**dit_variant(variant), num_classes=1000, **kw)
    x, t, y = jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
    variables = nn.meta.unbox(jax.eval_shape(model.init, KEY, x, t, y))
    assert set(variables) == {"params"}, set(variables)
    return num_params(variables["params"])


def test_parameter_counts_are_exact():
    """The official DiT's trainable counts at p = 2 on 32x32x4 latents, 1000 classes:
    S/2 velocity model (no learned sigma) 32 858 896, XL/2 with learned sigma 674 834 720.
    A missing or extra bias, adaLN or position table changes them."""
    assert _count("S/2") == 32_858_896
    assert _count("XL/2", learn_sigma=True) == 674_834_720


@pytest.mark.parametrize("size, paper", [("S", 33e6), ("B", 130e6), ("L", 458e6), ("XL", 675e6)])
def test_parameter_counts_match_the_paper(size, paper):
    """DiT paper sizes at p = 2 on 32x32x4 latents, 1000 classes, with the learned-variance
    head the paper had (learn_sigma); eval_shape, so nothing is allocated."""
    with_sigma = _count(f"{size}/2", learn_sigma=True)
    assert abs(with_sigma - paper) / paper < 0.01, with_sigma
    # A velocity model drops the variance half of the output layer: (D + 1) p^2 C weights.
    d = dit_variant(f"{size}/2")["hidden_size"]
    assert with_sigma - _count(f"{size}/2") == (d + 1) * 4 * 4
    # The patch size changes only the patch embedding and the output layer.
    assert _count(f"{size}/4") - _count(f"{size}/2") == (d + 1) * (16 - 4) * 4 + d * (16 - 4) * 4


def test_batched_cfg_equals_separate_conditional_and_unconditional_calls():
    model = DiT(**TINY, num_classes=10)
    x, t, y = _inputs(batch=4)
    params = _random_params(model, x, t, y)
    apply = _apply(model)

    def v(x_, t_, c_):
        return apply(params, x_, t_, c_)

    guided = cfg_velocity(v, 2.5, null_label=10)(x, t, y)
    cond, uncond = v(x, t, y), v(x, t, jnp.full_like(y, 10))
    np.testing.assert_allclose(guided, uncond + 2.5 * (cond - uncond), atol=1e-5)
    assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-3  # the label matters


def test_patchify_round_trip_and_equivalence_to_a_strided_convolution():
    x = jax.random.normal(KEY, (2, 8, 12, 3))
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    np.testing.assert_array_equal(np.asarray(unpatchify(tokens, 4, 8, 12)), np.asarray(x))
    # Token 4 is row 1, column 1 (row-major) and holds that 4x4 block in (row, col, chan) order.
    np.testing.assert_array_equal(
        np.asarray(tokens[:, 4]), np.asarray(x[:, 4:8, 4:8].reshape(2, -1))
    )
    # patchify + linear == DiT's stride-p convolution with the same (reshaped) kernel.
    w = jax.random.normal(jax.random.PRNGKey(3), (48, 5))
    conv = jax.lax.conv_general_dilated(
        x, w.reshape(4, 4, 3, 5), (4, 4), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(tokens @ w, conv.reshape(2, 6, 5), rtol=1e-5, atol=1e-5)


def _patchify_by_reshape(x, p):  # the reshape/transpose form patchify had before einops
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)


def _unpatchify_by_reshape(tokens, p, h, w):
    b, _, f = tokens.shape
    x = tokens.reshape(b, h // p, w // p, p, p, f // (p * p))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, f // (p * p))


@pytest.mark.parametrize("shape,p", [((2, 8, 12, 3), 4), ((1, 6, 4, 2), 2), ((3, 5, 7, 1), 1)])
def test_einops_patchify_equals_the_reshape_form(shape, p):
    x = jax.random.normal(KEY, shape)
    tokens = patchify(x, p)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(_patchify_by_reshape(x, p)))
    h, w = shape[1:3]
    np.testing.assert_array_equal(
        np.asarray(unpatchify(tokens, p, h, w)),
        np.asarray(_unpatchify_by_reshape(tokens, p, h, w)),
    )


def test_position_embedding_layout():
    d, gh, gw = 16, 3, 4
    pos = SinCos2D().table(d, gh, gw)
    assert pos.shape == (gh * gw, d)
    omega = 1.0 / 10000 ** (np.arange(4) / 4.0)
    row, col = 2, 3
    token = pos[row * gw + col]  # row-major tokens
    expected = np.concatenate(
        [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]
    )
    np.testing.assert_allclose(token, expected, rtol=1e-6)
    grid = pos.reshape(gh, gw, d)
    assert np.all(grid[:, :, : d // 2] == grid[:1, :, : d // 2])  # first half: the column
    assert np.all(grid[:, :, d // 2 :] == grid[:, :1, d // 2 :])  # second half: the row


def _xla_flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_analytic_flops_match_the_paper_and_xla_cost_analysis():
    xl2 = dit_forward_flops(image_shape=(32, 32, 4), **dit_variant("XL/2"), learn_sigma=True)
    assert abs(xl2 / 2 - 118.6e9) / 118.6e9 < 0.01  # the paper's GFLOPs are multiply-adds

    x, t, y = _inputs(batch=2, shape=(8, 8, 4))
    forward, grad, analytic = [], [], []
    for depth in (1, 2):
        model = DiT(patch_size=2, hidden_size=256, depth=depth, num_heads=4, num_classes=10)
        params = nn.meta.unbox(jax.eval_shape(model.init, KEY, x, t, y))["params"]
        apply = make_apply_fn(model)
        forward.append(_xla_flops(apply, params, x, t, y))
        grad.append(_xla_flops(jax.grad(lambda p, f=apply: jnp.sum(f(p, x, t, y) ** 2)), params))
        analytic.append(
            2 * dit_forward_flops(image_shape=(8, 8, 4), patch_size=2, hidden_size=256, depth=depth)
        )
    # Matrix multiplies dominate: XLA counts within 3% more (the element-wise work) ...
    for xla_count, ours in zip(forward, analytic):
        assert 1.0 <= xla_count / ours < 1.03, (xla_count, ours)
    # ... per block too, and a backward pass costs 2 forwards (training = 3 x forward).
    per_block = (forward[1] - forward[0]) / (analytic[1] - analytic[0])
    assert 1.0 <= per_block < 1.03
    assert abs((grad[1] - grad[0]) / (forward[1] - forward[0]) - 3.0) < 0.05


def test_mixed_precision_keeps_float32_master_weights():
    x, t, y = _inputs()
    f32 = DiT(**TINY, num_classes=10)
    bf16 = DiT(**TINY, num_classes=10, dtype="bfloat16", param_dtype="float32")
    params = _random_params(f32, x, t, y)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(_random_params(bf16, x, t, y)))

    a, b = _apply(f32)(params, x, t, y), _apply(bf16)(params, x, t, y)
    assert b.dtype == jnp.float32
    rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
    assert 0 < rel < 0.02  # bf16 matmuls: close, not identical
    loss = lambda p: jnp.mean(make_apply_fn(bf16)(p, x, t, y) ** 2)  # noqa: E731
    grads = jax.jit(jax.grad(loss))(params)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_remat_changes_neither_parameters_nor_gradients():
    x, t, y = _inputs()
    plain, remat = DiT(**TINY, num_classes=10), DiT(**TINY, num_classes=10, remat=True)
    params = _random_params(plain, x, t, y)
    assert jax.tree.structure(params) == jax.tree.structure(_random_params(remat, x, t, y))

    def grads(model):
        loss = lambda p: jnp.mean(make_apply_fn(model)(p, x, t, y) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    assert_equal_up_to_rounding(grads(remat), grads(plain))


class _Deterministic:
    """A mean-over-examples loss without randomness: ``mean ||v(x1, 0.5, y) - x1||^2``."""

    def loss_fn(self, params, apply_fn, batch, key):
        del key
        x1 = batch["x1"]
        v = apply_fn(params, x1, jnp.full((x1.shape[0],), 0.5), batch["label"])
        loss = jnp.mean((v - x1) ** 2)
        return loss, {"loss": loss}


def test_gradient_accumulation_equals_the_full_batch_gradient():
    model = DiT(**TINY, num_classes=10)
    x, t, y = _inputs(batch=8)
    params = _random_params(model, x, t, y)
    tx = optax.sgd(1.0)  # the update is minus the gradient
    batch = {"x1": x, "label": y}
    results = []
    for k in (1, 4):
        step = jax.jit(make_train_step(_Deterministic(), make_apply_fn(model), tx, 0.0, k))
        state = TrainState.create(params, tx, jax.random.PRNGKey(0))
        results.append(step(state, batch))
    (s1, m1), (s4, m4) = results
    # one batch or four micro-batches: the same sums in another order
    assert_equal_up_to_rounding((m4["loss"], m4["grad_norm"]), (m1["loss"], m1["grad_norm"]))
    assert_equal_up_to_rounding(s4.params, s1.params)


def test_flow_matching_trains_a_conditional_dit_unchanged():
    model = DiT(**TINY, num_classes=10)
    x, _, y = _inputs(batch=16)
    batch = {"x1": jnp.tanh(x), "label": y % 10}
    params = _random_params(model, batch["x1"], jnp.zeros((16,)), batch["label"], scale=0.02)
    objective, apply = FlowMatching(num_classes=10, label_dropout=0.1), make_apply_fn(model)
    tx = optax.adam(1e-2)
    step = jax.jit(make_train_step(objective, apply, tx, 0.9))
    keys = jax.random.split(jax.random.PRNGKey(5), 8)

    @jax.jit
    def held_out_loss(p):  # the same 8 draws of (t, x0, dropout) before and after
        return jnp.mean(jax.vmap(lambda k: objective.loss_fn(p, apply, batch, k)[0])(keys))

    state = TrainState.create(params, tx, jax.random.PRNGKey(0))
    before = float(held_out_loss(state.params))
    for _ in range(40):
        state, _ = step(state, batch)
    assert float(held_out_loss(state.params)) < 0.85 * before


def test_make_model_builds_dit_variants_and_rejects_bad_input():
    cfg = ml_collections.ConfigDict(dict(name="dit", variant="B/4", depth=3))
    model = make_model(cfg)
    assert (model.depth, model.hidden_size, model.num_heads, model.patch_size) == (3, 768, 12, 4)
    with pytest.raises(ValueError, match="unknown DiT variant"):
        make_model(ml_collections.ConfigDict(dict(name="dit", variant="XXL/2")))
    with pytest.raises(ValueError, match="model 'mlp' has no variants"):
        make_model(ml_collections.ConfigDict(dict(name="mlp", variant="S/2")))
    with pytest.raises(ValueError, match="not divisible by patch_size=4"):
        DiT(**dict(TINY, patch_size=4)).init(KEY, jnp.zeros((1, 6, 6, 1)), jnp.zeros((1,)))
