"""Optimizer options: Adam's first moment in bf16 (``optim.mu_dtype``)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flowjax.training.optim import make_optimizer


def _cfg(**kw):
    return ml_collections.ConfigDict(dict(name="adamw", lr=1e-2, weight_decay=0.0, **kw))


def _moments(state):
    (adam,) = [
        s for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")
    ]
    return adam.mu, adam.nu


def test_mu_dtype_stores_the_first_moment_in_bf16_and_updates_like_float32():
    params = {"w": jnp.linspace(-1.0, 1.0, 64, dtype=jnp.float32).reshape(8, 8)}
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p), params)
    out = {}
    for mu_dtype in (None, "bfloat16"):
        tx = make_optimizer(_cfg(mu_dtype=mu_dtype), total_steps=10)
        state = tx.init(params)
        p = params
        for _ in range(3):
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        mu, nu = _moments(state)
        out[mu_dtype] = (p, mu["w"].dtype, nu["w"].dtype)
    assert out[None][1] == jnp.float32 and out["bfloat16"][1] == jnp.bfloat16
    assert out["bfloat16"][2] == jnp.float32  # the second moment keeps float32
    np.testing.assert_allclose(out["bfloat16"][0]["w"], out[None][0]["w"], atol=1e-4)


def test_unknown_mu_dtype_is_refused():
    with pytest.raises(ValueError, match="mu_dtype"):
        make_optimizer(_cfg(mu_dtype="float8"), total_steps=10)
