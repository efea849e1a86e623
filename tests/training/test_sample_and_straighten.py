"""``flowjax.sample`` (checkpoint -> samples, metrics, BOSS schedules) and the BOSS straightening
fine-tune through the training loop, on a tiny trained toy run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flowjax.solvers import boss
from flowjax.training import load_run, train_and_evaluate
from flowjax.workflows import sample as sample_job
from flowjax.workflows.boss import straighten

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.training.conftest import tiny_config

    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config(num_steps=20)
    train_and_evaluate(config, workdir)
    return workdir, config


def test_sampling_writes_outputs_and_reuses_the_boss_schedule(trained):
    workdir, _ = trained
    stages = []
    out = sample_job.run_sampling(
        workdir, "dpm++2m", 3, "logsnr", num_samples=256, on_stage=stages.append
    )
    assert stages == list(sample_job.STAGES)  # what the CLI's progress bar follows
    assert out["label"] == "dpm++2m_nfe3_logsnr" and out["nfe"] == 3
    assert len(out["grid"]) == 4 and out["checkpoint_step"] == 20
    assert out["recompiled_for_new_noise"] is False
    assert out["samples_per_second"] > 0 and out["compile_seconds"] > 0
    assert {"sw_dpm++2m_nfe3_logsnr", "mmd_dpm++2m_nfe3_logsnr"} <= set(out["metrics"])
    for path in out["files"]:
        assert os.path.getsize(path) > 0
    assert np.load(out["files"][1])["x"].shape == (256, 2)

    kwargs = dict(num_samples=256, boss_fine_steps=20, boss_calibration=64)
    first = sample_job.run_sampling(workdir, "boss", 4, **kwargs)
    again = sample_job.run_sampling(workdir, "boss", 4, **kwargs)
    assert first["label"] == "euler_nfe4_boss"
    assert (first["boss"]["reused"], again["boss"]["reused"]) == (False, True)
    assert first["grid"] == again["grid"] and len(first["grid"]) == 5
    stored = boss.ScheduleStore(os.path.join(workdir, "boss_schedules.json")).load_all()
    assert list(stored) == [boss.schedule_key("euler", 4, 20, 64, "euler", 20)]
    heun = sample_job.run_sampling(workdir, "heun", 4, "boss", **kwargs)  # 2 Heun steps
    assert (
        len(heun["grid"]) == 3
        and len(boss.ScheduleStore(os.path.join(workdir, "boss_schedules.json")).load_all()) == 2
    )


def test_sampling_errors(trained, tmp_path):
    workdir, _ = trained
    with pytest.raises(ValueError, match="needs at least 5"):
        sample_job.run_sampling(workdir, "dpm++3m", 4)
    with pytest.raises(ValueError, match="unknown solver"):
        sample_job.run_sampling(workdir, "dpm++4m", 4)
    with pytest.raises(ValueError, match="no config.json"):
        sample_job.run_sampling(str(tmp_path), "euler", 4)
    with pytest.raises(ValueError, match="K=4 steps from a fine grid of N=2"):
        sample_job.run_sampling(workdir, "boss", 4, boss_fine_steps=2, num_samples=64)


def test_straightening_fine_tune_starts_from_the_given_weights(trained, tmp_path):
    workdir, config = trained
    _, exp, params, step = load_run(workdir)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (64, 2))

    def velocity(x, t, c):
        return exp.apply_fn(params, x, t, c)

    schedule = boss.compute_schedule(velocity, x0, 2, fine_steps=10, step=step)
    frozen = config.copy_and_resolve_references()
    frozen.train.num_steps = 4
    frozen.optim.lr = 0.0  # no update: the run must end exactly where it started
    summary = straighten(frozen, str(tmp_path / "frozen"), params, schedule, num_trajectories=64)
    _, _, same, _ = load_run(str(tmp_path / "frozen"))
    # The debiased EMA of a constant sequence is that constant up to float32 rounding of the
    # bias correction 1 - decay^n (flowjax.training.ema).
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-9)
    assert summary["step"] == 4
    assert summary["final"]  # the evaluator scored the fine-tuned model on the real data


@pytest.mark.slow
def test_command_line(trained):
    workdir, _ = trained
    cmd = [sys.executable, "-m", "flowjax.sample", f"--workdir={workdir}", "--num_samples=128"]
    out = subprocess.run(
        cmd + ["--solver=heun", "--nfe=4", "--grid=edm,rho=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "heun_nfe4_edm_rho3: NFE=4 samples/s=" in out.stdout
    report = json.loads(open(os.path.join(workdir, "samples", "heun_nfe4_edm_rho3.json")).read())
    assert report["recompiled_for_new_noise"] is False
    bad = subprocess.run(
        cmd + ["--solver=dpm++3m", "--nfe=4"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "needs at least 5" in bad.stderr


def test_eval_sampler_specs_take_an_optional_grid():
    from flowjax.solvers.spec import parse_sampler_spec, sampler_label

    assert parse_sampler_spec("euler:4") == ("euler", 4, "uniform")
    assert parse_sampler_spec("dpm++2m:8:logsnr") == ("dpm++2m", 8, "logsnr")
    assert parse_sampler_spec("heun:8:shifted,alpha=3") == ("heun", 8, "shifted,alpha=3")
    assert sampler_label("euler", 4) == "euler_nfe4"  # existing metric names are unchanged
    assert sampler_label("heun", 8, "shifted,alpha=3") == "heun_nfe8_shifted_alpha3"
    for bad in ("euler", "euler:x", ":4", "euler:4.5"):
        with pytest.raises(ValueError, match="solver:nfe"):
            parse_sampler_spec(bad)
