"""The layers, enforced: every import of every module (inside functions too, read from the syntax tree)
goes down the order core < rundir < plots < lab < scripts, never up, and no modules import each other
in a circle. Which third-party stacks each layer may touch is checked the same way.

docs/architecture.md describes the layers; a new module finds its layer by its path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# its tests on one xdist worker (--dist loadgroup): its module fixture (the import graph) is made once per worker
pytestmark = pytest.mark.xdist_group("test_layers")

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "rundir", "plots", "lab", "scripts")
LAB_STAGES = ("config", "record", "results", "runner", "cli")  # inside the lab, the same rule
LAB_PUBLIC = {"callbacks": "record"}  # the lab's public top-level modules, at the rank of a stage
STACKS = {"lightning", "hydra", "omegaconf", "tensorboard", "tensorboardX"}  # the lab's alone
DRAWING = {"matplotlib"}  # the plots' (and the lab and scripts above them)


def _modules() -> dict[str, Path]:
    """dotted name -> file, for dlnlab/ and scripts/ (scripts as ``scripts.<path>``)."""
    out = {}
    for top in ("dlnlab", "scripts"):
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def layer(module: str) -> str:
    if module.startswith("scripts"):
        return "scripts"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("rundir", "plots", "lab") else "core"


def _targets(module: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = module.split(".")
    if node.level:
        keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
        prefix = ".".join(base[:keep] + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [prefix, *(f"{prefix}.{a.name}" for a in node.names)]


def _lazy_targets(module: str, node: ast.AST) -> list[str]:
    """A package's ``_EXPORTS = {"._submodule": [...]}`` (dlnlab._lazy): the submodules it imports on use."""
    if not (isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets)):
        return []
    subs = ast.literal_eval(node.value)
    return [module + sub if sub.startswith(".") else sub for sub in subs]


def imports() -> dict[str, set[str]]:
    """module -> every name it imports (the dlnlab modules resolved to the deepest existing one)."""
    mods = _modules()
    out: dict[str, set[str]] = {}
    for module, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = _lazy_targets(module, node)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, path, node)
            for target in targets:
                while target.startswith("dlnlab") and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    found.add(target)
        out[module] = found
    return out


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root] & edges.keys())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w] & edges.keys()))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def _is_package(dotted: str) -> bool:
    return (ROOT.joinpath(*dotted.split(".")) / "__init__.py").exists()


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_crossings(module: str, path: Path, tree: ast.AST) -> list[str]:
    """The imports in ``module`` of a dlnlab module or name that is private to a package it is not in:
    ``dlnlab.lab.runner._ahead`` belongs to ``dlnlab.lab.runner`` (however it is imported: ``from
    dlnlab.lab.runner import _ahead`` too), ``_s1`` of the module ``dlnlab.saddles.plateaus`` to
    ``dlnlab.saddles``. A package's ``__init__`` exports what others may use; its ``_EXPORTS`` (the
    names it imports on first use) count as its imports."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _targets(module, path, node)[0]
            pairs = [(source, a.name) for a in node.names]
        else:
            pairs = [(target, None) for target in _lazy_targets(module, node)]
        for source, name in pairs:
            if not source.startswith("dlnlab"):
                continue
            full = source.split(".") + ([name] if name else [])
            first = next((i for i, part in enumerate(full) if _private(part)), None)
            if first is None:
                continue
            # a private name of a plain module belongs to the module's package; else the package above it
            of_module = first == len(full) - 1 and name is not None and not _is_package(source)
            owner = ".".join(full[: max(1, first - 1 if of_module else first)])
            if not (module == owner or module.startswith(owner + ".")):
                bad.append(f"{module}: {'.'.join(full)} (private to {owner})")
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return imports()


def test_every_import_goes_down_the_layers(graph):
    rank = {name: i for i, name in enumerate(LAYERS)}
    up = [
        f"{m} ({layer(m)}) imports {t} ({layer(t)})"
        for m, targets in graph.items()
        for t in sorted(targets)
        if (t.startswith("dlnlab") or t.startswith("scripts.")) and rank[layer(t)] > rank[layer(m)]
    ]
    assert not up, "imports up the layers:\n" + "\n".join(up)


def lab_rank(module: str) -> int | None:
    """The rank of a lab module among the lab's stages (None: not a lab module, or the lab's own package)."""
    parts = module.split(".")
    if parts[:2] != ["dlnlab", "lab"] or len(parts) < 3:
        return None
    stage = LAB_PUBLIC.get(parts[2], parts[2])
    return LAB_STAGES.index(stage) if stage in LAB_STAGES else None


def test_inside_the_lab_every_import_goes_down_its_stages(graph):
    up = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        for t in sorted(targets)
        if lab_rank(m) is not None and lab_rank(t) is not None and lab_rank(t) > lab_rank(m)
    ]
    assert not up, "lab imports up its stages:\n" + "\n".join(up)


def test_no_import_circle(graph):
    dlnlab = {
        m: {t for t in ts if t.startswith("dlnlab")} for m, ts in graph.items() if m.startswith("dlnlab")
    }
    assert _circles(dlnlab) == []


def test_the_stacks_stay_in_their_layers(graph):
    bad = []
    for m, targets in graph.items():
        roots = {t.split(".")[0] for t in targets}
        if layer(m) in ("core", "rundir", "plots") and roots & STACKS:
            bad.append(f"{m} imports {sorted(roots & STACKS)}")
        if layer(m) in ("core", "rundir") and roots & DRAWING:
            bad.append(f"{m} imports {sorted(roots & DRAWING)}")
    assert not bad, bad


# The one exception: the bench times the driver's phases by wrapping the functions where the driver looks
# them up (its modules' namespaces), so it must reach those modules themselves.
INSTRUMENTS = {"scripts.bench.parallel": {"dlnlab.lab.runner._driver", "dlnlab.lab.runner._series"}}


def test_private_modules_and_names_stay_in_their_package():
    bad = [
        line
        for module, path in _modules().items()
        for line in private_crossings(module, path, ast.parse(path.read_text()))
        if line.split(": ")[1].split(" ")[0] not in INSTRUMENTS.get(module, ())
    ]
    assert not bad, "private imports from outside their package:\n" + "\n".join(bad)


def test_the_check_sees_imports_inside_functions_and_circles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(edges) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from dlnlab.lab.runner import run\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert "dlnlab.lab.runner" in _targets("dlnlab.plots.x", ROOT / "x.py", node)
    crossing = ast.parse(
        "from dlnlab.lab.runner._ahead import start_early\nfrom dlnlab.saddles.plateaus import _s1\n"
        "import dlnlab.flow._rk45\nfrom dlnlab.lab.runner import start_early\nfrom dlnlab.lab.runner import _ahead\n"
        "from dlnlab.lab.config import _EXPORTS\nfrom dlnlab import __version__\n"
        "_EXPORTS = {'dlnlab.flow._run': ['Run']}\n"
    )
    assert private_crossings("scripts.x", ROOT / "scripts" / "x.py", crossing) == [
        "scripts.x: dlnlab.lab.runner._ahead.start_early (private to dlnlab.lab.runner)",
        "scripts.x: dlnlab.saddles.plateaus._s1 (private to dlnlab.saddles)",
        "scripts.x: dlnlab.flow._rk45 (private to dlnlab.flow)",
        "scripts.x: dlnlab.lab.runner._ahead (private to dlnlab.lab.runner)",
        "scripts.x: dlnlab.lab.config._EXPORTS (private to dlnlab.lab.config)",
        "scripts.x: dlnlab.flow._run (private to dlnlab.flow)",
    ]
    relative = ast.parse("from ..config import _prepare\n")
    runner_flow = ROOT / "dlnlab" / "lab" / "runner" / "_flow.py"
    assert private_crossings("dlnlab.lab.runner._flow", runner_flow, relative) == [
        "dlnlab.lab.runner._flow: dlnlab.lab.config._prepare (private to dlnlab.lab.config)"
    ]
    inside = ast.parse("from dlnlab.saddles.plateaus import _s1\nfrom ._kind import SeriesKind\n")
    assert (
        private_crossings("dlnlab.saddles.classify", ROOT / "dlnlab" / "saddles" / "classify.py", inside)
        == []
    )
    path = ROOT / "dlnlab" / "lab" / "runner" / "_sgd.py"
    assert (
        private_crossings("dlnlab.lab.runner._sgd", path, ast.parse("from ._kind import SeriesKind\n")) == []
    )
    assert [
        layer(m)
        for m in (
            "dlnlab.flow._rk45",
            "dlnlab.rundir",
            "dlnlab.plots._style",
            "dlnlab.lab.cli",
            "scripts.bench.run",
        )
    ] == list(LAYERS)
