"""The command line: the main job's smoke test, a real SIGTERM, and flag errors (subprocesses)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flowjax.training import Checkpointer, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "--config.model.hidden=16",
    "--config.model.depth=1",
    "--config.train.batch_size=32",
    "--config.train.progress=False",
    "--config.eval.samplers=('euler:2',)",
    "--config.eval.num_samples=128",
    "--config.eval.num_kernel_samples=128",
]


def _main(workdir, *flags, config="configs/toy2d_rf.py"):
    return [
        sys.executable,
        "-m",
        "flowjax.main",
        f"--config={config}",
        f"--workdir={workdir}",
        *flags,
    ]


def _run(cmd, timeout=300):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_main_job_one_step_smoke(tmp_path):
    out = _run(_main(tmp_path, *TINY, "--config.train.num_steps=1"))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 1 and "sw_euler_nfe2" in summary["final"]
    assert (tmp_path / "samples.png").stat().st_size > 1000


@pytest.mark.slow
def test_digits_job_one_step_smoke(tmp_path):
    flags = [
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        f"--config.eval.feature_cache_dir={tmp_path / 'cache'}",
        "--config.model.base_channels=8",
        "--config.model.num_res_blocks=1",
        "--config.train.batch_size=16",
        "--config.train.num_steps=1",
        "--config.train.progress=False",
        "--config.eval.samplers=('euler:2',)",
        "--config.eval.num_samples=64",
    ]
    out = _run(_main(tmp_path / "w", *flags, config="configs/digits_rf.py"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["final"]["fd_euler_nfe2"] > 0
    assert (tmp_path / "w" / "samples.png").exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_the_next_run_resumes(tmp_path):
    """Send a real SIGTERM to a training process: it checkpoints, exits 0, and a re-run resumes."""
    flags = [
        *TINY,
        "--config.train.num_steps=1000000",
        "--config.train.log_every=10",
        "--config.train.checkpoint_every=1000000",
    ]
    proc = subprocess.Popen(
        _main(tmp_path, *flags), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "training did not start"
        time.sleep(0.2)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert time.time() - sent < 30
    saved = Checkpointer(str(tmp_path / "checkpoints")).latest_step()
    assert saved is not None and saved >= 20

    out = _run(
        _main(
            tmp_path,
            *TINY,
            f"--config.train.num_steps={saved + 10}",
            "--config.train.log_every=10",
            "--config.train.checkpoint_every=1000000",
        )
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps_run_this_session"] == 10 and summary["step"] == saved + 10
    assert max(r["step"] for r in read_metrics(str(tmp_path))) == saved + 10


def test_bad_flags_fail_fast_with_a_clear_message(tmp_path):
    out = _run(_main(tmp_path, "--config.optim.lrr=3e-4"))
    assert out.returncode == 2
    assert 'Did you mean "lr"' in out.stderr and "Traceback" not in out.stderr
    out = _run(
        _main(tmp_path, "--config.objective.time_sampler=lognormal", "--config.train.num_steps=1")
    )
    assert out.returncode == 2
    assert "unknown time sampler 'lognormal'" in out.stderr and "Traceback" not in out.stderr
    # A time sampler is one name,k=v spec: the commas reach the builder (shift=0 is refused
    # there), and the retired sub-section form names the spec that replaces it.
    spec = "--config.objective.time_sampler=logit_normal,loc=0.4,scale=1,shift=0"
    out = _run(_main(tmp_path, spec, "--config.train.num_steps=1"))
    assert out.returncode == 2 and "shift must be a finite number > 0; got 0" in out.stderr
    out = _run(_main(tmp_path, "--config.objective.logit_normal.loc=0.4"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "objective.time_sampler='logit_normal,loc=0.4'" in out.stderr
    out = _run(_main(tmp_path, config="configs/no_such_config.py"))
    assert out.returncode == 2
    assert "No such file" in out.stderr and "Traceback" not in out.stderr


def test_a_broken_config_file_is_one_line_naming_its_file_and_line(tmp_path):
    """A syntax error, an error at import and one raised by ``get_config``: one ERROR line
    ``config file <file>, line <n>: <Type>: <message>``, exit 2, no traceback, no workdir."""
    files = {
        "syntax.py": ("def get_config(arg=None:\n    return None\n", 1, "SyntaxError"),
        "indent.py": ("x = 1\n  y = 2\n", 2, "IndentationError: unexpected indent"),
        "name.py": ("import os\n\nX = undefined_name\n", 3, "NameError: name 'undefined_name'"),
        "variant.py": (  # the innermost line of the config file's own code
            "def _check(arg):\n    raise ValueError(f'no variant {arg}')\n\n\n"
            "def get_config(arg=None):\n    _check(arg)\n",
            2,
            "ValueError: no variant b",
        ),
    }
    procs = []
    for name, (text, _, _) in files.items():
        (tmp_path / name).write_text(text)
        cmd = _main(tmp_path / "w", config=f"{tmp_path / name}:b")
        procs.append((subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True), name))
    for (proc, name), (_, line, expected) in zip(procs, files.values()):
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"ERROR: config file {tmp_path / name}, line {line}: {expected}")
    assert not (tmp_path / "w").exists()
