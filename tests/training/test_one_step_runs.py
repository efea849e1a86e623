"""The one-step routes through the ordinary training loop, sampler CLI and reflow CLI, on tiny runs:
MeanFlow (flow-map sampling, kind checks), reflow from a teacher's pairs, initialisation."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowjax.config_files import load_config
from flowjax.data import is_complete, load_pairs
from flowjax.training import Experiment, load_run, train_and_evaluate
from flowjax.workflows import sample as sample_job
from flowjax.workflows.reflow import generate_pairs
from tests.training.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def rf_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("rf"))
    train_and_evaluate(tiny_config(num_steps=10), workdir)
    return workdir


@pytest.fixture(scope="module")
def meanflow_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("mf"))
    config = tiny_config(num_steps=10)
    config.model.time_scale = 1.0
    config.objective.name = "meanflow"
    config.objective.meanflow = dict(equal_fraction=0.5)
    config.eval.samplers = ("flowmap:1", "flowmap:2")
    summary = train_and_evaluate(config, workdir)
    return workdir, summary


def test_meanflow_trains_and_samples_with_the_flow_map(meanflow_run):
    workdir, summary = meanflow_run
    assert summary["step"] == 10
    assert {"sw_flowmap_nfe1", "sw_flowmap_nfe2"} <= set(summary["final"])
    out = sample_job.run_sampling(workdir, "flowmap", 4, num_samples=64)
    assert out["label"] == "flowmap_nfe4" and out["recompiled_for_new_noise"] is False


def test_sampler_of_the_wrong_kind_is_refused(meanflow_run, rf_run):
    workdir, _ = meanflow_run
    with pytest.raises(ValueError, match="average-velocity model .* solver 'flowmap'"):
        sample_job.run_sampling(workdir, "euler", 2, num_samples=64)
    with pytest.raises(ValueError, match="integrates an average-velocity model"):
        sample_job.run_sampling(rf_run, "flowmap", 2, num_samples=64)


def test_reflow_from_teacher_pairs(rf_run, tmp_path):
    pairs_dir = str(tmp_path / "pairs")
    generate_pairs(
        rf_run, pairs_dir, num_pairs=96, solver="rk4", nfe=8, shard_size=48, progress=False
    )
    assert is_complete(pairs_dir)
    data = load_pairs(pairs_dir)
    # x1 is the teacher's RK4 solution from x0: re-solving reproduces it.
    config, exp, params, _ = load_run(rf_run)
    from flowjax import solvers
    from flowjax.time import grids

    again = solvers.make_sampler(
        solvers.RK4(), lambda p, x, t, c: exp.apply_fn(p, x, t, c), grids.uniform_grid(2)
    )(params, data["x0"][:16])
    np.testing.assert_allclose(again, data["x1"][:16], rtol=1e-5, atol=1e-5)

    cfg = load_config("toy2d_reflow", "2rf")
    small = tiny_config(num_steps=6)
    cfg.model, cfg.train, cfg.eval = small.model, small.train, small.eval
    cfg.data.pairs_dir, cfg.init.workdir = pairs_dir, rf_run
    student = Experiment(cfg)
    start = student.init_state(loaded=student.pretrained_params())
    for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)  # k-RF starts from the teacher
    summary = train_and_evaluate(cfg, str(tmp_path / "2rf"))
    assert summary["step"] == 6 and "sw_euler_nfe2" in summary["final"]


def test_reflow_cli(rf_run, tmp_path):
    out = str(tmp_path / "cli_pairs")
    cmd = [
        sys.executable,
        "-m",
        "flowjax.reflow",
        f"--teacher={rf_run}",
        f"--out={out}",
        "--num_pairs=40",
        "--solver=euler",
        "--nfe=2",
        "--shard_size=20",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "complete" in proc.stdout and is_complete(out)
    bad = subprocess.run(
        cmd[:5] + ["--num_pairs=40", "--solver=heun", "--nfe=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "multiple of 2" in bad.stderr
