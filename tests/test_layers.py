"""The import graph of ``flowjax`` has no cycle and never imports upward.

Every module is parsed with ``ast`` (nothing is imported); its imports, top-level and inside
functions alike, become edges ``module -> flowjax module``. The layers, lowest first, are
declared below (docs/architecture.md explains them); a module may import its own layer and
the ones below, never one above, and the graph of modules must be acyclic.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flowjax"

# (layer name, module prefixes). A module belongs to the layer of its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "flowjax.registry",
            "flowjax.types",
            "flowjax.spec",
            "flowjax.paths",
            "flowjax.timesteps",
            "flowjax.time",
            "flowjax.convention",
            "flowjax.exact_fields",
            "flowjax.velocity",
            "flowjax.config_files",
            "flowjax.pyramid",
            "flowjax.weight_files",
            "flowjax.console",
        ),
    ),
    (
        "components",
        (
            "flowjax",  # the package facade re-exports paths, solvers and objectives
            "flowjax.objectives",
            "flowjax.solvers",
            "flowjax.models",
            "flowjax.data",
            "flowjax.evaluation",
            "flowjax.search",
            "flowjax.plotting",
        ),
    ),
    ("training", ("flowjax.training", "flowjax.parallel")),
    ("workflows", ("flowjax.workflows",)),
    (
        "command lines",
        (
            "flowjax.cli",
            # the `python -m flowjax.<command>` shims
            "flowjax.main",
            "flowjax.sample",
            "flowjax.reflow",
            "flowjax.calibrate",
            "flowjax.latents",
            "flowjax.score",
            "flowjax.search.__main__",
            "flowjax.evaluation.lpips.__main__",
        ),
    ),
]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, depth = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    assert best is not None, f"{module} is in no layer; add it to LAYERS in {__file__}"
    return best


def resolve(name: str) -> str:
    """The flowjax module ``name`` refers to (a module, or the package holding a name)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(module: str) -> set[str]:
    """The flowjax modules ``module`` imports anywhere in its body (not in docstrings)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name == "flowjax" or name.startswith("flowjax."):
                target = resolve(name)
                if target != module:
                    out.add(target)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_upward_imports():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def package_edges(module: str, targets: set[str]) -> set[str]:
    # A package's __init__ importing its own submodules is how a package is built, and a
    # submodule importing a sibling through the package is the same tie: drop edges from a
    # module to the packages that contain it, so cycles are between real modules.
    return {t for t in targets if not module.startswith(t + ".")}


def test_no_cycles():
    graph = {m: package_edges(m, t) for m, t in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    # The detectors themselves: a planted cycle and a planted upward edge are found.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("flowjax.training.loop") > layer_of("flowjax.solvers.euler")
    assert layer_of("flowjax.workflows.sample") > layer_of("flowjax.training.loop")


@pytest.mark.parametrize("module", ["flowjax.training.loop", "flowjax.training.experiment"])
def test_training_does_not_reach_workflows(module):
    assert not {t for t in GRAPH[module] if layer_of(t) >= layer_of("flowjax.workflows")}
