"""Bespoke non-stationary coefficients (flowjax.solvers.learned.bespoke): at initialisation they
reproduce every base solver to 1e-12 (float64), they are consistent (exact on straight flows
for any parameters), learning helps on the Gaussian closed form, and they store and reload."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import solvers
from flowjax.config_files import load_config
from flowjax.exact_fields import GaussianMixtureField
from flowjax.solvers import learned
from flowjax.solvers.learned import bespoke
from flowjax.time import grids
from tests import gaussian_fixture as gf
from tests.tolerance import EPS32

ALL = ["euler", "heun", "midpoint", "rk4", "dpm++2m", "dpm++3m", "unipc2", "dpm++3m-unic"]
MU, Q = jnp.array([1.5, -0.5, 0.8]), 0.4


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def gauss_field(x, t, cond):
    return gf.velocity(x, t[:, None], MU, Q)


def straight_field(x, t, cond):
    a, tb = 0.5, t[:, None]
    return (a - 1.0) * (x - tb * MU) / (1.0 - tb + a * tb) + MU


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("grid_spec", ["uniform", "shifted,alpha=3"])
def test_init_reproduces_base_solver(name, grid_spec):
    """The tableau read off the base solver, run as a bespoke sampler at its initial
    parameters, gives the base solver's samples on a curved (mixture) field to 1e-12."""
    field = GaussianMixtureField.ring(4, radius=2.0, std=0.4)
    solver = solvers.make_solver(name)
    k = solver.num_steps_for_nfe(8 if name in ("rk4", "heun", "midpoint") else 6)
    grid = grids.grid_from_spec(grid_spec, k)
    tab = bespoke.extract_tableau(solver, grid)
    np.testing.assert_allclose(tab.x0_coef, 1.0, rtol=0, atol=1e-12)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 2), jnp.float64)
    got = bespoke.sample(tab, bespoke.init_params(tab, jnp.float64), field.velocity, x0)
    want = solvers.sample(solver, field.velocity, x0, grid)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["heun", "dpm++2m", "unipc2"])
def test_consistent_for_any_parameters(name):
    """Random parameters still integrate a straight flow exactly (the row-sum constraint)."""
    solver = solvers.make_solver(name)
    tab = bespoke.extract_tableau(solver, grids.uniform_grid(solver.num_steps_for_nfe(6)))
    p = bespoke.init_params(tab, jnp.float64)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    p = {
        "logits": p["logits"] + jax.random.normal(k1, p["logits"].shape),
        "delta": jax.random.normal(k2, p["delta"].shape),
    }
    tau, beta = bespoke.coefficients(tab, p)
    span = jnp.concatenate([tau, jnp.ones(1)])
    np.testing.assert_allclose(jnp.sum(beta, axis=1), span, atol=1e-12)
    x0 = jax.random.normal(jax.random.PRNGKey(2), (16, 3), jnp.float64)
    x = bespoke.sample(tab, p, straight_field, x0)
    np.testing.assert_allclose(x, 0.5 * x0 + MU, atol=1e-12)


def test_learning_helps_and_roundtrips(tmp_path):
    solver = solvers.make_solver("unipc2")
    x0 = jax.random.normal(jax.random.PRNGKey(0), (32, 3), jnp.float64)
    x_ref = gf.flow_map(x0, 0.0, 1.0, MU, Q)
    sampler, sched = bespoke.learn(solver, gauss_field, x0, 3, x_ref=x_ref, iters=60, seed=1)
    held = jax.random.normal(jax.random.PRNGKey(9), (256, 3), jnp.float64)
    exact = gf.flow_map(held, 0.0, 1.0, MU, Q)
    base = solvers.sample(solver, gauss_field, held, grids.uniform_grid(3))
    got = sampler(gauss_field, held)
    assert sched.loss < 0.5 * sched.initial_loss
    assert float(jnp.mean((got - exact) ** 2)) < 0.5 * float(jnp.mean((base - exact) ** 2))
    # Deterministic given the seed and inputs.
    _, again = bespoke.learn(solver, gauss_field, x0, 3, x_ref=x_ref, iters=60, seed=1)
    assert again.weights == sched.weights and again.times == sched.times
    # Stored and reloaded: the same samples.
    store = learned.LearnedStore(str(tmp_path / learned.STORE_NAME))
    store.put(sched)
    loaded = bespoke.Bespoke.from_schedule(store.latest("bespoke", "unipc2", 3))
    np.testing.assert_allclose(loaded(gauss_field, held), got, atol=1e-12)


def test_bad_input():
    x0 = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="thresholding"):
        bespoke.extract_tableau(
            solvers.DPMSolverPP(thresholding=solvers.DynamicThreshold()),
            grids.uniform_grid(4),
        )
    with pytest.raises(ValueError, match="reference resolution"):
        bespoke.learn(solvers.Euler(), gauss_field, x0, 10, reference="rk4:5")
    with pytest.raises(ValueError, match="element shape"):
        bespoke.learn(solvers.Euler(), gauss_field, x0, 4, element_shape=(4,))


@pytest.mark.slow
def test_calibrate_store_and_eval_specs(tmp_path, monkeypatch):
    """flowjax.calibrate stores a learned grid and bespoke coefficients for a (tiny, randomly
    perturbed) model; config.eval.samplers specs load them; nothing stored errors clearly."""
    from flowjax.evaluation.evaluator import Evaluator
    from flowjax.training import Experiment
    from flowjax.workflows import calibrate

    with jax.enable_x64(False):
        config = load_config("toy2d_rf")
        config.model.hidden, config.model.depth = 16, 1
        config.eval.num_samples, config.eval.num_kernel_samples = 64, 64
        config.eval.samplers = ("bespoke-unipc2:3", "midpoint:4:learned")
        exp = Experiment(config)
        params = exp.init_state().ema_params
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
        params = tree.unflatten(
            [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
        )
        run = (config, exp, params, 5)
        workdir = str(tmp_path)
        with pytest.raises(ValueError, match="flowjax.calibrate"):
            Evaluator.for_experiment(config, exp, workdir)
        kw = dict(calibration=16, reference="rk4:16", iters=10, progress=False, run=run)
        first = calibrate.calibrate_run(workdir, "bespoke-unipc2", 3, **kw)
        grid = calibrate.calibrate_run(workdir, "midpoint", 4, **kw)
        again = calibrate.calibrate_run(workdir, "bespoke-unipc2", 3, **kw)
        assert not first["reused"] and again["reused"] and not grid["reused"]
        assert "step=5" in first["key"] and first["schedule"]["calibration_nfe"] > 0
        # Learned <= initial is guaranteed on the calibration noise (the initial setting is
        # iterate 0 and the best iterate is kept): score the stored settings there, drawing the
        # "held-out" batch of a reused calibration with the calibration offset.
        draw = calibrate.calibration_batch
        monkeypatch.setattr(calibrate, "calibration_batch", lambda *a, offset=0: draw(*a))
        for made in (first, grid):
            s = made["schedule"]
            name = s["solver"] if s["kind"] == "grid" else f"bespoke-{s['solver']}"
            on_cal = calibrate.calibrate_run(workdir, name, s["nfe"], **kw)
            assert on_cal["reused"]
            initial, learned_rmse = on_cal["heldout_rmse_initial"], on_cal["heldout_rmse_learned"]
            # float32, and the bespoke sampler is another program than its base solver: equal
            # settings agree to rounding (6 eps relative seen here), hence the 64 eps allowance
            assert initial == pytest.approx(s["initial_loss"] ** 0.5, rel=64 * EPS32)
            assert learned_rmse <= initial * (1 + 64 * EPS32), (name, learned_rmse, initial)
        monkeypatch.undo()
        ev = Evaluator.for_experiment(config, exp, workdir)
        samples = ev.sample(params)
        assert set(samples) == {"bespoke-unipc2_nfe3", "midpoint_nfe4_learned"}
        assert all(np.all(np.isfinite(np.asarray(s))) for s in samples.values())
