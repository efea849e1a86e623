"""An objective that declares its own sampler option, added in one file
(``tests/extensions/noise_temperature.py``): trained, sampled with the option through
``config.eval.samplers`` and through ``flowjax.sample --sampler``, and scored, with no edit of
the library; the option is refused where it is not declared."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flowjax.evaluation.evaluator import Evaluator
from flowjax.training import Experiment, load_run, train_and_evaluate
from flowjax.workflows import sample as sample_job
from tests.extensions import noise_temperature  # noqa: F401  (it registers)
from tests.training.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLERS = ("euler:4@temperature=0", "euler:4@temperature=0.5", "euler:4")


def _config():
    config = tiny_config(num_steps=10, checkpoint_every=10)
    config.objective.name = "temperature_flow_matching"
    config.eval.samplers = SAMPLERS
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("temperature"))
    summary = train_and_evaluate(_config(), workdir)
    return workdir, summary


def test_trained_sampled_with_its_option_and_scored(trained):
    workdir, summary = trained
    for label in ("euler_nfe4_temperature0", "euler_nfe4_temperature0.5", "euler_nfe4"):
        for metric in ("sw", "mmd", "energy"):
            assert np.isfinite(summary["final"][f"{metric}_{label}"]), (metric, label)
    # What the option does, against the standard sampler of the same run: temperature s
    # samples are the standard sampler's from s * x0; at s = 0 every sample is the same point.
    config, exp, params, _ = load_run(workdir)
    ev = Evaluator.for_experiment(config, exp, workdir)
    assert isinstance(exp.objective, noise_temperature.TemperatureFlowMatching)
    zero = np.asarray(ev.samplers["euler_nfe4_temperature0"](params, ev.x0, ev.labels))
    np.testing.assert_array_equal(zero, np.broadcast_to(zero[:1], zero.shape))
    half = ev.samplers["euler_nfe4_temperature0.5"](params, ev.x0, ev.labels)
    plain = ev.samplers["euler_nfe4"](params, 0.5 * ev.x0, ev.labels)
    # Two compiled programs of 4 Euler steps through a 16-wide MLP on O(1) float32 values: a
    # few ulps (1.2e-7 each) per step and layer, far below 1e-4.
    np.testing.assert_allclose(np.asarray(half), np.asarray(plain), atol=1e-4)
    assert float(np.std(np.asarray(half))) > 0.1  # not the s = 0 point


def test_the_sample_command_takes_the_option(trained):
    workdir, _ = trained
    report = sample_job.run_sampling(
        workdir, None, None, spec="euler:4@temperature=0.5", num_samples=64
    )
    assert report["label"] == "euler_nfe4_temperature0.5"
    assert np.isfinite(report["metrics"]["sw_euler_nfe4_temperature0.5"])


@pytest.mark.slow
def test_the_sample_command_line_takes_the_option(trained):
    workdir, _ = trained
    # `python -m flowjax.sample`, in a process that first imports the extension (registers it).
    code = (
        "import runpy, sys; import tests.extensions.noise_temperature; "
        "sys.argv[0] = 'flowjax.sample'; runpy.run_module('flowjax.sample', run_name='__main__')"
    )
    args = [f"--workdir={workdir}", "--sampler=euler:4@temperature=0", "--num_samples=32"]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "euler_nfe4_temperature0: NFE=4" in out.stdout
    path = os.path.join(workdir, "samples", "euler_nfe4_temperature0.json")
    with open(path, encoding="utf-8") as f:
        assert np.isfinite(json.load(f)["metrics"]["sw_euler_nfe4_temperature0"])


def test_an_undeclared_option_is_refused_with_the_declared_ones():
    config = _config()
    exp = Experiment(config)
    config.eval.samplers = ("euler:4@temperatur=0.5",)
    with pytest.raises(ValueError, match="@temperature=V\\[/V...\\] \\(the scale of") as err:
        Evaluator.for_experiment(config, exp, "/nonexistent")
    assert "\n" not in str(err.value)
    config.objective.name = "flow_matching"  # the same option where it is not declared
    config.eval.samplers = ("euler:4@temperature=0.5",)
    with pytest.raises(ValueError, match="the options of objective FlowMatching: none"):
        Evaluator.for_experiment(config, Experiment(config), "/nonexistent")
