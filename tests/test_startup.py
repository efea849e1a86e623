"""Command lines start without importing what they do not use: the modules each command loads
to do its work (on a toy run) import none of the heavy optional packages that only some runs
need (tfds and grain read image data sets, diffrax solves adaptively, matplotlib draws)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What the command lines import to work: each command module of flowjax.cli, and the job it
#: runs (flowjax.training for train, flowjax.workflows.* for the others).
COMMAND_MODULES = (
    "flowjax.cli",
    "flowjax.cli.train",
    "flowjax.training",
    "flowjax.cli.sample",
    "flowjax.workflows.sample",
    "flowjax.workflows.boss",
    "flowjax.cli.search",
    "flowjax.workflows.search",
    "flowjax.cli.calibrate",
    "flowjax.workflows.calibrate",
    "flowjax.solvers.learned",
    "flowjax.solvers.bespoke",
    "flowjax.cli.reflow",
    "flowjax.workflows.reflow",
    "flowjax.data.pairs",
    "flowjax.cli.score",
    "flowjax.workflows.score",
    "flowjax.evaluation.fid",
    "flowjax.training.evaluate",
)
HEAVY = (
    "tensorflow_datasets",
    "grain",
    "array_record",
    "diffrax",
    "matplotlib",
    "tensorboardX",
    "sklearn",
    "tensorflow",
    "torch",
)


def test_command_modules_import_no_heavy_optional_package():
    # Each command module defines its flags; they are removed after its import so that the
    # next one can define its own (all in one process, one JAX import).
    code = (
        "import importlib, json, sys\n"
        "from absl import flags\n"
        f"for m in {COMMAND_MODULES!r}:\n"
        "    before = set(flags.FLAGS)\n"
        "    importlib.import_module(m)\n"
        "    for name in set(flags.FLAGS) - before: delattr(flags.FLAGS, name)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
