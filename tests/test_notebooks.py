"""Every notebook under notebooks/ runs top to bottom, headless, without errors."""

import glob
import importlib.util
import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_starts_with_a_guarded_install_cell(path):
    """The first code cell installs flowjax on Colab and is skipped where flowjax is importable."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    assert "%pip install" in first
    assert 'importlib.util.find_spec("flowjax") is None' in first


def _install_cell_as_python(path) -> str:
    """The first code cell with each ``%pip ...`` line turned into ``_calls.append(f"...")``."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    lines = []
    for line in first.splitlines():
        indent, stripped = line[: len(line) - len(line.lstrip())], line.strip()
        if stripped.startswith("%pip "):
            line = f"{indent}_calls.append(f{stripped[len('%pip ') :]!r})"
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_install_cell_installs_the_enclosing_clone_or_the_given_git_url(
    path, tmp_path, monkeypatch
):
    code = _install_cell_as_python(path)
    assert "github.com/flowjax/flowjax" not in code  # that name is another project
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flowjax" else real(n, *a)
    )

    def run(cwd, url=""):
        monkeypatch.chdir(cwd)
        scope = {"_calls": []}
        exec(code.replace('FLOWJAX_GIT_URL = ""', f"FLOWJAX_GIT_URL = {url!r}"), scope)
        return scope["_calls"]

    # Opened from the clone's notebooks/ folder: the clone itself is installed.
    assert run(os.path.dirname(path)) == [f'install --quiet "{REPO}"']
    # Elsewhere (Colab), with the URL set: the git URL.
    (tmp_path / "content").mkdir()
    url = "https://example.org/owner/repo.git"
    assert run(tmp_path / "content", url) == [f'install --quiet "flowjax @ git+{url}"']
    # Elsewhere without a URL: a one-line error that says what to set.
    with pytest.raises(RuntimeError, match="set FLOWJAX_GIT_URL"):
        run(tmp_path / "content")
