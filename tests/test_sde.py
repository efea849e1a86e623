"""SDE sampling with the ODE's marginals and the linear -> VP conversion (docs/maths/sde_search.md).

Everything is checked on the Gaussian closed form (section 11, ``tests/gaussian_fixture.py``):
data ``N(mu, q^2 I)``, exact linear-path velocity, marginal ``x_t ~ N(t mu, sd_t^2 I)``. Time
convention: noise at t=0, data at t=1. float64 throughout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import paths, solvers
from flowjax.solvers import sde
from flowjax.time import grids
from tests import gaussian_fixture as gf

MU = np.array([1.0, -2.0])
Q = 0.5


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def velocity(x, t, cond=None):
    return gf.velocity(x, t[:, None], jnp.asarray(MU), Q)


def _vp_marginal(s):
    """Mean and std of xbar_s = abar x1 + sbar x0 on the VP path (per dimension)."""
    vp = paths.VPPath()
    a, b = float(vp.alpha(s)), float(vp.sigma(s))
    return a * MU, np.sqrt(a**2 * Q**2 + b**2)


def test_zero_diffusion_sde_is_the_euler_ode():
    x0 = jax.random.normal(jax.random.key(0), (64, 2), jnp.float64)
    grid = grids.uniform_grid(12)
    ode = solvers.sample(solvers.Euler(), velocity, x0, grid)
    for key in (0, 1):  # the noise is irrelevant
        x = sde.sample_sde(velocity, x0, grid, jax.random.key(key), diffusion="ode")
        np.testing.assert_allclose(np.asarray(x), np.asarray(ode), rtol=0, atol=1e-12)
    x = sde.sample_sde(velocity, x0, grid, jax.random.key(2), diffusion="square,eta=0")
    np.testing.assert_allclose(np.asarray(x), np.asarray(ode), rtol=0, atol=1e-12)


def test_score_from_velocity_is_the_analytic_score():
    x = jax.random.normal(jax.random.key(1), (16, 2), jnp.float64)
    t = jnp.linspace(0.05, 0.95, 16)
    u = velocity(x, t)
    got = sde.score_from_velocity(paths.LinearPath(), u, x, t)
    want = gf.score(x, t[:, None], jnp.asarray(MU), Q)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-10)


N_MC = 20_000


@pytest.mark.parametrize("spec", ["square,eta=3", "sit,eta=1", "constant,eta=0.7"])
def test_sde_marginals_match_the_ode_marginals(spec):
    """Mean and covariance at t = 1 and mid-way equal the closed form within MC error."""
    grid = grids.uniform_grid(100)
    x0 = jax.random.normal(jax.random.key(3), (N_MC, 2), jnp.float64)
    run = jax.jit(
        lambda x0, key: sde.sample_sde(
            velocity, x0, grid, key, diffusion=spec, return_trajectory=True
        )
    )
    x1, traj = run(x0, jax.random.key(4))
    checks = [(1.0, np.asarray(x1), MU, Q)]
    for k in (30, 70):
        t = float(grid[k])
        checks.append((t, np.asarray(traj[k]), t * MU, float(gf.std(t, Q))))
    for t, x, mean, sd in checks:
        se = sd / np.sqrt(N_MC)
        np.testing.assert_allclose(x.mean(0), mean, atol=5 * se + 0.01, err_msg=f"{spec} t={t}")
        cov = np.cov(x.T)
        # Variance: MC relative error sqrt(2/n) ~ 1%, Euler-Maruyama bias O(dt).
        np.testing.assert_allclose(np.diag(cov), sd**2, rtol=0.05, err_msg=f"{spec} t={t}")
        assert abs(cov[0, 1]) < 5 * sd**2 / np.sqrt(N_MC) + 0.01, (spec, t)
    # The SDE really is stochastic: different keys give different samples.
    other, _ = run(x0, jax.random.key(5))
    assert float(jnp.max(jnp.abs(other - x1))) > 1e-2


def test_conversion_with_the_linear_schedule_is_the_identity():
    target = paths.AlphaSigmaPath(alpha_fn=lambda s: s, sigma_fn=lambda s: 1.0 - s)
    ubar = sde.convert_velocity(velocity, target)
    x = jax.random.normal(jax.random.key(6), (16, 2), jnp.float64)
    s = jnp.linspace(0.02, 0.98, 16)
    t, c, dt, dc = sde.conversion_coefficients(target, s)
    np.testing.assert_allclose(np.asarray(t), np.asarray(s), atol=1e-15)
    np.testing.assert_allclose(np.asarray(c), 1.0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(dt), 1.0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(dc), 0.0, atol=1e-15)
    np.testing.assert_allclose(
        np.asarray(ubar(x, s)), np.asarray(velocity(x, s)), rtol=1e-14, atol=1e-14
    )


def test_vp_converted_ode_follows_the_rescaled_original_trajectory():
    """xbar_s = c_s x_{t(s)}: integrate the converted field (RK4, fine steps) and compare with
    the exact flow map of the original field, rescaled; also the Tweedie estimates agree."""
    vp = paths.VPPath()
    ubar = sde.convert_velocity(velocity, vp)
    s_end = 0.98  # sbar' is infinite at s = 1
    grid = np.linspace(0.0, s_end, 401)
    x_start = jax.random.normal(jax.random.key(7), (32, 2), jnp.float64)
    xbar = solvers.sample(solvers.RK4(), ubar, x_start, grid)
    t0, c0, _, _ = sde.conversion_coefficients(vp, jnp.float64(0.0))
    t1, c1, _, _ = sde.conversion_coefficients(vp, jnp.float64(s_end))
    want = c1 * gf.flow_map(x_start / c0, t0, t1, jnp.asarray(MU), Q)
    np.testing.assert_allclose(np.asarray(xbar), np.asarray(want), rtol=1e-7, atol=1e-7)
    # Tweedie is invariant: x1_hat on the VP path == x1_hat of the original at (x/c, t(s)).
    s = jnp.full((32,), 0.6)
    t, c, _, _ = sde.conversion_coefficients(vp, s)
    got = sde.tweedie(vp, ubar(xbar, s), xbar, s)
    ref = gf.x1_hat(xbar / c[:, None], t[:, None], jnp.asarray(MU), Q)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-10, atol=1e-10)
    # And the VP score is the score of the VP marginal N(abar mu, abar^2 q^2 + sbar^2).
    mean, sd = _vp_marginal(0.6)
    score = sde.score_from_velocity(vp, ubar(xbar, s), xbar, s)
    np.testing.assert_allclose(
        np.asarray(score), -(np.asarray(xbar) - mean) / sd**2, rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("spec", ["ode", "square,eta=3"])
def test_vp_converted_sampler_reaches_the_data_marginal(spec):
    vp = paths.VPPath()
    ubar = sde.convert_velocity(velocity, vp)
    grid = grids.uniform_grid(200)
    x0 = jax.random.normal(jax.random.key(8), (N_MC, 2), jnp.float64)
    x1, traj = jax.jit(
        lambda x0: sde.sample_sde(
            ubar, x0, grid, jax.random.key(9), path=vp, diffusion=spec, return_trajectory=True
        )
    )(x0)
    for s, x in ((1.0, np.asarray(x1)), (float(grid[120]), np.asarray(traj[120]))):
        mean, sd = (MU, Q) if s == 1.0 else _vp_marginal(s)
        se = sd / np.sqrt(N_MC)
        np.testing.assert_allclose(x.mean(0), mean, atol=5 * se + 0.01, err_msg=f"{spec} s={s}")
        np.testing.assert_allclose(x.std(0), sd, rtol=0.03, err_msg=f"{spec} s={s}")


@pytest.mark.parametrize(
    "spec,closed_form",
    [
        ("square,eta=3", lambda t: 3.0 * (1.0 - t) ** 2),
        ("sit,eta=0.5", lambda t: np.sqrt(2.0 * 0.5 * (1.0 - t))),
        ("constant,eta=0.7", lambda t: np.full_like(t, 0.7)),
        ("ode", lambda t: np.zeros_like(t)),
    ],
)
def test_diffusion_coefficients_are_their_closed_forms(spec, closed_form):
    t = np.array([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
    got = np.asarray(sde.make_diffusion(spec)(jnp.asarray(t)))
    np.testing.assert_allclose(got, closed_form(t), rtol=1e-14, atol=0)


def _posterior_mean(x, t):
    """E[x1 | x_t = x] by Gaussian conditioning: Cov(x1, x_t) = t q^2, Var(x_t) = sd_t^2."""
    return MU + t * Q**2 / (t**2 * Q**2 + (1.0 - t) ** 2) * (x - t * MU)


@pytest.mark.parametrize("num_steps", [1, 6])
def test_last_step_is_the_tweedie_jump_to_the_posterior_mean(num_steps):
    """Whatever the noise, the sampler ends at E[x1 | x_{t_{N-1}}] (exact posterior mean of
    the Gaussian data): no Brownian increment and no drift step on the last interval."""
    grid = np.linspace(0.6, 1.0, num_steps + 1)
    # a draw of the marginal at t = 0.6, where the grid starts
    x0 = 0.6 * MU + gf.std(0.6, Q) * jax.random.normal(jax.random.key(10), (64, 2), jnp.float64)
    for key in (11, 12):
        x, traj = sde.sample_sde(
            velocity,
            x0,
            grid,
            jax.random.key(key),
            diffusion="square,eta=3",
            return_trajectory=True,
        )
        before = np.asarray(traj[-2])
        want = _posterior_mean(before, grid[-2])
        np.testing.assert_allclose(np.asarray(x), want, rtol=1e-12, atol=1e-12)
    if num_steps == 1:  # the one step is the jump: deterministic
        np.testing.assert_allclose(np.asarray(x), _posterior_mean(np.asarray(x0), 0.6), rtol=1e-12)


def test_vp_sampler_ends_with_the_posterior_mean_of_the_linear_model():
    """On the VP path the jump is not an Euler step: x1_hat(xbar, s) = E[x1 | x_{t(s)} = xbar/c]."""
    vp = paths.VPPath()
    ubar = sde.convert_velocity(velocity, vp)
    grid = np.linspace(0.0, 1.0, 9)
    x0 = jax.random.normal(jax.random.key(13), (64, 2), jnp.float64)
    x, traj = sde.sample_sde(
        ubar,
        x0,
        grid,
        jax.random.key(14),
        path=vp,
        diffusion="square,eta=3",
        return_trajectory=True,
    )
    t, c, _, _ = sde.conversion_coefficients(vp, jnp.float64(grid[-2]))
    want = _posterior_mean(np.asarray(traj[-2]) / float(c), float(t))
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-10, atol=1e-10)


def test_bad_inputs_fail_clearly():
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="must end at t = 1"):
        sde.sample_sde(velocity, x0, np.linspace(0, 0.9, 5), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown diffusion"):
        sde.make_diffusion("cubic,eta=1")
    with pytest.raises(ValueError, match="eta must be"):
        sde.make_diffusion("square,eta=-1")
    with pytest.raises(ValueError, match=r"unknown key.*valid keys: \[.eta.\]"):
        sde.make_diffusion("square,beta=1")
