"""``python -m flowjax.search`` on a tiny trained toy run (a checkerboard): a reward declared
for other data is refused in one line, the user's own ``path/to/file.py:function`` reward runs
end to end (the rewards it reports are that function of the samples it wrote), and a
non-callable, unimportable or wrong-shape reward is one line before any search. The command
and a read-only restore print no orbax note and no absl INFO lines."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from flowjax.search import make_reward
from flowjax.training import load_run, train_and_evaluate
from flowjax.workflows.search import run_search

ABSL_INFO = re.compile(r"^I\d{4} ", re.M)  # absl's INFO line prefix, e.g. "I1207 17:22:40"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

USER_REWARDS = """
import jax.numpy as jnp

NOT_A_FUNCTION = 3


def near_origin(x):
    return -jnp.sum(x.reshape(x.shape[0], -1) ** 2, axis=-1)


def one_number(x):
    return jnp.sum(x)


def on_moons(x):
    return x[:, 0]


on_moons.data = "moons"
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.training.conftest import tiny_config

    root = tmp_path_factory.mktemp("search_cli")
    workdir = str(root / "run")
    train_and_evaluate(tiny_config(num_steps=10), workdir)  # data: checkerboard
    rewards = root / "my_rewards.py"
    rewards.write_text(USER_REWARDS)
    return workdir, str(rewards)


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "flowjax.search", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_own_reward_runs_end_to_end_and_a_mismatched_reward_is_refused(trained, tmp_path):
    workdir, rewards = trained
    out_dir = str(tmp_path / "out")
    common = [f"--workdir={workdir}", "--method=bon", "--budget=6", "--steps=2", "--chunk=4"]
    done = cli(*common, f"--reward={rewards}:near_origin", "--num_samples=8", f"--out={out_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(out_dir, "bon_vp-sde_nfe6.json"), encoding="utf-8") as f:
        report = json.load(f)
    saved = np.load(os.path.join(out_dir, "bon_vp-sde_nfe6.npz"))
    # The reported rewards are the user's function of the samples written (recomputed here).
    expected = -np.sum(saved["samples"].astype(np.float64) ** 2, axis=-1)
    np.testing.assert_allclose(saved["rewards"], expected, rtol=1e-5, atol=1e-6)
    assert report["nfe_spent_per_sample"] <= 6 and report["num_samples"] == 8
    # Quiet: no orbax note about the read-only restore, no absl-formatted INFO lines.
    assert "read_only" not in done.stderr, done.stderr
    assert not ABSL_INFO.search(done.stderr), done.stderr

    # toy_mode's modes are 8gaussians' centres: refused on this checkerboard run, one line.
    refused = cli(*common, "--reward=toy_mode,mode=0", f"--out={tmp_path / 'refused'}")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "fits the '8gaussians' data" in lines[0] and "'checkerboard'" in lines[0]
    assert "--reward=module:function" in lines[0]
    assert not os.path.exists(tmp_path / "refused")  # nothing written


def test_rewards_declare_their_data_and_bad_own_rewards_are_one_line(trained, tmp_path):
    workdir, rewards = trained
    kw = dict(method="bon", budget=4, num_steps=2, num_samples=2, progress=False)
    assert make_reward("toy_mode,mode=1").data == "8gaussians"
    assert make_reward("toy_mode,x=0.5,y=0").data is None  # a point of one's own: any 2-D data
    assert make_reward("constant").data is None
    assert make_reward(f"{rewards}:near_origin").data is None
    with pytest.raises(ValueError, match="fits the 'moons' data but this run was trained on"):
        run_search(workdir, reward=f"{rewards}:on_moons", out_dir=str(tmp_path / "a"), **kw)
    # A toy_mode reward at a point of the user's choice fits this run.
    ok = run_search(workdir, reward="toy_mode,x=0,y=0", out_dir=str(tmp_path / "b"), **kw)
    assert ok["nfe_spent_per_sample"] <= 4
    cases = {
        f"{rewards}:NOT_A_FUNCTION": "is not callable",
        f"{rewards}:missing": "has no attribute 'missing'",
        f"{tmp_path}/absent.py:near_origin": "cannot import",
        "no_such_module_xyz:f": "cannot import 'no_such_module_xyz'",
        f"{rewards}:near_origin,scale=2": "takes no options",
        f"{rewards}:one_number": "one value per sample",
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError, match=message) as err:
            run_search(workdir, reward=spec, out_dir=str(tmp_path / "c"), **kw)
        assert "\n" not in str(err.value), spec
    assert not os.path.exists(tmp_path / "c")


def test_restoring_a_run_read_only_prints_no_orbax_note(trained):
    workdir, _ = trained
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.levelno, record.getMessage()))

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("absl")]  # what would reach the screen
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        _, _, _, step = load_run(workdir)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    assert step == 10
    assert seen, "nothing was logged at DEBUG: the capture is not working"
    # What a command prints by default (WARNING and above): no note about read-only options.
    shown = [m for level, m in seen if level >= logging.WARNING]
    assert not [m for m in shown if "read_only" in m or "read only" in m], shown
