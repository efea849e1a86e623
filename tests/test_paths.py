"""Properties of the interpolant paths and of the exact conversions between prediction types.

All checks run in float64 with random inputs and t in (0.05, 0.95). Time convention: noise x0
at t=0, data x1 at t=1, ``x_t = alpha_t x1 + sigma_t x0``. The Gaussian closed form is the
shared fixture of docs/maths/flow_matching.md (``tests/gaussian_fixture.py``).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import paths
from tests import gaussian_fixture as gf

TYPES = paths.PREDICTION_TYPES
BATCH, FEATURES = 6, (3, 2)
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(autouse=True)
def _x64():
    # Scoped to each test, so float64 cannot leak into other test modules.
    with jax.enable_x64(True):
        yield


def _quadratic_alpha(t):
    return t**2


def _quadratic_sigma(t):
    return 1.0 - t**2


PATHS = {
    "linear": paths.LinearPath(),
    "cosine": paths.CosinePath(),
    "vp": paths.VPPath(),
    # alpha = t^2, sigma = 1 - t^2: valid endpoints, det = -2t != 0 on (0, 1].
    "quadratic": paths.AlphaSigmaPath(alpha_fn=_quadratic_alpha, sigma_fn=_quadratic_sigma),
}


def _inputs(seed: int, scalar_t: bool = False):
    """Random ``x``, a second random array ``p`` and times in (0.05, 0.95), float64."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((BATCH, *FEATURES)))
    p = jnp.asarray(rng.standard_normal((BATCH, *FEATURES)))
    t = jnp.asarray(rng.uniform(0.05, 0.95, size=() if scalar_t else (BATCH,)))
    return x, p, t


def _col(t, x):
    """Broadcast ``t`` of shape [] or [B] against ``x`` of shape [B, ...] (test-side helper)."""
    t = jnp.asarray(t)
    return t if t.ndim == 0 else t.reshape(t.shape + (1,) * (x.ndim - 1))


def _coeffs(path, t, x):
    tb = _col(t, x)
    return path.alpha(tb), path.sigma(tb), path.d_alpha(tb), path.d_sigma(tb)


# --------------------------------------------------------------------------------------------
# Coefficients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATHS)
def test_boundary_coefficients(name):
    path = PATHS[name]
    one, zero = jnp.asarray(1.0), jnp.asarray(0.0)
    np.testing.assert_allclose(path.alpha(one), 1.0, atol=1e-12)
    np.testing.assert_allclose(path.sigma(one), 0.0, atol=1e-12)
    if name == "vp":  # the linear-beta VP schedule does not reach pure noise exactly
        np.testing.assert_allclose(path.alpha(zero), math.exp(-(0.1 + 20.0) / 4), rtol=1e-12)
        np.testing.assert_allclose(path.sigma(zero), 1.0, atol=1e-4)
    else:
        np.testing.assert_allclose(path.alpha(zero), 0.0, atol=1e-12)
        np.testing.assert_allclose(path.sigma(zero), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ["cosine", "vp"])
def test_variance_preserving(name):
    t = jnp.linspace(0.0, 1.0, 101)
    path = PATHS[name]
    np.testing.assert_allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", ["cosine", "vp"])
def test_closed_form_derivatives_match_autodiff(name):
    closed = PATHS[name]
    generic = paths.AlphaSigmaPath(alpha_fn=closed.alpha, sigma_fn=closed.sigma)
    t = jnp.linspace(0.05, 0.95, 37)
    np.testing.assert_allclose(closed.d_alpha(t), generic.d_alpha(t), **TOL)
    np.testing.assert_allclose(closed.d_sigma(t), generic.d_sigma(t), **TOL)
    # Also against a scalar jax.grad, independent of the jvp helper in paths.py.
    for tt in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(closed.d_alpha(jnp.asarray(tt)), jax.grad(closed.alpha)(tt))
        np.testing.assert_allclose(closed.d_sigma(jnp.asarray(tt)), jax.grad(closed.sigma)(tt))
    # Same conversions (to and from velocity) through the generic (autodiff) path.
    x, p, tb = _inputs(1)
    pairs = [("velocity", k) for k in TYPES] + [(k, "velocity") for k in TYPES]
    for src, dst in pairs:
        np.testing.assert_allclose(
            closed.convert(p, x, tb, src=src, dst=dst),
            generic.convert(p, x, tb, src=src, dst=dst),
            **TOL,
            err_msg=f"{src}->{dst}",
        )


def test_log_snr_is_logit_for_linear_path():
    t = jnp.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(PATHS["linear"].log_snr(t), jnp.log(t / (1 - t)), rtol=1e-12)
    for name in ("cosine", "vp", "quadratic"):
        lam = PATHS[name].log_snr(t)
        assert bool(jnp.all(jnp.diff(lam) > 0)), name  # increases from noise to data


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scalar_t", [False, True])
@pytest.mark.parametrize("name", PATHS)
def test_convert_round_trips_and_composes(name, scalar_t):
    path = PATHS[name]
    x, p, t = _inputs(2, scalar_t)
    for src, dst in itertools.product(TYPES, repeat=2):
        there = path.convert(p, x, t, src=src, dst=dst)
        assert there.shape == p.shape and there.dtype == jnp.float64
        back = path.convert(there, x, t, src=dst, dst=src)
        np.testing.assert_allclose(back, p, **TOL, err_msg=f"{src}->{dst}->{src}")
        for mid in TYPES:  # going through any intermediate type changes nothing
            via = path.convert(path.convert(p, x, t, src=src, dst=mid), x, t, src=mid, dst=dst)
            np.testing.assert_allclose(via, there, **TOL, err_msg=f"{src}->{mid}->{dst}")


@pytest.mark.parametrize("name", PATHS)
def test_prediction_identities(name):
    path = PATHS[name]
    x, v, t = _inputs(3)
    x1_hat = path.convert(v, x, t, src="velocity", dst="x1")
    x0_hat = path.convert(v, x, t, src="velocity", dst="x0")
    score = path.convert(v, x, t, src="velocity", dst="score")
    a, s, da, ds = _coeffs(path, t, x)
    np.testing.assert_allclose(a * x1_hat + s * x0_hat, x, **TOL)
    np.testing.assert_allclose(da * x1_hat + ds * x0_hat, v, **TOL)
    np.testing.assert_allclose(score, -x0_hat / s, **TOL)


@pytest.mark.parametrize("name", PATHS)
def test_conditional_velocity_recovers_endpoints(name):
    path = PATHS[name]
    x0, x1, t = _inputs(4)
    x = path.interpolate(x0, x1, t)
    v = path.target_velocity(x0, x1, t)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="x1"), x1, **TOL)
    np.testing.assert_allclose(path.convert(v, x, t, src="velocity", dst="x0"), x0, **TOL)
    np.testing.assert_allclose(path.convert(x1, x, t, src="x1", dst="velocity"), v, **TOL)


@pytest.mark.parametrize("scalar_t", [False, True])
@pytest.mark.parametrize("name", PATHS)
def test_target_velocity_is_time_derivative(name, scalar_t):
    path = PATHS[name]
    x0, x1, t = _inputs(5, scalar_t)
    _, dx_dt = jax.jvp(lambda tt: path.interpolate(x0, x1, tt), (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(path.target_velocity(x0, x1, t), dx_dt, **TOL)


@pytest.mark.parametrize("scalar_t", [False, True])
def test_linear_path_closed_forms(scalar_t):
    path = PATHS["linear"]
    x, v, t = _inputs(6, scalar_t)
    tb = _col(t, x)

    def conv(dst):
        return path.convert(v, x, t, src="velocity", dst=dst)

    np.testing.assert_allclose(conv("x1"), x + (1 - tb) * v, **TOL)
    np.testing.assert_allclose(conv("x0"), x - tb * v, **TOL)
    np.testing.assert_allclose(conv("score"), (tb * v - x) / (1 - tb), **TOL)
    np.testing.assert_allclose(conv("x1") - conv("x0"), v, **TOL)
    # The closed-form overrides agree with the generic algebra of the base class.
    generic = paths.AlphaSigmaPath(alpha_fn=lambda s: s, sigma_fn=lambda s: 1.0 - s)
    for src, dst in itertools.product(TYPES, repeat=2):
        np.testing.assert_allclose(
            path.convert(v, x, t, src=src, dst=dst),
            generic.convert(v, x, t, src=src, dst=dst),
            **TOL,
            err_msg=f"{src}->{dst}",
        )


# --------------------------------------------------------------------------------------------
# Gaussian closed form (docs/maths/flow_matching.md)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mu, q, t", [(1.5, 0.5, 0.3), (1.5, 0.5, 0.8), (-1.0, 2.0, 0.5), (2.0, 1.0, 0.6)]
)
def test_gaussian_velocity_matches_monte_carlo(mu, q, t):
    rng = np.random.default_rng(7)
    n = 1_000_000
    x0 = rng.standard_normal(n)
    x1 = mu + q * rng.standard_normal(n)
    xt = t * x1 + (1 - t) * x0
    v_cond = x1 - x0
    m, sd = gf.mean(t, mu), gf.std(t, q)
    wrong_slope = (t * q**2 + (1 - t)) / (t**2 * q**2 + (1 - t) ** 2)  # sign error
    wrong_z = []
    for centre in (m - sd, m, m + 0.7 * sd):
        sel = np.abs(xt - centre) < 0.05 * sd
        k = int(sel.sum())
        assert k > 10_000
        # v is affine in x, so the bin average of v equals v at the bin's mean x: no bias.
        x_bar = xt[sel].mean()
        est, se = v_cond[sel].mean(), v_cond[sel].std() / math.sqrt(k)
        assert abs(est - gf.velocity(x_bar, t, mu, q)) < 4.5 * se, (centre, est, se)
        est1, se1 = x1[sel].mean(), x1[sel].std() / math.sqrt(k)
        assert abs(est1 - gf.x1_hat(x_bar, t, mu, q)) < 4.5 * se1  # E[x1 | x_t]
        wrong_z.append(abs(est - (mu + wrong_slope * (x_bar - t * mu))) / se)
    assert max(wrong_z) > 20  # the check has power against a wrong slope
    # The marginal of x_t is N(m_t, sd_t^2).
    assert abs(xt.mean() - m) < 5 * sd / math.sqrt(n)
    assert abs(xt.std() - sd) < 5 * sd / math.sqrt(2 * n)


@pytest.mark.parametrize("mu, q", [(1.5, 0.5), (-1.0, 2.0), (0.7, 0.0)])
def test_gaussian_score_and_x1_hat_through_convert(mu, q):
    path = PATHS["linear"]
    x, _, t = _inputs(8)
    tb = _col(t, x)
    v = gf.velocity(x, tb, mu, q)
    np.testing.assert_allclose(
        path.convert(v, x, t, src="velocity", dst="score"), gf.score(x, tb, mu, q), **TOL
    )
    np.testing.assert_allclose(
        path.convert(v, x, t, src="velocity", dst="x1"), gf.x1_hat(x, tb, mu, q), **TOL
    )

    # gf.score is the gradient of the N(m_t, sd_t^2) log-density.
    def log_p(y):
        return jnp.sum(-0.5 * ((y - gf.mean(tb, mu)) / gf.std(tb, q)) ** 2)

    np.testing.assert_allclose(jax.grad(log_p)(x), gf.score(x, tb, mu, q), **TOL)
    if q == 0.0:  # point-mass data: v = (mu - x) / (1 - t)
        np.testing.assert_allclose(v, (mu - x) / (1 - tb), **TOL)


@pytest.mark.parametrize("mu, q", [(1.5, 0.5), (-1.0, 2.0), (2.0, 1.0)])
def test_gaussian_flow_map_and_average_velocity(mu, q):
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.standard_normal(5))
    s, e, r = 0.2, 0.9, 0.55

    # Phi solves dx/de = v(x, e) and Phi_{s->s} = id.
    def phi(ee):
        return gf.flow_map(x, s, ee, mu, q)

    _, dphi = jax.jvp(phi, (jnp.asarray(e),), (jnp.asarray(1.0),))
    np.testing.assert_allclose(dphi, gf.velocity(phi(e), e, mu, q), **TOL)
    np.testing.assert_allclose(gf.flow_map(x, s, s, mu, q), x, **TOL)
    # Semigroup: Phi_{r->e} o Phi_{s->r} = Phi_{s->e}.
    two = gf.flow_map(gf.flow_map(x, s, r, mu, q), r, e, mu, q)
    np.testing.assert_allclose(two, gf.flow_map(x, s, e, mu, q), **TOL)
    # Average velocity: the defining quotient for e != s and v at e = s.
    ubar = gf.average_velocity(x, s, e, mu, q)
    np.testing.assert_allclose(ubar, (gf.flow_map(x, s, e, mu, q) - x) / (e - s), **TOL)
    np.testing.assert_allclose(gf.average_velocity(x, s, s, mu, q), gf.velocity(x, s, mu, q))
    # Sampling from noise: Phi_{0->1} maps N(0, 1) to N(mu, q^2).
    np.testing.assert_allclose(gf.flow_map(x, 0.0, 1.0, mu, q), mu + q * x, **TOL)


# --------------------------------------------------------------------------------------------
# Errors at the public boundary
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATHS)
def test_bad_time_shape_raises(name):
    path = PATHS[name]
    x, p, _ = _inputs(10)
    for bad_t in (jnp.full((BATCH + 1,), 0.5), jnp.full((BATCH, 1), 0.5)):
        with pytest.raises(ValueError, match="time must be a scalar or have shape"):
            path.interpolate(p, x, bad_t)
        with pytest.raises(ValueError, match="time must be a scalar or have shape"):
            path.convert(p, x, bad_t, src="velocity", dst="x1")


def test_bad_time_shape_raises_everywhere():
    x, p, _ = _inputs(11)
    bad_t = jnp.full((BATCH + 1,), 0.5)
    failures = 0
    for call in (
        lambda: PATHS["linear"].target_velocity(p, x, bad_t),
        lambda: PATHS["cosine"].convert(p, x, bad_t, src="x1", dst="x1"),
    ):
        try:
            call()
        except ValueError:
            failures += 1
    assert failures == 2


def test_unknown_prediction_type_raises():
    path = PATHS["linear"]
    x, p, t = _inputs(12)
    with pytest.raises(ValueError, match="src='eps'"):
        path.convert(p, x, t, src="eps", dst="x1")
    with pytest.raises(ValueError, match="dst='data'"):
        path.convert(p, x, t, src="velocity", dst="data")


def test_make_path_and_alpha_sigma_errors():
    assert paths.make_path("cosine") == paths.CosinePath()
    assert paths.make_path("vp", beta_max=10.0) == paths.VPPath(beta_max=10.0)
    with pytest.raises(ValueError, match="unknown path 'edm'"):
        paths.make_path("edm")
    with pytest.raises(ValueError, match="callables"):
        paths.AlphaSigmaPath()
