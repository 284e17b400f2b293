"""The package's dependency rules, read from the source with ``ast`` (nothing of recast is imported).

Every ``import`` counts: at module level, inside functions, under ``if TYPE_CHECKING:``. A lazy
import only defers a dependency; it does not remove it.

* no import cycle among recast's modules;
* ``recast/tasks/`` holds ``common.py`` and one module per stage, and a stage module imports no
  other stage module (stages talk through the flow and the records of ``recast.contracts``);
* tasks import nothing of the layers above them (services, flows, CLI, API);
* ``recast/models/`` is pure algorithms: no Prefect, SQL, object storage, settings, or the layers
  that use them.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "recast"

STAGES = frozenset({"ingest", "segment", "track", "background", "expression", "swap", "qc", "report", "render"})

#: what recast.models may not import: third-party packages (and their submodules) and recast packages
MODELS_FORBIDDEN_EXTERNAL = ("prefect", "sqlalchemy", "boto3", "botocore")
MODELS_FORBIDDEN_RECAST = ("recast.db", "recast.storage", "recast.tasks", "recast.flows", "recast.services",
                           "recast.settings", "recast.cli", "recast.api")
TASKS_FORBIDDEN_RECAST = ("recast.services", "recast.flows", "recast.cli", "recast.api")


@dataclass(frozen=True)
class Import:
    """One imported module as written in a file, resolved to an absolute dotted name."""

    source: str   # the importing module
    target: str   # the imported module (for recast: the module file it resolves to)
    where: str    # path:line of the import statement


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the recast package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve_recast(name: str) -> str:
    """The recast module a dotted name lives in: itself, or its longest existing prefix (an
    attribute such as ``recast.media.probe.sha256_file``, or a module being moved)."""
    mods = modules()
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in mods:
            return candidate
        parts.pop()
    return "recast"


def _imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    rel_path = path.relative_to(PACKAGE.parent)
    found: list[Import] = []

    def add(target: str, node: ast.AST) -> None:
        if target == "recast" or target.startswith("recast."):
            target = _resolve_recast(target)
            if target == module:
                return
        found.append(Import(module, target, f"{rel_path}:{node.lineno}"))

    for node in ast.walk(tree):  # every statement, nested ones included
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                origin = f"{prefix}.{node.module}" if node.module else prefix
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from recast.x import y``: y is a submodule, or a name defined in recast.x
                sub = f"{origin}.{alias.name}"
                add(sub if sub in modules() else origin, node)
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(i for name, path in modules().items() for i in _imports_of(name, path))


def recast_graph() -> dict[str, dict[str, str]]:
    """``{module: {imported recast module: where}}`` (the first place of each edge)."""
    graph: dict[str, dict[str, str]] = {m: {} for m in modules()}
    for imp in all_imports():
        if imp.target in graph:
            graph[imp.source].setdefault(imp.target, imp.where)
    return graph


def strongly_connected(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    for root in sorted(graph):
        if root in index:
            continue
        # iterative DFS: (node, iterator over its successors)
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, succ = work[-1]
            advanced = False
            for nxt in succ:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def cycle_through(graph: dict[str, dict[str, str]], component: list[str]) -> list[str]:
    """A shortest import cycle inside one strongly connected component, as a closed path."""
    members = set(component)
    start = component[0]
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in seen:
                    seen.add(nxt)
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return component  # unreachable for a real component


def describe_path(graph: dict[str, dict[str, str]], path: list[str]) -> str:
    return " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


# --- the rules -------------------------------------------------------------------------------------
def test_the_import_graph_is_read_from_the_source():
    # guards the checks below against passing vacuously on a broken reader
    mods = modules()
    assert "recast.tasks.common" in mods and "recast.models.mesh_topology" in mods and "recast" in mods
    graph = recast_graph()
    assert "recast.contracts" in graph["recast.tasks.common"]
    assert all(imp.where.startswith("recast/") for imp in all_imports())


def test_no_import_cycle_among_recast_modules():
    graph = recast_graph()
    cycles = [describe_path(graph, cycle_through(graph, comp)) for comp in strongly_connected(graph)]
    assert not cycles, "import cycles (one path per set of mutually importing modules):\n  " + "\n  ".join(cycles)


def test_tasks_holds_common_and_one_module_per_stage():
    entries = {p.name for p in (PACKAGE / "tasks").iterdir() if p.name != "__pycache__"}
    expected = {"__init__.py", "common.py"} | {f"{s}.py" for s in STAGES}
    assert entries == expected, f"unexpected in recast/tasks: {sorted(entries - expected)}; missing: {sorted(expected - entries)}"


def _listing(imports) -> list[str]:
    return sorted({f"{imp.source} imports {imp.target} ({imp.where})" for imp in imports})


def test_no_stage_module_imports_another_tasks_module():
    bad = _listing(
        imp for imp in all_imports()
        if imp.source.startswith("recast.tasks.") and imp.source != "recast.tasks.common"
        and _within(imp.target, ("recast.tasks",)) and imp.target != "recast.tasks.common"
    )
    assert not bad, "a stage module may import recast.tasks.common only:\n  " + "\n  ".join(bad)


def test_tasks_import_nothing_of_the_layers_above():
    bad = _listing(
        imp for imp in all_imports()
        if _within(imp.source, ("recast.tasks",)) and _within(imp.target, TASKS_FORBIDDEN_RECAST)
    )
    assert not bad, "tasks are called by flows and services, never the other way:\n  " + "\n  ".join(bad)


def _models_forbidden(imp: Import) -> bool:
    return _within(imp.target, MODELS_FORBIDDEN_RECAST) or _within(imp.target, MODELS_FORBIDDEN_EXTERNAL)


def test_models_import_no_orchestration_storage_database_or_settings():
    bad = _listing(imp for imp in all_imports() if _within(imp.source, ("recast.models",)) and _models_forbidden(imp))
    assert not bad, "recast.models is pure algorithms (paths and parameters come in as arguments):\n  " + "\n  ".join(bad)


def indirect_model_dependencies() -> list[str]:
    """Forbidden imports that a models module reaches through other recast modules, with the path."""
    graph = recast_graph()
    by_source: dict[str, list[Import]] = {}
    for imp in all_imports():
        by_source.setdefault(imp.source, []).append(imp)
    bad = set()
    for start in (m for m in graph if _within(m, ("recast.models",))):
        via: dict[str, list[str]] = {start: [start]}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for imp in by_source.get(node, ()):
                if _models_forbidden(imp) and node != start:
                    bad.add(f"{describe_path(graph, via[node])} -> {imp.target} ({imp.where})")
            for nxt in sorted(graph[node]):
                if nxt not in via:
                    via[nxt] = [*via[node], nxt]
                    queue.append(nxt)
    return sorted(bad)


def test_models_reach_none_of_that_through_other_recast_modules():
    bad = indirect_model_dependencies()
    assert not bad, "recast.models depends on these through other modules:\n  " + "\n  ".join(bad)


# --- the reader itself, on small synthetic packages -----------------------------------------------
def test_relative_and_submodule_imports_resolve(tmp_path, monkeypatch):
    pkg = tmp_path / "recast"
    (pkg / "tasks").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks" / "__init__.py").write_text("")
    (pkg / "tasks" / "common.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "tasks" / "swap.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import common\n"
        "from ..errors import X\n"
        "if TYPE_CHECKING:\n"
        "    from recast.tasks import qc\n"
        "def f():\n"
        "    import recast.tasks.track as t\n"
    )
    (pkg / "tasks" / "qc.py").write_text("def g():\n    from recast.tasks.swap import f\n")
    (pkg / "tasks" / "track.py").write_text("")
    (pkg / "models").mkdir()
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "face.py").write_text("from recast.media import probe\n")
    (pkg / "media").mkdir()
    (pkg / "media" / "__init__.py").write_text("")
    (pkg / "media" / "probe.py").write_text("def h():\n    from recast import storage\n")
    (pkg / "storage.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    modules.cache_clear()
    all_imports.cache_clear()
    try:
        graph = recast_graph()
        assert set(graph["recast.tasks.swap"]) == {"recast.tasks.common", "recast.errors", "recast.tasks.qc", "recast.tasks.track"}
        (comp,) = strongly_connected(graph)
        assert comp == ["recast.tasks.qc", "recast.tasks.swap"]
        assert describe_path(graph, cycle_through(graph, comp)) == (
            "recast.tasks.qc (recast/tasks/qc.py:2) -> recast.tasks.swap (recast/tasks/swap.py:5) -> recast.tasks.qc")
        assert indirect_model_dependencies() == [
            "recast.models.face (recast/models/face.py:1) -> recast.media.probe -> recast.storage (recast/media/probe.py:2)"]
    finally:
        modules.cache_clear()
        all_imports.cache_clear()
