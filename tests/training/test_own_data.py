"""Own data through the training job and the sampling CLI: a run records its data (name,
shape, fingerprint), names it in its figures and summary, and ``flowjax.sample`` scores against
that data or says why it cannot."""

import json
import os

import jax
import numpy as np
import pytest

from flowjax import plotting
from flowjax import sampling as sample_cli
from flowjax.data import ToySource, sample_toy
from flowjax.training import train_and_evaluate


@pytest.fixture
def titles(monkeypatch):
    """The titles of the scatter figures written (the real plotting still runs)."""
    seen, real = [], plotting.scatter_panels

    def spy(*args, **kwargs):
        seen.append(kwargs.get("title"))
        return real(*args, **kwargs)

    monkeypatch.setattr(plotting, "scatter_panels", spy)
    return seen


@pytest.mark.slow
def test_array_data_run_records_its_data_and_is_sampled_against_it(tmp_path, make_config, titles):
    path = tmp_path / "moons.npz"
    np.savez(path, x=np.asarray(sample_toy("moons", jax.random.PRNGKey(1), 600)))
    config = make_config()
    config.data.kind, config.data.path = "array", str(path)
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)

    record = json.loads(open(os.path.join(workdir, "config.json")).read())["dataset"]
    assert record["name"] == "moons" and record["kind"] == "points"
    assert record["element_shape"] == [2] and record["built_from"] == "config"
    assert record["path"] == str(path) and len(record["fingerprint"]) == 64
    assert summary["dataset"] == record
    assert titles[-1].startswith("moons: EMA weights") and "checkerboard" not in titles[-1]

    # The CLI rebuilds the run's own data: the same noise, weights and held-out rows give the
    # training evaluator's final numbers.
    out = sample_cli.run_sampling(workdir, "euler", 2, num_samples=128)
    assert "metrics_skipped" not in out
    for key in ("sw_euler_nfe2", "mmd_euler_nfe2", "energy_euler_nfe2"):
        np.testing.assert_allclose(out["metrics"][key], summary["final"][key], rtol=1e-5)

    # Changed data: samples, no scores, and the reason.
    x = np.load(path)["x"]
    x[0] += 0.5
    np.savez(path, x=x)
    changed = sample_cli.run_sampling(workdir, "euler", 2, num_samples=128)
    assert changed["metrics"] == {} and "has changed since training" in changed["metrics_skipped"]
    assert all(os.path.getsize(f) > 0 for f in changed["files"])
    os.remove(path)
    gone = sample_cli.run_sampling(workdir, "euler", 2, num_samples=128)
    assert gone["metrics"] == {} and "cannot be rebuilt" in gone["metrics_skipped"]
    assert "does not exist" in gone["metrics_skipped"]


@pytest.mark.slow
def test_data_passed_in_code_is_named_and_not_scored_against_the_config_data(
    tmp_path, make_config, titles
):
    config = make_config()  # its data section says checkerboard
    moons = ToySource("moons", batch_size=config.train.batch_size, seed=config.seed)
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir, data=moons)
    record = json.loads(open(os.path.join(workdir, "config.json")).read())["dataset"]
    assert (record["name"], record["built_from"]) == ("moons", "code")
    assert summary["dataset"]["name"] == "moons"
    assert titles[-1].startswith("moons: EMA weights")

    out = sample_cli.run_sampling(workdir, "euler", 2, num_samples=128)
    assert out["metrics"] == {}
    assert "data-based metrics skipped" in out["metrics_skipped"]
    assert "passed in code ('moons' (2,))" in out["metrics_skipped"]
    assert np.load(out["files"][1])["x"].shape == (128, 2)  # the samples are still written
