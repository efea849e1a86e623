"""The repository as a whole: the curated API, config lookup, no machine paths, docs links."""

import ast
import importlib
import logging
import os
import pkgutil
import re
import subprocess
import sys
import types

import pytest

import flowjax
from flowjax import config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _packages(package):
    """``package`` and every subpackage below it (imported; plain modules are not)."""
    yield package
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            yield from _packages(importlib.import_module(f"{package.__name__}.{info.name}"))


def test_no_exported_name_shadows_a_submodule():
    """``import flowjax.x`` rebinds ``flowjax.x`` to the module: no exported ``x`` may be one.

    (``flowjax.sample`` was the solver driver until ``import flowjax.sample``, the sampling
    command line, replaced it; the driver is exported as ``flowjax.integrate``.)
    """
    submodules = {info.name for info in pkgutil.iter_modules(flowjax.__path__)}
    bad = []
    for name in flowjax.__all__:
        value = getattr(flowjax, name)
        is_that_module = isinstance(value, types.ModuleType) and value.__name__ == f"flowjax.{name}"
        if name in submodules and not is_that_module:
            bad.append(name)
    assert not bad, f"flowjax exports names that are also submodules: {bad}"
    assert "sample" in submodules  # the command-line module the old export collided with


def test_every_exported_name_exists():
    for package in _packages(flowjax):
        for name in getattr(package, "__all__", []):
            assert hasattr(package, name), f"{package.__name__}.__all__ names missing {name}"


def test_integrate_is_the_solver_driver():
    assert flowjax.integrate is flowjax.solvers.sample


# ------------------------------------------------------------------ configs by name or path


def test_configs_resolve_by_name_and_by_path(tmp_path, monkeypatch):
    names = config_files.config_names()
    assert {"toy2d_rf", "toy2d_reflow", "digits_rf"} <= set(names)
    bundled = os.path.join(config_files.CONFIG_DIR, "toy2d_rf.py")
    assert config_files.resolve("toy2d_rf") == bundled
    assert config_files.resolve("toy2d_reflow:2rf") == (
        os.path.join(config_files.CONFIG_DIR, "toy2d_reflow.py") + ":2rf"
    )
    own = tmp_path / "mine.py"
    own.write_text("def get_config(arg=None):\n    return {'arg': arg}\n")
    assert config_files.resolve(f"{own}:x") == f"{own}:x"
    assert config_files.load_config(f"{own}:x") == {"arg": "x"}
    assert config_files.load_config(str(own), "y") == {"arg": "y"}
    # Outside a clone, "configs/<name>.py" falls back to the bundled file of that name.
    monkeypatch.chdir(tmp_path)
    assert config_files.resolve("configs/toy2d_rf.py:a") == bundled + ":a"


def test_config_args_select_the_variant():
    by_suffix = config_files.load_config("toy2d_reflow:distill2")
    by_arg = config_files.load_config("toy2d_reflow", "distill2")
    assert by_suffix.to_dict() == by_arg.to_dict()
    assert by_suffix.to_dict() != config_files.load_config("toy2d_reflow:2rf").to_dict()


def test_renamed_configs_load_by_their_old_names_and_log_the_new_one(tmp_path, monkeypatch, caplog):
    """Runs, notebooks and CI name configs the old way (``reflow_toy2d:2rf``): each old name
    resolves to its renamed file, by name and as ``configs/<old>.py``, with one log line."""
    names = config_files.config_names()
    assert set(config_files.RENAMED.values()) <= set(names)
    assert not set(config_files.RENAMED) & set(names)
    monkeypatch.chdir(tmp_path)  # so that configs/<old>.py is not a file here
    for old, new in config_files.RENAMED.items():
        bundled = os.path.join(config_files.CONFIG_DIR, f"{new}.py")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="flowjax.config_files"):
            assert config_files.resolve(f"{old}:2rf") == bundled + ":2rf"
        assert len(caplog.records) == 1 and new in caplog.records[0].getMessage()
        assert config_files.resolve(f"configs/{old}.py") == bundled
    old = config_files.load_config("reflow_toy2d:rfpp").to_dict()
    assert old == config_files.load_config("toy2d_reflow:rfpp").to_dict()


def test_common_sections_are_not_a_config():
    """``configs/common.py`` holds the shared sections: no ``get_config``, not a bundled name."""
    assert os.path.isfile(os.path.join(config_files.CONFIG_DIR, "common.py"))
    names = config_files.config_names()
    assert "common" not in names
    with pytest.raises(FileNotFoundError, match="bundled names"):
        config_files.resolve("common")
    files = {f[:-3] for f in os.listdir(config_files.CONFIG_DIR) if f.endswith(".py")}
    assert files - set(names) == {"__init__", "common"}


def test_sharding_rule_tables_are_stated_only_in_the_common_sections():
    """A logical-axis rule table (a ``("batch", ...)`` rule) is written once, in common.py."""
    copies = []
    for name in config_files.config_names():
        with open(os.path.join(config_files.CONFIG_DIR, f"{name}.py"), encoding="utf-8") as f:
            if re.search(r"\(\s*[\"']batch[\"']\s*,", f.read()):
                copies.append(name)
    assert not copies, f"configs that copy a rule table instead of using common.py: {copies}"
    rules = config_files.load_config("imagenet256_dit").sharding.rules
    assert dict(rules)["batch"] == ("data", "fsdp")


def test_an_unknown_config_is_a_one_line_error_naming_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match=r"bundled names: .*toy2d_rf") as err:
        config_files.resolve("toy2d_rff")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="No such file: 'elsewhere/missing.py'"):
        config_files.resolve("elsewhere/missing.py")


def test_main_reports_an_unknown_config_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flowjax.main", "--config=nope", f"--workdir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("ERROR: No such file or bundled config: 'nope'")
    assert len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ committed text

# Absolute paths of one machine or one user: never in committed files. (A README may use a
# /tmp/... example workdir; those are everyone's paths, not one machine's.)
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|Users)/")


def _committed_text_files():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        path = os.path.join(REPO, rel)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            raw = f.read()
        if b"\0" in raw[:8192]:
            continue  # binary (PNG, npz)
        yield rel, raw.decode("utf-8", errors="replace")


def test_no_machine_paths_in_committed_text():
    if not os.path.isdir(os.path.join(REPO, ".git")) and not os.path.isfile(
        os.path.join(REPO, ".git")
    ):
        pytest.skip("not a git checkout")
    found = []
    for rel, text in _committed_text_files():
        for i, line in enumerate(text.splitlines(), 1):
            m = MACHINE_PATH.search(line)
            if m:
                found.append(f"{rel}:{i}: {line.strip()[:120]}")
    assert not found, "machine-specific paths:\n" + "\n".join(found)


def test_the_machine_path_pattern():
    r = "/"  # the examples are built so that this file does not contain them literally
    for hit in [r + "work/runs", "x=" + r + "root/a", "'" + r + "home/me/x'", "(" + r + "Users/b)"]:
        assert MACHINE_PATH.search(hit), hit
    for miss in ["/tmp/toy", "a/work/b", "gs://B/work/x", "~/work/x", "https://x.org/home/y"]:
        assert not MACHINE_PATH.search(miss), miss


# ------------------------------------------------------------------ links in the docs

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _markdown_files():
    yield os.path.join(REPO, "README.md")
    yield os.path.join(REPO, "experiments", "README.md")
    for root, _, files in os.walk(os.path.join(REPO, "docs")):
        for f in files:
            if f.endswith(".md"):
                yield os.path.join(root, f)


def _anchors(path):
    """GitHub-style anchors of the headings of a markdown file."""
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"#+\s+(.*)", line)
            if m:
                text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
                out.add(text.replace(" ", "-"))
    return out


def test_relative_links_in_readme_and_docs_resolve():
    assert os.path.isfile(os.path.join(REPO, "docs", "README.md"))
    broken = []
    for md in _markdown_files():
        with open(md, encoding="utf-8") as f:
            text = f.read()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: checked by nobody here
            file_part, _, anchor = target.partition("#")
            dest = (
                os.path.normpath(os.path.join(os.path.dirname(md), file_part)) if file_part else md
            )
            rel = os.path.relpath(md, REPO)
            if not os.path.exists(dest):
                broken.append(f"{rel}: {target} (no such file)")
            elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
                broken.append(f"{rel}: {target} (no such heading)")
            elif not os.path.realpath(dest).startswith(os.path.realpath(REPO)):
                broken.append(f"{rel}: {target} (outside the repository)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_experiment_script_is_in_the_experiments_index():
    """experiments/README.md lists every script (but the stage runner) with its results page."""
    with open(os.path.join(REPO, "experiments", "README.md"), encoding="utf-8") as f:
        index = f.read()
    scripts = [
        f
        for f in os.listdir(os.path.join(REPO, "experiments"))
        if f.endswith(".py") and f != "stages.py"
    ]
    assert scripts
    missing = [
        s for s in scripts if not re.search(rf"^\| `{re.escape(s)}` \|.*docs/results/", index, re.M)
    ]
    assert not missing, f"experiments/README.md does not index {missing}"


# Distribution name -> the module it is imported as, where they differ.
_IMPORT_NAME = {
    "orbax-checkpoint": "orbax",
    "absl-py": "absl",
    "tensorflow-datasets": "tensorflow_datasets",
    "scikit-learn": "sklearn",
    "pillow": "PIL",
}
# Imported by the library only where a user asks for it, from an extra (the LPIPS/VAE weight
# converters read torch checkpoints).
_OPTIONAL_IMPORTS = {"torch"}
# Declared although flowjax never imports it: tfds's builders import it without declaring it;
# the TensorBoard viewer is a command the user runs on a workdir's event files.
_DECLARED_FOR_OTHERS = {"importlib_resources", "tensorboard"}


def _declared_requirements() -> dict[str, list[str]]:
    """``INSTALL_REQUIRES`` and ``EXTRAS_REQUIRE`` of setup.py, read without running it."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    names = {"install": found["INSTALL_REQUIRES"], **found["EXTRAS_REQUIRE"]}
    return {k: [re.split(r"[<>=\[ ;]", req)[0] for req in v] for k, v in names.items()}


def _library_imports() -> set[str]:
    mods = set()
    for root, _, files in os.walk(os.path.join(REPO, "flowjax")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        mods.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "flowjax"}


def test_the_library_imports_what_it_declares_and_declares_what_it_imports():
    declared = _declared_requirements()
    install = {_IMPORT_NAME.get(d, d) for d in declared["install"]}
    imported = _library_imports()
    assert imported - install - _OPTIONAL_IMPORTS == set(), "imported but not declared"
    assert install - imported - _DECLARED_FOR_OTHERS == set(), "declared but never imported"
    # Test-only packages live in the dev extra, not in the install requirements.
    assert {"scipy", "chex", "pytest"} <= set(declared["dev"])
    assert not {"scipy", "chex", "pytest"} & install
