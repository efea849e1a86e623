"""Faults only a real process shows: two writers, SIGTERM during the setup and during a slow
evaluation, a checkpoint directory lost mid-run, bad flags, and pair shards written by
separate processes (subprocesses; slow)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from flowjax.training import Checkpointer, read_metrics

from .test_main_cli import REPO, TINY, _main, _run

pytestmark = pytest.mark.slow


class _Proc:
    """A training process whose stderr is collected by a thread (so it can be polled)."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.err = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stderr:
            self.err.append(line)

    @property
    def stderr(self):
        return "".join(self.err)

    def wait_for(self, predicate, what, timeout=300):
        deadline = time.time() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited before {what}: {self.stderr[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def finish(self, timeout):
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return self.proc.returncode


def _one_line_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1, out.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_second_writer_sigterm_in_evaluation_resume_and_changed_config(tmp_path):
    """One run, five faults: a second writer is refused at once naming the holder; SIGTERM
    during a slow evaluation exits 0 within seconds with the checkpoint kept; the run resumes
    with cheaper evaluation settings; a changed width is refused and moves nothing."""
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    workdir = tmp_path / "home" / "run"  # passed as ~/run: the tilde is expanded
    slow_eval = [
        "--config.train.batch_size=32",
        "--config.train.progress=False",
        "--config.train.num_steps=1000000",
        "--config.train.log_every=10",
        "--config.train.eval_every=20",
        "--config.train.checkpoint_every=1000000",
        # The 0.5M-parameter MLP with RK4 at NFE 400 on 20 000 samples: minutes of evaluation.
        "--config.eval.samplers=('rk4:400',)",
        "--config.eval.num_samples=20000",
        "--config.eval.num_kernel_samples=128",
    ]
    first = _Proc(_main("~/run", *slow_eval, "--verbosity=0"), env=env)  # INFO: the stages
    first.wait_for(lambda: (workdir / "LOCK").exists(), "the lock")
    assert not (tmp_path / "~").exists() and not os.path.exists(os.path.join(REPO, "~"))

    second = _run(_main(workdir, *TINY, "--config.optim.lr=1e-4"))
    _one_line_error(second, f"is in use by pid {first.proc.pid} on host")

    first.wait_for(lambda: "evaluating at step 20" in first.stderr, "the evaluation")
    time.sleep(2)
    sent = time.time()
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish(timeout=120) == 0, first.stderr[-3000:]
    took = time.time() - sent
    assert took < 15, took
    assert "SIGTERM during the evaluation at step 20: abandoned it" in first.stderr
    assert Checkpointer(str(workdir / "checkpoints")).steps() == [20]
    assert not (workdir / "LOCK").exists()

    cheap_eval = [a for a in slow_eval if "eval." not in a and "num_steps" not in a] + [
        "--config.train.num_steps=22",
        "--config.eval.samplers=('euler:2',)",
        "--config.eval.num_samples=128",
    ]
    out = _run(_main(workdir, *cheap_eval), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 22 and summary["steps_run_this_session"] == 2
    steps = [r["step"] for r in read_metrics(str(workdir)) if "train/loss" in r]
    assert steps == sorted(set(steps)) == [10, 20, 22]

    listing = sorted(os.listdir(workdir / "checkpoints"))
    out = _run(_main(workdir, *cheap_eval, "--config.model.hidden=128"))
    _one_line_error(out, "model.hidden (256 -> 128)", "other shapes", "use a new workdir")
    assert "--allow_config_change" not in out.stderr  # it would only lead to a second error
    out = _run(_main(workdir, *cheap_eval, "--config.model.hidden=128", "--config_change_ok"))
    _one_line_error(out, "holds a state of another shape")
    assert sorted(os.listdir(workdir / "checkpoints")) == listing
    assert not (workdir / "checkpoints.unreadable").exists()


def test_sigterm_during_the_setup_exits_0(tmp_path):
    proc = _Proc(_main(tmp_path, "--config.train.progress=False", "--verbosity=0"))
    proc.wait_for(lambda: "devices:" in proc.stderr, "the setup")
    time.sleep(0.5)
    sent = time.time()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.finish(timeout=60) == 0, proc.stderr[-3000:]
    assert time.time() - sent < 10
    assert "SIGTERM during the setup" in proc.stderr
    assert not (tmp_path / "LOCK").exists()


def test_a_lost_checkpoint_directory_stops_the_run_at_the_failing_save(tmp_path):
    """The checkpoint directory becomes a file mid-run: one line naming it, exit 1, no hang."""
    flags = [
        *TINY,
        "--config.train.num_steps=1000000",
        "--config.train.log_every=2",
        "--config.train.checkpoint_every=10",
        "--config.train.async_checkpoint=True",
    ]
    proc = _Proc(_main(tmp_path, *flags))
    ckpts = tmp_path / "checkpoints"
    proc.wait_for(lambda: (ckpts / "10").exists(), "the first checkpoint")
    os.rename(ckpts, tmp_path / "moved_away")  # atomic, even while a save is writing there
    ckpts.write_text("not a directory")
    broken = time.time()
    assert proc.finish(timeout=120) == 1, proc.stderr[-3000:]
    assert time.time() - broken < 30
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1 and f"in {ckpts} failed" in errors[0], proc.stderr[-3000:]


def test_bad_flags_and_values_are_one_line_errors(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases = [
        (_main(tmp_path / "a", "--config.train.keep_checkpoints=0"), "keep_checkpoints=0"),
        (_main(tmp_path / "b", "--config.train.num_steps=-5"), "num_steps=-5"),
        (_main(tmp_path / "c", "--config.train.checkpoint_every=-7"), "checkpoint_every=-7"),
        (_main(tmp_path / "d", "--config.train.log_every=0"), "log_every=0"),
        (_main(tmp_path / "e", "--config.train.batch_size=0"), "batch_size=0"),
        (_main(tmp_path / "f", "--config.eval.samplers=('euler',)"), "eval sampler 'euler'"),
        (_main(afile), f"workdir {afile} is a file"),
        (
            _main(tmp_path / "g", f"--config.data.data_dir={afile}", config="configs/digits_rf.py"),
            "data.data_dir=",
        ),
        (
            [sys.executable, "-m", "flowjax.sample", f"--workdir={broken}", "--nfe=2"],
            f"cannot parse {broken / 'config.json'}",
        ),
        (
            [
                sys.executable,
                "-m",
                "flowjax.sample",
                f"--workdir={broken}",
                "--nfe=2",
                "--num_samples=0",
            ],
            "num_samples=0: must be >= 1",
        ),
    ]
    procs = [
        (
            subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            fragment,
        )
        for cmd, fragment in cases
    ]
    for proc, fragment in procs:
        _, err = proc.communicate(timeout=300)
        _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), fragment)


_WRITE_SHARD = """
import sys
import numpy as np
from flowjax.data import pairs

def shard_fn(index, start, stop):
    rng = np.random.default_rng(index)
    n = stop - start
    return {"x0": rng.normal(size=(n, 2)).astype(np.float32),
            "x1": rng.normal(size=(n, 2)).astype(np.float32),
            "label": rng.integers(0, 3, size=n)}

pairs.write_pairs(sys.argv[1], shard_fn, num_pairs=64, shard_size=64, element_shape=(2,),
                  num_classes=3, progress=False)
"""


def test_pair_shards_are_byte_identical_across_processes(tmp_path):
    """The same shard written by separate processes (each with its own hash seed) has the same
    bytes: record fields are serialised in sorted order, not in a per-process map order."""
    outs = [tmp_path / f"p{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITE_SHARD, str(out)],
            cwd=REPO,
            env=dict(os.environ, PYTHONHASHSEED=str(i)),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]

    def shard_bytes(out):
        names = sorted(n for n in os.listdir(out) if n.startswith("reflow_pairs-"))
        assert names
        return [open(os.path.join(out, n), "rb").read() for n in names]

    first = shard_bytes(outs[0])
    for out in outs[1:]:
        assert shard_bytes(out) == first, out


def test_refused_runs_are_one_line_exit_2_and_leave_no_workdir(tmp_path):
    """Issue 23: reflow without pairs, a text file named .npz and an optimizer value out of
    range, each through the command line: one ERROR line, exit 2, the workdir not created."""
    table = tmp_path / "table.npz"
    table.write_text("x,y\n1,2\n")
    cases = [
        (
            _main(tmp_path / "a", *TINY, config="configs/toy2d_reflow.py"),
            "set config.data.pairs_dir",
        ),
        (
            _main(tmp_path / "b", *TINY, "--config.data.kind=array", f"--config.data.path={table}"),
            f"{table} is not a NumPy .npz file: it is a text file",
        ),
        (_main(tmp_path / "c", *TINY, "--config.optim.b2=2"), "optim.b2=2.0: expected"),
    ]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd, _ in cases
    ]
    for proc, (_, fragment) in zip(procs, cases):
        _, err = proc.communicate(timeout=300)
        _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), fragment)
        assert "pickle" not in err
    assert sorted(os.listdir(tmp_path)) == ["table.npz"]
