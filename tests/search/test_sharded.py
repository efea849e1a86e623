"""Search with particles sharded over 8 simulated CPU devices equals the unsharded search."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_sharded_search_matches_one_device(tmp_path):
    out = tmp_path / "sharded.json"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        PYTHONPATH=REPO,
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "search", "sharded_worker.py"), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report.pop("device_count") == 8
    for method, r in report.items():
        assert r["samples_diff"] < 1e-4 and r["rewards_diff"] < 1e-4, (method, r)
        assert r["nfe"][0] == r["nfe"][1] <= 48, method
