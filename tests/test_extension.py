"""Adding a solver, an objective or a metric is one file and one registry line.

``tests/extensions/ralston.py`` (a :class:`~flowjax.solvers.Solver` subclass and
``register_solver``), ``tests/extensions/endpoint_regression.py`` (an
:class:`~flowjax.objectives.Objective` subclass and ``register_objective``) and
``tests/extensions/mean_distance.py`` (a :class:`~flowjax.types.Metric` subclass and
``register_metric``) are written as a user would; importing them is all it takes for configs
to name them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax import objectives, solvers
from flowjax.evaluation import METRICS, Evaluator
from flowjax.time import grids
from flowjax.training import Experiment, train_and_evaluate
from flowjax.training.experiment import load_run
from tests.extensions import endpoint_regression, mean_distance, ralston  # noqa: F401
from tests.training.conftest import tiny_config


def test_registered_solver_has_its_order():
    """Ralston is second order on dx/dt = cos(t) x^2 (closed form x0 / (1 - x0 sin t))."""
    solver = solvers.make_solver("ralston")
    assert "ralston" in solvers.solver_names()
    f = lambda x, t, c: jnp.cos(t)[:, None] * x**2  # noqa: E731
    with jax.enable_x64(True):
        x0 = jnp.linspace(-0.45, 0.45, 16, dtype=jnp.float64)[:, None]
        exact = x0 / (1.0 - x0 * jnp.sin(1.0))
        steps = np.array([16, 32, 64, 128])
        errors = [
            float(jnp.max(jnp.abs(solvers.sample(solver, f, x0, grids.uniform_grid(n)) - exact)))
            for n in steps
        ]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 2.0) < 0.2, (errors, slope)


def test_registered_objective_and_solver_train_and_sample(tmp_path):
    config = tiny_config(num_steps=10, checkpoint_every=10)
    config.objective.name = "endpoint_regression"
    config.eval.samplers = ("ralston:2",)
    exp = Experiment(config)
    assert isinstance(exp.objective, endpoint_regression.EndpointRegression)
    assert "endpoint_regression" in objectives.objective_names()
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 10
    assert np.isfinite(summary["final"]["sw_ralston_nfe2"])


def test_registered_metric_scores_a_trained_run_through_the_config(tmp_path):
    config = tiny_config(num_steps=10, checkpoint_every=10)
    config.eval.metrics = ("sw", "mean_distance")
    summary = train_and_evaluate(config, str(tmp_path))
    assert set(summary["final"]) == {"sw_euler_nfe2", "mean_distance_euler_nfe2"}
    # Sample the stored run again (its config names the metric) and score it.
    config, exp, params, _ = load_run(str(tmp_path))
    evaluator = Evaluator.for_experiment(config, exp, str(tmp_path))
    metrics, samples = evaluator(params)
    x, y = samples["euler_nfe2"].astype(np.float64), evaluator.reference.astype(np.float64)
    expected = np.linalg.norm(x.mean(0) - y.mean(0))
    assert metrics["mean_distance_euler_nfe2"] == pytest.approx(expected, rel=1e-12)
    assert metrics == summary["final"]  # the EMA weights the run's final evaluation scored


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match="endpoint_regression"):
        objectives.make_objective({"name": "nope"})
    with pytest.raises(ValueError, match="ralston"):
        solvers.make_solver("nope")
    with pytest.raises(ValueError, match="mean_distance"):
        METRICS["nope"]


def test_objective_hooks_have_typed_defaults():
    base = endpoint_regression.EndpointRegression()
    assert (base.average_velocity, base.data_free, base.frozen, base.batch_keys) == (
        False,
        False,
        (),
        ("x1",),
    )
    assert base.build_model(lambda use_end_time: ("net", use_end_time)) == ("net", False)
    tree = {"w": jnp.ones(2)}
    assert base.initial_params(tree, tree) is tree
    with pytest.raises(ValueError, match="do not match"):
        base.initial_params(tree, {"v": jnp.ones(2)})
    assert objectives.MeanFlow().build_model(lambda e: e) is True  # average velocity
    assert objectives.Reflow.batch_keys == ("x0", "x1")


def test_experiment_refuses_an_undeclared_objective():
    class LossOnly:
        def loss_fn(self, params, apply_fn, batch, key):
            return 0.0, {}

    with pytest.raises(TypeError, match="subclass flowjax.objectives.Objective"):
        Experiment(tiny_config(), objective=LossOnly())
