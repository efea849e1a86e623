"""ODE samplers: convergence order on an exact field, exactness on straight flows, honest NFE,
one compiled program, and clear errors (docs/maths/solvers.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import solvers
from flowjax.solvers import RK4, Euler, Heun, Midpoint, make_sampler, make_solver, sample
from flowjax.time import grids
from tests import gaussian_fixture as gf

DPM_MODULE = "flowjax.solvers.dpm_solver_pp"  # multistep: tested in test_dpm_solver_pp.py

MU, Q = 1.0, 0.5  # curved speed profile: a genuinely non-trivial exact field


def gaussian_field(x, t, cond):
    return gf.velocity(x, t[:, None], MU, Q)


def nonlinear_field(x, t, cond):
    """dx/dt = cos(t) x^2, solved by x(t) = x0 / (1 - x0 sin t)."""
    return jnp.cos(t)[:, None] * x**2


def nonlinear_exact(x0):
    return x0 / (1.0 - x0 * jnp.sin(1.0))


# Every registered solver that integrates an instantaneous velocity (flow-map samplers need an
# end time): a solver registered later is tested by the tests below without editing them.
STEP_SOLVERS = [n for n in solvers.solver_names() if not make_solver(n).needs_end_time]
ONE_STEP_SOLVERS = [n for n in STEP_SOLVERS if type(make_solver(n)).__module__ != DPM_MODULE]

FIELDS = {
    # Gaussian data (linear in x; midpoint's leading error term happens to vanish on it).
    "gaussian": (gaussian_field, lambda x0: gf.flow_map(x0, 0.0, 1.0, MU, Q), 1.0),
    "nonlinear": (nonlinear_field, nonlinear_exact, 0.5),
}


@pytest.mark.parametrize(
    "solver, order, field",
    [(Euler(), 1, "gaussian"), (Heun(), 2, "gaussian"), (RK4(), 4, "gaussian")]
    + [(s, o, "nonlinear") for s, o in ((Euler(), 1), (Heun(), 2), (Midpoint(), 2), (RK4(), 4))],
)
def test_convergence_order_matches_the_solver(solver, order, field):
    velocity, exact_fn, scale = FIELDS[field]
    with jax.enable_x64(True):
        x0 = scale * jax.random.normal(jax.random.PRNGKey(0), (64, 2), dtype=jnp.float64)
        x0 = jnp.clip(x0, -0.9, 0.9) if field == "nonlinear" else x0
        exact = exact_fn(x0)
        steps = np.array([32, 64, 128, 256])  # asymptotic regime
        errors = []
        for n in steps:
            grid = jnp.linspace(0.0, 1.0, n + 1, dtype=jnp.float64)
            x1 = sample(solver, velocity, x0, grid)
            errors.append(float(jnp.max(jnp.abs(x1 - exact))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (errors, slope)


@pytest.mark.parametrize("name", ONE_STEP_SOLVERS)
def test_point_mass_flow_is_integrated_exactly(name):
    """Straight trajectories: every solver lands on mu from any grid, even in one step."""
    solver = make_solver(name)
    mu = jnp.array([0.7, -1.2])

    def v(x, t, cond):
        return (mu - x) / (1.0 - t[:, None])

    x0 = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
    for grid in (
        np.array([0.0, 1.0]) if solver.nfe_per_step == 1 else np.array([0.0, 0.5]),
        np.array([0.0, 0.2, 0.45]),
    ):
        x_end = sample(solver, v, x0, grid)
        t_end = grid[-1]
        np.testing.assert_allclose(x_end, t_end * mu + (1 - t_end) * x0, rtol=1e-5, atol=1e-5)


def test_one_euler_step_from_noise_lands_on_the_point_mass():
    mu = jnp.array([2.0, -3.0])
    x0 = jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    x1 = sample(Euler(), lambda x, t, c: (mu - x) / (1.0 - t[:, None]), x0, [0.0, 1.0])
    np.testing.assert_allclose(x1, jnp.broadcast_to(mu, x1.shape), rtol=1e-6)


@pytest.mark.parametrize("name", STEP_SOLVERS)
def test_nfe_is_honest(name):
    """Count the velocity evaluations actually traced per step."""
    solver = make_solver(name)
    calls = []

    def v(x, t, cond):
        calls.append(1)
        return -x

    steps = max(3, solver.min_steps)
    sample(solver, v, jnp.ones((2, 1)), grids.uniform_grid(steps))
    assert len(calls) == solver.nfe_per_step  # the scan body is traced once per program
    assert solver.nfe(steps) == steps * solver.nfe_per_step
    assert solver.num_steps_for_nfe((steps + 1) * solver.nfe_per_step) == steps + 1


def test_trajectory_and_conditioning_are_threaded_through():
    x0 = jnp.ones((3, 2))
    labels = jnp.array([0.0, 1.0, 2.0])
    grid = grids.uniform_grid(4)
    x1, traj = sample(
        Euler(),
        lambda x, t, c: jnp.broadcast_to(c[:, None], x.shape),
        x0,
        grid,
        labels,
        return_trajectory=True,
    )
    assert traj.shape == (5, 3, 2)
    np.testing.assert_allclose(traj[0], x0)
    np.testing.assert_allclose(traj[-1], x1)
    np.testing.assert_allclose(x1, x0 + labels[:, None], rtol=1e-6)


def test_sampler_compiles_once_for_new_noise_params_and_labels():
    def v(params, x, t, c):
        return params["w"] * x + c[:, None]

    run = make_sampler(Heun(), v, grids.uniform_grid(5))
    for seed in range(3):
        x0 = jax.random.normal(jax.random.PRNGKey(seed), (4, 2))
        run({"w": jnp.float32(seed)}, x0, jnp.arange(4.0))
    assert run._cache_size() == 1


def test_bad_input_gives_clear_errors():
    v = lambda x, t, c: -x  # noqa: E731
    x0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="at least 1 function evaluation"):
        Euler().num_steps_for_nfe(0)
    with pytest.raises(ValueError, match="multiple of 2"):
        Heun().num_steps_for_nfe(3)
    with pytest.raises(ValueError, match="increasing"):
        sample(Euler(), v, x0, [0.0, 0.6, 0.4, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(Euler(), v, x0, [0.0, 0.5, 1.5])
    with pytest.raises(ValueError, match="batch size"):
        sample(Euler(), v, x0, [0.0, 1.0], jnp.zeros((3,)))
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("rk45")
    assert {"euler", "heun", "midpoint", "rk4"} <= set(solvers.solver_names())
