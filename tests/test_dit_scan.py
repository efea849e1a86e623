"""Scanned DiT blocks (nn.scan, stacked "layers" axis) compute the unrolled DiT's function.

Scanned and unrolled float32 programs may sum in another order, so they are compared up to
float32 rounding of each array's magnitude (tests/tolerance.py), never elementwise at 1e-5.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from flowjax.models.dit import DiT
from flowjax.models.registry import make_apply_fn
from flowjax.objectives.meanflow import MeanFlow
from tests.tolerance import assert_equal_up_to_rounding

DEPTH = 3
KW = dict(patch_size=2, hidden_size=32, depth=DEPTH, num_heads=2, num_classes=10)


def stack_blocks(unrolled: dict) -> dict:
    """Unrolled parameters ``block_{i}/...`` -> scanned ``blocks/block/...`` ``[depth, ...]``."""
    out = {k: v for k, v in unrolled.items() if not k.startswith("block_")}
    per_layer = [unrolled[f"block_{i}"] for i in range(DEPTH)]
    out["blocks"] = {"block": jax.tree.map(lambda *a: jnp.stack(a), *per_layer)}
    return out


def _randomise(params, key):
    """Non-zero everywhere (adaLN-Zero starts with identity blocks and a zero output)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten(
        [0.2 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    )


@pytest.fixture(scope="module")
def batch():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k[0], (4, 8, 8, 3))
    t = jax.random.uniform(k[1], (4,))
    y = jax.random.randint(k[2], (4,), 0, 10)
    return x, t, y


def _models(**kw):
    return DiT(**KW, **kw), DiT(**KW, scan_blocks=True, **kw)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(remat=True, remat_policy="dots_with_no_batch_dims_saveable")],
    ids=["plain", "remat-dots"],
)
def test_scanned_equals_unrolled_loss_and_grads(batch, kw):
    x, t, y = batch
    unrolled, scanned = _models(**kw)
    p_u = nn.meta.unbox(unrolled.init(jax.random.PRNGKey(1), x, t, y)["params"])
    p_u = _randomise(p_u, jax.random.PRNGKey(2))
    p_s = stack_blocks(p_u)
    shapes = jax.tree.map(jnp.shape, nn.meta.unbox(scanned.init(jax.random.PRNGKey(1), x, t, y)))
    assert jax.tree.map(jnp.shape, p_s) == shapes["params"]
    target = jax.random.normal(jax.random.PRNGKey(3), x.shape)

    def loss(model, params):
        return jnp.mean((model.apply({"params": params}, x, t, y) - target) ** 2)

    l_u, g_u = jax.value_and_grad(lambda p: loss(unrolled, p))(p_u)
    l_s, g_s = jax.value_and_grad(lambda p: loss(scanned, p))(p_s)
    assert_equal_up_to_rounding(l_s, l_u)
    assert_equal_up_to_rounding(g_s, stack_blocks(g_u))


@pytest.mark.slow
def test_scanned_features_layer_axis_and_meanflow_jvp(batch):
    x, t, y = batch
    unrolled, scanned = _models(use_end_time=True)
    p_u = _randomise(
        nn.meta.unbox(unrolled.init(jax.random.PRNGKey(1), x, t, y, t_end=t)["params"]),
        jax.random.PRNGKey(4),
    )
    p_s = stack_blocks(p_u)
    # the dispersive loss's captured features, by the same names
    names = ("feature_0", "feature_2")
    out_u, f_u = make_apply_fn(unrolled)(p_u, x, t, y, t_end=t, capture=names)
    out_s, f_s = make_apply_fn(scanned)(p_s, x, t, y, t_end=t, capture=names)
    assert_equal_up_to_rounding(out_s, out_u)
    assert_equal_up_to_rounding(f_s, f_u)
    # the stacked weights carry the "layers" logical axis
    specs = nn.get_partition_spec(scanned.init(jax.random.PRNGKey(1), x, t, y, t_end=t))
    assert tuple(specs["params"]["blocks"]["block"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
    # MeanFlow's loss and gradient (jax.jvp through the attention rule) agree
    batch_ = {"x1": x, "label": y}
    mf = MeanFlow(num_classes=10, equal_fraction=0.5)
    key = jax.random.PRNGKey(5)
    g_u = jax.grad(lambda p: mf.loss_fn(p, make_apply_fn(unrolled), batch_, key)[0])(p_u)
    g_s = jax.grad(lambda p: mf.loss_fn(p, make_apply_fn(scanned), batch_, key)[0])(p_s)
    assert_equal_up_to_rounding(g_s, stack_blocks(g_u))


def test_meanflow_gradient_same_with_and_without_attention_rule(batch):
    x, t, y = batch
    plain = DiT(**KW, use_end_time=True, attention_jvp_rule=False)
    rule = DiT(**KW, use_end_time=True, attention_jvp_rule=True)
    params = _randomise(
        nn.meta.unbox(plain.init(jax.random.PRNGKey(1), x, t, y, t_end=t)["params"]),
        jax.random.PRNGKey(6),
    )
    mf = MeanFlow(num_classes=10, equal_fraction=0.25)
    batch_ = {"x1": x, "label": y}
    key = jax.random.PRNGKey(7)
    (l_p, _), g_p = jax.value_and_grad(
        lambda p: mf.loss_fn(p, make_apply_fn(plain), batch_, key), has_aux=True
    )(params)
    (l_r, _), g_r = jax.value_and_grad(
        lambda p: mf.loss_fn(p, make_apply_fn(rule), batch_, key), has_aux=True
    )(params)
    assert_equal_up_to_rounding(l_r, l_p)
    assert_equal_up_to_rounding(g_r, g_p)


def test_bad_options_are_refused(batch):
    x, t, y = batch
    with pytest.raises(ValueError, match="unknown remat_policy"):
        DiT(**KW, remat=True, remat_policy="dots").init(jax.random.PRNGKey(0), x, t, y)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        DiT(**KW, attention="flash").init(jax.random.PRNGKey(0), x, t, y)
