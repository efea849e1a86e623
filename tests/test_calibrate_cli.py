"""End to end on a tiny trained run: ``flowjax calibrate`` stores a learned grid,
``flowjax sample --grid=learned`` / ``--solver=bespoke-NAME`` use the stored setting
without recalibrating, and a missing setting is a one-line error naming the calibrate command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flowjax.solvers import learned
from flowjax.training import train_and_evaluate
from flowjax.workflows import calibrate
from flowjax.workflows import sample as sample_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--calibration=16", "--reference=rk4:16", "--iters=10"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.training.conftest import tiny_config

    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(tiny_config(num_steps=20), workdir)
    return workdir


def cli(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def stored(workdir):
    with open(os.path.join(workdir, learned.STORE_NAME), encoding="utf-8") as f:
        return json.load(f)


def test_calibrate_then_sample_reuses_the_stored_setting(trained):
    workdir = trained
    out = cli("flowjax.calibrate", f"--workdir={workdir}", "--solver=unipc2", "--nfe=4", *SMALL)
    assert out.returncode == 0, out.stderr[-2000:]
    key = learned.schedule_key("grid", "unipc2", 4, 16, "rk4:16", 0, 20, init="best")
    assert f"{key}: computed; calibration NFE=" in out.stdout
    first = stored(workdir)
    assert list(first) == [key] and first[key]["init"] in learned.INIT_CANDIDATES
    times = first[key]["times"]
    assert len(times) == 5 and np.all(np.diff(times) > 0)

    # Sampling reads the stored grid; it never calibrates (the store is unchanged).
    out = cli(
        "flowjax.sample",
        f"--workdir={workdir}",
        "--solver=unipc2",
        "--nfe=4",
        "--grid=learned",
        "--num_samples=128",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "unipc2_nfe4_learned: NFE=4 samples/s=" in out.stdout
    report = json.loads(open(os.path.join(workdir, "samples", "unipc2_nfe4_learned.json")).read())
    assert report["grid"] == times and report["learned"]["times"] == times
    assert report["recompiled_for_new_noise"] is False
    assert np.load(os.path.join(workdir, "samples", "unipc2_nfe4_learned.npz"))["x"].shape == (
        128,
        2,
    )
    assert stored(workdir) == first

    # Calibrating the same key again reuses it.
    kw = dict(calibration=16, reference="rk4:16", iters=10, progress=False)
    again = calibrate.calibrate_run(workdir, "unipc2", 4, **kw)
    assert again["reused"] and again["key"] == key and stored(workdir) == first


def test_missing_setting_is_a_one_line_error_then_bespoke_samples(trained):
    workdir = trained
    out = cli("flowjax.sample", f"--workdir={workdir}", "--solver=bespoke-unipc2", "--nfe=4")
    assert out.returncode == 2
    err = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
    assert len(err) == 1, out.stderr[-2000:]
    assert f"run flowjax calibrate --workdir={workdir} --solver=bespoke-unipc2 --nfe=4" in err[0]
    kw = dict(calibration=16, reference="rk4:16", iters=10, progress=False)
    made = calibrate.calibrate_run(workdir, "bespoke-unipc2", 4, **kw)
    assert not made["reused"] and made["schedule"]["kind"] == "bespoke"
    before = stored(workdir)
    report = sample_job.run_sampling(workdir, "bespoke-unipc2", 4, num_samples=128)
    assert report["label"] == "unipc2_nfe4_bespoke" and report["nfe"] == 4
    assert report["learned"]["weights"] == made["schedule"]["weights"]
    for path in report["files"]:
        assert os.path.getsize(path) > 0
    assert np.all(np.isfinite(np.load(report["files"][1])["x"]))
    assert stored(workdir) == before
