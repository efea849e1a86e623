"""DPM-Solver++ in flow form (docs/maths/solvers.md): Euler identity, exactness on straight flows,
convergence order on an exact Gaussian-mixture field, parity with diffusers, guidance,
thresholding, stability at both ends, one compiled program and clear errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import solvers
from flowjax.exact_fields import GaussianMixtureField
from flowjax.objectives import guidance
from flowjax.solvers import AdaptiveSolve, DPMSolverPP, DynamicThreshold, Euler, sample
from flowjax.time import grids

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "dpm_solver_pp_diffusers.npz")


def mixture():
    # Unequal weights and stds: the posterior changes along the trajectories (curved flow).
    return GaussianMixtureField(
        means=[[2.0, 0.0], [-1.0, 1.5], [-0.5, -2.0]], stds=[0.4, 0.3, 0.6], weights=[1, 2, 1.5]
    )


def test_first_order_step_is_euler():
    """§7.2: DPM-Solver++1 on the linear path is Euler (random v, s, t), to rounding."""
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(0)
        x = jax.random.normal(key, (16, 3), jnp.float64)
        w = jax.random.normal(jax.random.PRNGKey(1), (3, 3), jnp.float64)

        def v(x, t, c):
            return jnp.tanh(x @ w) * (1 + t[:, None]) + jnp.cos(5 * t[:, None])

        for solver in (DPMSolverPP(order=1), DPMSolverPP(order=2), DPMSolverPP(order=3)):
            for grid in ([0.0, 0.37, 1.0], [0.02, 0.5], np.linspace(0, 1, 7)):
                if len(grid) - 1 < solver.min_steps:
                    continue
                if solver.order > 1 and len(grid) > 3:
                    continue  # multistep steps are genuinely different
                got = sample(solver, v, x, grid)
                want = sample(Euler(), v, x, grid)
                np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "order, corrector", [(1, False), (2, False), (3, False), (2, True), (3, True)]
)
def test_point_mass_lands_exactly_from_any_grid(order, corrector):
    """§7.5.2: with the exact x_hat = mu every order (with or without the UniC corrector) stays
    on the straight trajectories, from t = 0 to t = 1 exactly."""
    mu = jnp.array([0.7, -1.2])

    def v(x, t, c):
        return (mu - x) / (1.0 - t[:, None])

    x0 = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    solver = DPMSolverPP(order=order, corrector=corrector)
    for grid in (grids.uniform_grid(6), grids.logsnr_uniform_grid(7)):
        _, traj = sample(solver, v, x0, grid, return_trajectory=True)
        t = jnp.asarray(grid, jnp.float32)[:, None, None]
        exact = x0 + (t - grid[0]) / (1 - grid[0]) * (mu - x0)  # straight lines through x0
        np.testing.assert_allclose(traj, exact, rtol=1e-5, atol=1e-5)


def smooth_mixture():
    return GaussianMixtureField(means=[[1.5, 0.0], [-1.0, 1.0]], stds=[0.6, 0.8], weights=[1, 2])


@pytest.fixture(scope="module")
def convergence_errors():
    """RMS errors on [0.02, 0.98] (logSNR-uniform grids, float64) against a diffrax Dopri8
    solve at tolerance 1e-11 of the exact mixture field, from the same points."""
    field = smooth_mixture()
    t_a, t_b = 0.02, 0.98
    steps = np.array([16, 24, 32, 48, 64])
    settings = {
        "1": DPMSolverPP(order=1),
        "2M": DPMSolverPP(order=2, lower_order_final=False),
        "3M": DPMSolverPP(order=3, lower_order_final=False),
        "3M-diffusers": DPMSolverPP(order=3, lower_order_final=False, third_order_form="diffusers"),
        "unipc2": DPMSolverPP(order=2, lower_order_final=False, corrector=True),
    }
    errors = {}
    with jax.enable_x64(True):
        x_a = jax.random.normal(jax.random.PRNGKey(3), (64, 2), jnp.float64)
        ref, _ = AdaptiveSolve("dopri8", rtol=1e-11, atol=1e-11, max_steps=20_000)(
            field.velocity, x_a, t0=t_a, t1=t_b
        )
        lam_a, lam_b = np.log(t_a / (1 - t_a)), np.log(t_b / (1 - t_b))
        for name, solver in settings.items():
            errs = []
            for n in steps:
                grid = 1 / (1 + np.exp(-np.linspace(lam_a, lam_b, n + 1)))
                x = sample(solver, field.velocity, x_a, grid)
                errs.append(float(jnp.sqrt(jnp.mean((x - ref) ** 2))))
            errors[name] = errs
    return steps, errors


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("name, order", [("1", 1), ("2M", 2), ("3M", 3), ("unipc2", 3)])
def test_convergence_order_on_exact_mixture_field(convergence_errors, name, order):
    """Fitted slope of log(error) vs log(steps): 1, 2, 3 (+-0.3) for DPM-Solver++1/2M/3M, and
    3 for 2M with the UniC corrector (which raises the order by one at no NFE)."""
    steps, errors = convergence_errors
    slope = _slope(steps, errors[name])
    assert abs(slope - order) < 0.3, (errors[name], slope)


def test_reference_third_order_coefficient_is_only_second_order(convergence_errors):
    """The documented finding behind ``third_order_form``: diffusers' 3M coefficient halves
    the third-order term, so its slope stays near 2 while the Taylor form reaches 3."""
    steps, errors = convergence_errors
    assert _slope(steps, errors["3M-diffusers"]) < 2.5 < _slope(steps, errors["3M"])
    assert errors["3M"][-1] < 0.5 * errors["3M-diffusers"][-1]


def _fixture_field(z, dtype):
    w, b = jnp.asarray(z["W"], dtype), jnp.asarray(z["b"], dtype)

    def v(x, t, c):
        flat = x.reshape(x.shape[0], -1)
        tt = t[:, None]
        out = b + (0.5 + tt) * (flat @ w.T) + jnp.sin(flat) * jnp.cos(3.0 * tt)
        return out.reshape(x.shape)

    return v


@pytest.mark.parametrize(
    "case",
    [
        "order2_shift1_n8",
        "order2_shift3_n10",
        "order3_shift3_n10",
        "order2_heun_shift1_n6",
        "order2_shift1_n20",
        "order3_shift1_n16",
        "order2_threshold_n8",
        "unipc_order2_shift1_n8",
        "unipc_order2_shift3_n10",
        "unipc_order1_shift1_n6",
        "unipc_order2_shift1_n3",
    ],
)
def test_parity_with_diffusers(case):
    """Stored diffusers DPMSolverMultistepScheduler / UniPCMultistepScheduler runs
    (use_flow_sigmas, flow_prediction; tests/fixtures/make_dpm_solver_pp_diffusers.py) agree
    to 1e-5 relative: grid and output."""
    z = np.load(FIXTURE)
    n, shift, order, heun, ratio, max_value = z[f"{case}/config"]
    # diffusers stores float32 noise levels sigma = 1 - t.
    stored_grid = 1.0 - z[f"{case}/sigmas"].astype(np.float64)
    if case.startswith("unipc"):
        grid = stored_grid  # UniPC builds its own flow grid (starts at t = 0, not 1/1000)
        solver = DPMSolverPP(order=int(order), corrector=True)
    else:
        grid = grids.diffusers_flow_grid(int(n), float(shift))
        np.testing.assert_allclose(grid, stored_grid, atol=1e-7)
        solver = DPMSolverPP(
            order=int(order),
            solver_type="heun" if heun else "midpoint",
            thresholding=DynamicThreshold(float(ratio), float(max_value)) if ratio > 0 else None,
            third_order_form="diffusers",
        )
    x0 = jnp.asarray(z["x_init"], jnp.float32)
    got = np.asarray(sample(solver, _fixture_field(z, jnp.float32), x0, grid))
    want = z[f"{case}/x_final"]
    rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert rel < 1e-5, rel
    # Not a vacuous comparison: Euler on the same grid is far away.
    euler = np.asarray(sample(Euler(), _fixture_field(z, jnp.float32), x0, grid))
    assert np.max(np.abs(euler - want)) / np.max(np.abs(want)) > 1e-2


def test_guided_field_converges_to_the_guided_reference():
    """CFG (scale 4) on the exact mixture: 2M and 3M approach the adaptive solution of the same
    guided ODE: with 16 steps 3M beats 2M, which at least halves the error of Euler."""
    field = mixture()
    guided = guidance.cfg_velocity(field.velocity, 4.0, field.num_components)
    x0 = jax.random.normal(jax.random.PRNGKey(4), (128, 2))
    labels = jnp.arange(128) % field.num_components
    ref, _ = AdaptiveSolve(rtol=1e-6, atol=1e-6)(guided, x0, labels)
    grid = grids.diffusers_flow_grid(16)
    errs = {
        name: float(
            jnp.sqrt(
                jnp.mean((sample(solvers.make_solver(name), guided, x0, grid, labels) - ref) ** 2)
            )
        )
        for name in ("euler", "dpm++2m", "dpm++3m")
    }
    assert errs["dpm++3m"] < errs["dpm++2m"] < errs["euler"], errs
    assert errs["dpm++2m"] < 0.5 * errs["euler"], errs


def test_stable_at_both_ends_and_thresholding_bounds_the_data_prediction():
    """Grids from t = 0 to t = 1 give finite results for every order; with thresholding the
    data prediction is rescaled into [-1, 1], so the final sample (= last x1_hat) is too."""
    field = mixture()
    x0 = 3.0 * jax.random.normal(jax.random.PRNGKey(5), (32, 2))
    for order in (1, 2, 3):
        for grid in (grids.uniform_grid(6), grids.edm_grid(6)):
            for corrector in (False, True):
                x = sample(DPMSolverPP(order=order, corrector=corrector), field.velocity, x0, grid)
                assert bool(jnp.all(jnp.isfinite(x)))
    x = sample(
        DPMSolverPP(thresholding=DynamicThreshold()), field.velocity, x0, grids.uniform_grid(6)
    )
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-6
    plain = sample(DPMSolverPP(), field.velocity, x0, grids.uniform_grid(6))
    assert float(jnp.max(jnp.abs(plain))) > 1.5  # the mixture lives beyond [-1, 1]
    m = jnp.array([[0.5, -0.2], [3.0, -6.0]])
    np.testing.assert_allclose(
        DynamicThreshold(ratio=1.0, max_value=4.0)(m), [[0.5, -0.2], [0.75, -1.0]], rtol=1e-6
    )


def test_multistep_sampler_compiles_once():
    run = solvers.make_sampler(
        DPMSolverPP(order=3),
        lambda p, x, t, c: p * x + t[:, None],
        grids.logsnr_uniform_grid(8),
    )
    for seed in range(3):
        run(jnp.float32(-0.5 * seed), jax.random.normal(jax.random.PRNGKey(seed), (4, 2)))
    assert run._cache_size() == 1


def test_minimum_steps_and_bad_arguments():
    """2M needs 3 steps and 3M needs 5 (4 without lower_order_final) on a grid ending at 1."""
    v = lambda x, t, c: -x  # noqa: E731
    x0 = jnp.ones((2, 2))
    assert DPMSolverPP(order=1).num_steps_for_nfe(1) == 1
    assert DPMSolverPP(order=2).num_steps_for_nfe(3) == 3
    assert DPMSolverPP(order=3).num_steps_for_nfe(5) == 5
    assert DPMSolverPP(order=3, lower_order_final=False).num_steps_for_nfe(4) == 4
    with pytest.raises(
        ValueError,
        match=r"dpm\+\+2m needs at least 3 function evaluations.*"
        r"use dpm\+\+1",
    ):
        solvers.make_solver("dpm++2m").num_steps_for_nfe(2)
    with pytest.raises(ValueError, match=r"dpm\+\+3m needs at least 5 .*warm-up.*dpm\+\+2m"):
        solvers.make_solver("dpm++3m").num_steps_for_nfe(4)
    with pytest.raises(ValueError, match=r"dpm\+\+3m needs at least 5 steps; the grid has 3"):
        sample(DPMSolverPP(order=3), v, x0, [0.0, 0.3, 0.6, 1.0])
    with pytest.raises(ValueError, match=r"leaves \[0, 1\]"):
        sample(DPMSolverPP(order=2), v, x0, [-0.1, 0.3, 0.6, 1.0])
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        DPMSolverPP(order=4)
    with pytest.raises(ValueError, match="solver_type"):
        solvers.make_solver("dpm++2m", solver_type="bh2")
    with pytest.raises(ValueError, match="ratio"):
        DynamicThreshold(ratio=0.0)
    # The warm-up / final-step order schedule (diffusers' rule).
    s = DPMSolverPP(order=3)
    orders = [
        int(s.effective_order(jnp.float32(0.5 if i < 5 else 1.0), jnp.int32(i), 6))
        for i in range(6)
    ]
    assert orders == [1, 2, 3, 3, 2, 1]
    orders = [int(s.effective_order(jnp.float32(0.9), jnp.int32(i), 20)) for i in (0, 1, 2, 18, 19)]
    assert orders == [1, 2, 3, 3, 3]
    assert solvers.make_solver("unipc2").num_steps_for_nfe(2) == 2
    assert solvers.make_solver("dpm++3m-unic").min_steps == 5
