"""The import graph of ``flowjax``: every module placed, no upward import, no cycle.

Every module is parsed with ``ast`` (nothing is imported); its imports, top-level and inside
functions alike, become edges ``module -> flowjax module``. Each module is placed by name in
:data:`PLACES` (a module missing from the table fails the test: there is no catch-all
prefix), and its group has a rank in :data:`ORDER`, lowest first. A module may import modules
of its own rank and of lower ranks, never of a higher one, and the graph of modules must be
acyclic. docs/architecture.md explains the layers.

Adding a module: put its full name in the group it belongs to below.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "flowjax"

#: Ranks, lowest first; the groups in one tuple share a rank (they may import each other).
#: The components (data and models, solvers, evaluation, objectives, search) are ordered
#: among themselves: objectives use evaluation's feature networks as losses (LPIPS for
#: reflow, the digits features for blockwise alignment), while the evaluator meets an
#: objective only as a value through the Objective contract (its sampler), never by import.
#: parallel sits below the components because the evaluator gathers samples across hosts.
ORDER: list[tuple[str, ...]] = [
    ("core",),
    ("parallel",),
    ("data", "models"),
    ("solvers",),
    ("evaluation",),
    ("objectives",),
    ("search",),
    ("training",),
    ("workflows",),
    ("command lines",),
]

#: Every module of flowjax, by group (full dotted names; a package is its ``__init__``).
PLACES: dict[str, tuple[str, ...]] = {
    "core": (
        "flowjax",  # the facade: names resolved lazily (strings), no import edges
        "flowjax.config_files",
        "flowjax.console",
        "flowjax.convention",
        "flowjax.exact_fields",
        "flowjax.paths",
        "flowjax.pyramid",
        "flowjax.registry",
        "flowjax.spec",
        "flowjax.time",
        "flowjax.time.grids",
        "flowjax.time.laws",
        "flowjax.time.shifts",
        "flowjax.types",
        "flowjax.velocity",
        "flowjax.weight_files",
    ),
    "parallel": (
        "flowjax.parallel",
        "flowjax.parallel.mesh",
        "flowjax.parallel.multihost",
        "flowjax.parallel.rules",
    ),
    "data": (
        "flowjax.data",
        "flowjax.data.base",
        "flowjax.data.batch_order",
        "flowjax.data.digits",
        "flowjax.data.digits_arrays",
        "flowjax.data.feature_metrics",
        "flowjax.data.image_folder",
        "flowjax.data.latents",
        "flowjax.data.mixed_latents",
        "flowjax.data.mixed_sizes",
        "flowjax.data.pairs",
        "flowjax.data.pairs.manifest",
        "flowjax.data.pairs.reader",
        "flowjax.data.pairs.writer",
        "flowjax.data.shards",
        "flowjax.data.sources",
        "flowjax.data.tfds_pipeline",
        "flowjax.data.tokens",
        "flowjax.data.toy2d",
    ),
    "models": (
        "flowjax.models",
        "flowjax.models.anyres",
        "flowjax.models.attention",
        "flowjax.models.blockwise",
        "flowjax.models.decomposable",
        "flowjax.models.digits_classifier",
        "flowjax.models.dit",
        "flowjax.models.fitv2",
        "flowjax.models.inception",
        "flowjax.models.layers",
        "flowjax.models.mlp",
        "flowjax.models.nextdit",
        "flowjax.models.positions",
        "flowjax.models.registry",
        "flowjax.models.resize",
        "flowjax.models.unet",
        "flowjax.models.vae",
        "flowjax.models.vae.autoencoder",
        "flowjax.models.vae.network",
        "flowjax.models.vae.weights",
    ),
    "solvers": (
        "flowjax.solvers",
        "flowjax.solvers.adaptive",
        "flowjax.solvers.base",
        "flowjax.solvers.boss",
        "flowjax.solvers.dpm_solver_pp",
        "flowjax.solvers.euler",
        "flowjax.solvers.flow_map",
        "flowjax.solvers.heun",
        "flowjax.solvers.learned",
        "flowjax.solvers.learned.bespoke",
        "flowjax.solvers.learned.calibration",
        "flowjax.solvers.learned.grid",
        "flowjax.solvers.learned.store",
        "flowjax.solvers.midpoint",
        "flowjax.solvers.rk4",
        "flowjax.solvers.sde",
        "flowjax.solvers.spec",
    ),
    "evaluation": (
        "flowjax.evaluation",
        "flowjax.evaluation.digits_features",
        "flowjax.evaluation.evaluator",
        "flowjax.evaluation.fid",
        "flowjax.evaluation.frechet",
        "flowjax.evaluation.lpips",
        "flowjax.evaluation.lpips.convert",
        "flowjax.evaluation.lpips.network",
        "flowjax.evaluation.metrics",
        "flowjax.evaluation.sample_metrics",
        "flowjax.evaluation.settings",
        "flowjax.evaluation.straightness",
        "flowjax.plotting",
    ),
    "objectives": (
        "flowjax.objectives",
        "flowjax.objectives.blockwise",
        "flowjax.objectives.decomposable",
        "flowjax.objectives.dispersive",
        "flowjax.objectives.flow_matching",
        "flowjax.objectives.freeflow",
        "flowjax.objectives.guidance",
        "flowjax.objectives.losses",
        "flowjax.objectives.meanflow",
        "flowjax.objectives.reflow",
        "flowjax.objectives.registry",
        "flowjax.objectives.straightening",
    ),
    "search": (
        "flowjax.search",
        "flowjax.search.best_of_n",
        "flowjax.search.particles",
        "flowjax.search.rbf",
        "flowjax.search.rewards",
        "flowjax.search.search_over_paths",
        "flowjax.search.smc",
    ),
    "training": (
        "flowjax.training",
        "flowjax.training.accounting",
        "flowjax.training.checkpoint",
        "flowjax.training.ema",
        "flowjax.training.experiment",
        "flowjax.training.faults",
        "flowjax.training.loop",
        "flowjax.training.optim",
        "flowjax.training.restore",
        "flowjax.training.state",
        "flowjax.training.step",
        "flowjax.training.validate",
        "flowjax.training.workdir",
        "flowjax.training.writers",
    ),
    "workflows": (
        "flowjax.workflows",
        "flowjax.workflows.boss",
        "flowjax.workflows.calibrate",
        "flowjax.workflows.convert",
        "flowjax.workflows.latents",
        "flowjax.workflows.reflow",
        "flowjax.workflows.sample",
        "flowjax.workflows.score",
        "flowjax.workflows.search",
    ),
    "command lines": (
        "flowjax.calibrate",
        "flowjax.cli",
        "flowjax.cli.__main__",
        "flowjax.cli._command",
        "flowjax.cli.calibrate",
        "flowjax.cli.convert_inception",
        "flowjax.cli.convert_lpips",
        "flowjax.cli.convert_vae",
        "flowjax.cli.fid_stats",
        "flowjax.cli.latents",
        "flowjax.cli.reflow",
        "flowjax.cli.sample",
        "flowjax.cli.score",
        "flowjax.cli.search",
        "flowjax.cli.train",
        "flowjax.evaluation.lpips.__main__",
        "flowjax.latents",
        "flowjax.main",
        "flowjax.models.vae.__main__",
        "flowjax.reflow",
        "flowjax.sample",
        "flowjax.score",
        "flowjax.search.__main__",
    ),
}

#: Known upward edges, each to be removed (the test fails once one is gone, so the table
#: cannot go stale). Inception borrows LPIPS's resize: the evaluation split removes it.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def ranks(places: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Module -> rank (its group's index in :data:`ORDER`); a module placed twice is an error."""
    rank_of_group = {group: i for i, groups in enumerate(ORDER) for group in groups}
    out: dict[str, int] = {}
    for group, modules in places.items():
        assert group in rank_of_group, f"group {group!r} has no rank in ORDER"
        for module in modules:
            assert module not in out, f"{module} is placed twice"
            out[module] = rank_of_group[group]
    return out


RANK = ranks(PLACES)


def group_of(module: str) -> str:
    return next(g for g, modules in PLACES.items() if module in modules)


def resolve(name: str, modules) -> str:
    """The flowjax module ``name`` refers to (a module, or the package holding a name)."""
    while name not in modules:
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
                target = resolve(name, MODULES)
                if target != module:
                    out.add(target)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def unplaced(modules, rank: dict[str, int]) -> list[str]:
    return sorted(m for m in modules if m not in rank)


def upward_edges(graph: dict[str, set[str]], rank: dict[str, int]) -> list[tuple[str, str]]:
    """The edges ``(module, target)`` from a lower rank to a higher one."""
    return sorted((m, t) for m, targets in graph.items() for t in targets if rank[t] > rank[m])


def test_every_module_is_placed():
    missing = unplaced(MODULES, RANK)
    assert not missing, f"modules placed in no group; add them to PLACES in {__file__}: {missing}"
    stale = sorted(set(RANK) - set(MODULES))
    assert not stale, f"PLACES names modules that do not exist: {stale}"


def test_no_upward_imports():
    found = upward_edges(GRAPH, RANK)
    upward = [
        f"{m} ({group_of(m)}) imports {t} ({group_of(t)})"
        for m, t in found
        if (m, t) not in KNOWN_EXCEPTIONS
    ]
    assert not upward, "imports from a lower rank to a higher one:\n" + "\n".join(upward)
    gone = KNOWN_EXCEPTIONS - set(found)
    assert not gone, f"these known exceptions are fixed; remove them from the table: {gone}"


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


def test_a_planted_module_is_unplaced():
    # ``flowjax/brand_new.py`` written next to the real modules is reported, even though
    # ``flowjax`` itself is placed (a prefix places nothing).
    planted = {**MODULES, "flowjax.brand_new": ROOT / "brand_new.py"}
    assert unplaced(planted, RANK) == ["flowjax.brand_new"]


@pytest.mark.parametrize(
    "edge",
    [
        ("flowjax.models.mlp", "flowjax.evaluation.fid"),  # a model importing evaluation
        ("flowjax.solvers.euler", "flowjax.objectives.flow_matching"),  # in-component order
        ("flowjax.evaluation.fid", "flowjax.objectives.reflow"),
        ("flowjax.data.sources", "flowjax.solvers.base"),
        ("flowjax.paths", "flowjax.parallel.mesh"),  # core below parallel
        ("flowjax.training.loop", "flowjax.workflows.sample"),  # training below workflows
        ("flowjax.workflows.sample", "flowjax.cli.train"),
    ],
)
def test_a_planted_upward_import_is_found(edge):
    module, target = edge
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph[module].add(target)
    assert edge in upward_edges(graph, RANK)


def test_the_cycle_finder_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
