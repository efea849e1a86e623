"""The diffrax adaptive reference: accuracy on the closed-form Gaussian flow map (§11), an
honest NFE count, conditioning, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax.solvers import AdaptiveSolve
from tests import gaussian_fixture as gf

MU, Q = 1.0, 0.5


def gaussian_field(x, t, cond):
    return gf.velocity(x, t[:, None], MU, Q)


@pytest.mark.parametrize("method", ["tsit5", "dopri5"])
def test_reaches_the_closed_form_flow_map_and_counts_nfe(method):
    calls = []

    def counted(x, t, cond):
        jax.debug.callback(lambda: calls.append(1), ordered=True)
        return gaussian_field(x, t, cond)

    with jax.enable_x64(True):
        x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 3), jnp.float64)
        exact = gf.flow_map(x0, 0.0, 1.0, MU, Q)
        errors, nfes = [], []
        for tol in (1e-4, 1e-8):
            calls.clear()
            x1, stats = AdaptiveSolve(method, rtol=tol, atol=tol)(counted, x0)
            jax.block_until_ready(x1)
            errors.append(float(jnp.max(jnp.abs(x1 - exact))))
            nfes.append(int(stats["nfe"]))
            assert int(stats["nfe"]) == len(calls)  # the formula counts every evaluation
            assert int(stats["num_steps"]) == int(stats["num_accepted_steps"]) + int(
                stats["num_rejected_steps"]
            )
    assert errors[1] < 1e-6 and errors[1] < 1e-2 * errors[0]
    assert nfes[1] > nfes[0]


def test_partial_interval_and_conditioning():
    x0 = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
    shift = jnp.arange(8.0)
    x, _ = AdaptiveSolve(rtol=1e-7, atol=1e-7)(
        lambda x, t, c: jnp.broadcast_to(c[:, None], x.shape), x0, shift, t0=0.25, t1=0.75
    )
    np.testing.assert_allclose(x, x0 + 0.5 * shift[:, None], rtol=1e-5, atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown adaptive method"):
        AdaptiveSolve("rk45")
    with pytest.raises(ValueError, match="rtol and atol"):
        AdaptiveSolve(rtol=0.0)
    with pytest.raises(ValueError, match="0 <= t0 < t1 <= 1"):
        AdaptiveSolve()(gaussian_field, jnp.zeros((2, 2)), t0=0.5, t1=0.2)
