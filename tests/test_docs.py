"""The library guide (docs/guide.md) runs as written, with smaller numbers."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(REPO, "docs", "guide.md")

# The guide's sizes -> test sizes. Each left side must occur in the guide (so that a changed
# guide fails here rather than silently running the full-size job).
SMALLER = {
    "config.train.num_steps = 3000": "config.train.num_steps = 20",
    "config.eval.num_samples = 2000": "config.eval.num_samples = 256\n"
    "config.eval.num_kernel_samples = 256\nconfig.model.hidden = 32",
    "(2000, 2)": "(256, 2)",
}


def guide_code() -> str:
    with open(GUIDE, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "docs/guide.md has no python code block"
    return "\n".join(blocks)


def test_guide_sizes_are_found():
    code = guide_code()
    for old in SMALLER:
        assert old in code, f"docs/guide.md no longer contains {old!r}; update SMALLER"


@pytest.mark.slow
def test_guide_runs(tmp_path):
    code = guide_code()
    for old, new in SMALLER.items():
        code = code.replace(old, new)
    script = tmp_path / "guide.py"
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "moons_run" / "summary.json").exists()
    assert (tmp_path / "moons.png").stat().st_size > 1000
    assert "sw_euler_nfe4" in out.stdout
