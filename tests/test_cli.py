"""The command lines: one console script, one shape, documented and answering ``--help``.

- every ``flowjax COMMAND`` of docs/cli.md is a registered command, every registered command
  has its section there, and each answers ``--help`` with its docstring and every flag it
  defines, each with its explanation;
- the ``flowjax --help`` table's line of each command is its module's first docstring line;
- the console script that setup.py installs is :func:`flowjax.cli.run`; it refuses an unknown
  command and a bad flag in one ``ERROR:`` line (exit 2);
- a ``python -m flowjax.<command>`` shim runs the same command.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest

import flowjax.cli as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_MD = os.path.join(REPO, "docs", "cli.md")
ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def documented_commands() -> set[str]:
    """Every ``flowjax COMMAND`` docs/cli.md writes as code: in backticks (headings, tables,
    prose) or at the start of an indented example line."""
    with open(CLI_MD, encoding="utf-8") as f:
        text = f.read()
    return set(re.findall(r"(?:^ {4}|`)flowjax ([a-z][a-z-]*)\b", text, re.M))


def module_docstring(module: str) -> str:
    path = os.path.join(REPO, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def test_docs_and_command_table_agree():
    documented = documented_commands()
    assert documented == set(cli.COMMANDS), (
        f"in docs/cli.md only: {sorted(documented - set(cli.COMMANDS))}; "
        f"registered only: {sorted(set(cli.COMMANDS) - documented)}"
    )
    with open(CLI_MD, encoding="utf-8") as f:
        headings = set(re.findall(r"^## `flowjax ([a-z-]+)`$", f.read(), re.M))
    assert headings == set(cli.COMMANDS)
    for name, (module, line) in cli.COMMANDS.items():
        assert module_docstring(module).splitlines()[0] == line, name


# In one child process (one JAX import): each command's --help, then its flags removed so that
# the next command can define its own (every command module defines its flags at import).
_HELP_ALL = """
import contextlib, importlib, io, json, sys
from absl import flags
out = {}
for name, module in %r:
    before = set(flags.FLAGS)
    mod = importlib.import_module(module)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            mod.run(["flowjax " + name, "--help"])
            status = None
        except SystemExit as e:
            status = e.code
    own = [(f.name, f.help) for f in flags.FLAGS.get_flags_for_module(module)]
    out[name] = {"status": status, "text": buf.getvalue(), "flags": own}
    for flag in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag)
heavy = [m for m in ("jax", "flax", "flowjax.training", "flowjax.workflows", "tensorflow_datasets",
                   "torch") if m in sys.modules]
print(json.dumps({"commands": out, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def helps():
    pairs = sorted((name, module) for name, (module, _) in cli.COMMANDS.items())
    result = subprocess.run(
        [sys.executable, "-c", _HELP_ALL % (pairs,)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_documented_command_answers_help_with_each_flag_explained(helps):
    # --help loads no JAX, no job and no training (the jobs are imported inside main; the
    # default config of `train` is built without JAX).
    assert helps["heavy"] == []
    for name in sorted(documented_commands()):
        got = helps["commands"][name]
        assert got["status"] == 0, name
        doc_first = module_docstring(cli.COMMANDS[name][0]).splitlines()[0]
        assert got["text"].startswith(doc_first), name
        assert got["flags"], f"flowjax {name} defines no flags"
        for flag, text in got["flags"]:
            assert (text or "").strip(), f"flowjax {name} --{flag}: no explanation"
            listed = f"--{flag}:" in got["text"] or f"--[no]{flag}:" in got["text"]  # a bool
            assert listed, f"flowjax {name} --help does not list --{flag}"


def test_console_script_is_installed_and_dispatches(capsys):
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        assert '"flowjax = flowjax.cli:run"' in f.read()
    with pytest.raises(SystemExit) as info:
        cli.run(["flowjax", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name, (_, line) in cli.COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(line)}$", text, re.M), name
    with pytest.raises(SystemExit) as info:
        cli.run(["flowjax", "trian", "--config=toy2d_rf"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: unknown command 'trian'") and err.count("\n") == 1
    # What the installed script runs (`sys.exit(run())`), on a bad flag value: one line, exit 2.
    code = "import sys; from flowjax.cli import run; sys.argv = %r; sys.exit(run())"
    argv = ["flowjax", "sample", "--workdir=x", "--nfe=two"]
    result = subprocess.run(
        [sys.executable, "-c", code % argv], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("ERROR: bad command-line flag: flag --nfe=two")
    assert result.stderr.count("\n") == 1


def test_python_m_shim_runs_the_command(helps):
    result = subprocess.run(
        [sys.executable, "-m", "flowjax.sample", "--help"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == helps["commands"]["sample"]["text"]


_OVERRIDES = """
import contextlib, io, json, sys
sys.argv = ["flowjax", "train", "--config.nope=1"]  # what ml_collections would read at import
from flowjax.cli import train
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        train._parse_flags(["flowjax train", "--config.nope=1", "--workdir=w"])
        status = 0
    except SystemExit as e:
        status = e.code
train._parse_flags(["flowjax train", "--config.train.num_steps=7", "--workdir=w"])
config = train.FLAGS.config
print(json.dumps([status, err.getvalue(), config.train.num_steps, config.data.name]))
"""


def test_config_overrides_without_config_use_the_default_config_or_fail_in_one_line():
    # --config.FIELD=VALUE without --config: applied to the default config (toy2d_rf); a field
    # that does not exist is one ERROR line and exit 2 (it was a traceback at import).
    result = subprocess.run(
        [sys.executable, "-c", _OVERRIDES], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    status, err, num_steps, data = json.loads(result.stdout.strip().splitlines()[-1])
    assert status == 2 and err.startswith("ERROR: bad command-line flag: nope")
    assert err.count("\n") == 1
    assert (num_steps, data) == (7, "checkerboard")
