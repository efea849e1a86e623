"""The fused-attention JVP rule against jax.jvp of plain attention (values, tangents, grads)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.models.attention import attention, attention_tangent, reference_attention

SHAPE = (2, 10, 3, 8)  # [B, T, heads, head_dim]


def _inputs(seed, dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    qkv = [2.0 * jax.random.normal(k, SHAPE, jnp.float32).astype(dtype) for k in keys[:3]]
    tan = [jax.random.normal(k, SHAPE, jnp.float32).astype(dtype) for k in keys[3:]]
    return qkv, tan


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _ref_jvp(qkv, tan):
    """jax.jvp of plain attention, in float64 on the host (the independent reference)."""
    with jax.enable_x64():
        up = [jnp.asarray(np.asarray(a, np.float64)) for a in qkv + tan]

        def plain(q, k, v):
            s = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
            return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), v)

        o, do = jax.jvp(plain, tuple(up[:3]), tuple(up[3:]))
        return np.asarray(o), np.asarray(do)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_rule_matches_jvp_of_plain_attention(dtype, tol):
    qkv, tan = _inputs(0, dtype)
    o_ref, do_ref = _ref_jvp(qkv, tan)
    f = lambda q, k, v: attention(q, k, v, implementation="xla", jvp_rule=True)  # noqa: E731
    o, do = jax.jit(lambda p, t: jax.jvp(f, p, t))(tuple(qkv), tuple(tan))
    assert o.dtype == dtype and do.dtype == dtype
    assert _rel(o, o_ref) < tol
    assert _rel(do, do_ref) < tol
    # each tangent direction alone (a wrong term in dQ, dK or dV shows up here)
    for i in range(3):
        only = [t if j == i else jnp.zeros_like(t) for j, t in enumerate(tan)]
        _, do_i = jax.jvp(f, tuple(qkv), tuple(only))
        _, ref_i = _ref_jvp(qkv, only)
        assert _rel(do_i, ref_i) < tol, i


def test_grad_of_primal_and_of_a_jvp_loss_match_plain_attention():
    qkv, tan = _inputs(1)
    w = jax.random.normal(jax.random.PRNGKey(9), SHAPE)

    def loss(att, q, k, v):
        o, do = jax.jvp(att, (q, k, v), tuple(tan))
        # MeanFlow-like: primal regressed on a stop-gradient target built from the tangent
        return (
            jnp.sum(w * o)
            + jnp.sum((o - jax.lax.stop_gradient(o + 0.1 * do)) ** 2)
            + jnp.sum(jnp.sin(do))
        )

    rule = lambda q, k, v: attention(q, k, v, implementation="xla", jvp_rule=True)  # noqa: E731
    g_rule = jax.grad(loss, argnums=(1, 2, 3))(rule, *qkv)
    g_ref = jax.grad(loss, argnums=(1, 2, 3))(reference_attention, *qkv)
    for a, b in zip(g_rule, g_ref):
        assert _rel(a, b) < 1e-5
    primal = lambda att: jax.grad(lambda q: jnp.sum(w * att(q, *qkv[1:])))(qkv[0])  # noqa: E731
    assert _rel(primal(rule), primal(reference_attention)) < 1e-5


def test_tangent_formula_is_linear_and_bad_input_is_refused():
    qkv, tan = _inputs(2)
    o = reference_attention(*qkv)
    t1 = attention_tangent(*qkv, o, *tan)
    t2 = attention_tangent(*qkv, o, *[2.0 * t for t in tan])
    np.testing.assert_allclose(2.0 * t1, t2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attention(*qkv, implementation="flash")
    with pytest.raises(ValueError, match="one shape"):
        attention(qkv[0], qkv[1][:, :4], qkv[2])
    with pytest.raises(ValueError, match="key_mask must be bool"):
        attention(*qkv, key_mask=jnp.ones(SHAPE[:2]))
    with pytest.raises(ValueError, match="key_mask must be bool"):
        attention(*qkv, key_mask=jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="must divide"):
        attention(qkv[0], qkv[1][:, :, :2], qkv[2][:, :, :2])


def _masked_gqa_inputs(seed, kv_heads=1):
    """q with 3 heads, k/v with ``kv_heads``, and a key mask keeping 7 and 4 of 10 keys."""
    qkv, tan = _inputs(seed)
    kv = [a[:, :, :kv_heads] for a in qkv[1:]]
    dkv = [a[:, :, :kv_heads] for a in tan[1:]]
    mask = jnp.arange(SHAPE[1])[None, :] < jnp.array([[7], [4]])
    return [qkv[0], *kv], [tan[0], *dkv], mask


def test_key_mask_hides_padded_keys_whatever_they_hold():
    """Padded keys' values do not reach any output: changing them (or dropping them) leaves
    every query's output and its tangent unchanged (mutant: ignore key_mask -> fails)."""
    (q, k, v), tan, mask = _masked_gqa_inputs(3, kv_heads=3)
    f = lambda q, k, v: attention(q, k, v, key_mask=mask, jvp_rule=True)  # noqa: E731
    o, do = jax.jvp(f, (q, k, v), tuple(tan))
    junk = jnp.where(mask[:, :, None, None], 0.0, 50.0)
    o2, do2 = jax.jvp(f, (q, k + junk, v - junk), (tan[0], tan[1] + junk, tan[2] - junk))
    np.testing.assert_allclose(o, o2, atol=1e-6)
    np.testing.assert_allclose(do, do2, atol=1e-5)
    # example 1 alone, cut to its 4 valid keys: the same output for every query
    alone = attention(q[1:], k[1:, :4], v[1:, :4])
    np.testing.assert_allclose(o[1:], alone, atol=1e-6)


@pytest.mark.parametrize("kv_heads", [1, 3])
def test_masked_grouped_rule_matches_jvp_of_the_reference(kv_heads):
    """With a key mask, a logit scale and grouped key/value heads, the fused primal equals the
    float32 reference and the rule's tangent equals jax.jvp of the reference; grouped heads are
    repeated heads (query head h reads kv head h // (H/G))."""
    qkv, tan, mask = _masked_gqa_inputs(4, kv_heads)
    kw = dict(key_mask=mask, scale=0.3)
    ref = functools.partial(reference_attention, **kw)
    rule = lambda q, k, v: attention(q, k, v, jvp_rule=True, **kw)  # noqa: E731
    o_ref, do_ref = jax.jvp(ref, tuple(qkv), tuple(tan))
    o, do = jax.jvp(rule, tuple(qkv), tuple(tan))
    assert _rel(o, o_ref) < 1e-5 and _rel(do, do_ref) < 1e-5
    assert _rel(attention(*qkv, **kw), o_ref) < 1e-5
    full = [qkv[0]] + [jnp.repeat(a, 3 // kv_heads, axis=2) for a in qkv[1:]]
    assert _rel(reference_attention(*full, **kw), o_ref) < 1e-6
    g = jax.grad(lambda q: jnp.sum(jnp.sin(rule(q, *qkv[1:]))))(qkv[0])
    g_ref = jax.grad(lambda q: jnp.sum(jnp.sin(ref(q, *qkv[1:]))))(qkv[0])
    assert _rel(g, g_ref) < 1e-5
