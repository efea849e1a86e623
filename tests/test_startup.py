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
    "flowjax.solvers.learned.bespoke",
    "flowjax.cli.reflow",
    "flowjax.workflows.reflow",
    "flowjax.data.pairs",
    "flowjax.cli.score",
    "flowjax.workflows.score",
    "flowjax.evaluation.fid",
    "flowjax.evaluation.evaluator",
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


def _modules_after(statement: str) -> list[str]:
    """The modules ``sys.modules`` holds after ``statement`` runs in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_package_facade_is_lazy():
    """``import flowjax`` imports no JAX and no flowjax submodule; a name is resolved on first
    use (``flowjax.LinearPath`` imports :mod:`flowjax.paths` then, and only it)."""
    loaded = _modules_after("import flowjax")
    assert "jax" not in loaded
    assert [m for m in loaded if m.startswith("flowjax.")] == []
    loaded = _modules_after("import flowjax; flowjax.LinearPath")
    assert "flowjax.paths" in loaded and "flowjax.solvers" not in loaded


def test_importing_the_solvers_imports_no_model_and_no_objective():
    """The solvers stand below models and objectives: ``import flowjax.solvers`` (through the
    package facade) imports no network, no objective and not flax."""
    loaded = _modules_after("import flowjax.solvers")
    heavy = [
        m
        for m in loaded
        if m.startswith(("flowjax.models", "flowjax.objectives", "flowjax.training")) or m == "flax"
    ]
    assert heavy == []
    assert "flowjax.solvers.euler" in loaded
