"""Every notebook under notebooks/ runs top to bottom, headless, without errors."""

import glob
import importlib.util
import io
import json
import os
import re
import sys
import types
import urllib.parse
import urllib.request

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

    # On Colab, as shipped: the repository and branch of the GitHub notebook the session opened
    # (the Jupyter server's sessions name it), asked of the server Colab's environment names.
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("COLAB_JUPYTER_IP", "10.1.2.3")
    monkeypatch.setenv("KMP_TARGET_PORT", "9999")
    asked = []
    opened = "https://github.com/some-owner/some.repo/blob/dev/notebooks/quickstart.ipynb"
    sessions = [{"name": "quickstart.ipynb", "path": "fileId=" + urllib.parse.quote(opened, "")}]

    def urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(json.dumps(sessions).encode())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    expected = 'install --quiet "flowjax @ git+https://github.com/some-owner/some.repo.git@dev"'
    assert run(tmp_path / "content") == [expected]
    assert asked == ["http://10.1.2.3:9999/api/sessions"]
    assert run(tmp_path / "content", url) == [f'install --quiet "flowjax @ git+{url}"']  # wins
    sessions[0]["path"] = "Untitled0.ipynb"  # a notebook not from GitHub: say what to set
    with pytest.raises(RuntimeError, match="set FLOWJAX_GIT_URL"):
        run(tmp_path / "content")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_has_a_colab_badge_to_itself_and_no_saved_outputs(path):
    nb = nbformat.read(path, as_version=4)
    top = nb.cells[0]
    assert top.cell_type == "markdown"
    badge = re.match(
        r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
        r"\(https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/(\S+)\)",
        top.source,
    )
    assert badge and badge[1] == f"notebooks/{os.path.basename(path)}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]
