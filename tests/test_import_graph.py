"""The package's import graph has no cycle.

Every module of ``synth_pipeline`` is parsed with ``ast``; every import of a ``synth_pipeline`` module
counts, wherever it is written: at module level, under ``if TYPE_CHECKING:``, or inside a function
(a function-level import that breaks a cycle at run time still leaves the two modules tangled).
``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``.

``synth_pipeline/models/`` included: the refiner names what it uses of the model as a Protocol
(``refine.RefinerHost``) instead of importing ``TimeAutoDiff``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "synth_pipeline"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _owner(name: str, modules: set[str]) -> str | None:
    """The module a dotted name lives in (the longest prefix that is a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> Graph:
    files = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules = set(files)
    graph: Graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x / from ..y import z
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for target in targets:
                if not (target == "synth_pipeline" or target.startswith("synth_pipeline.")):
                    continue
                owner = _owner(target, modules)
                if owner and owner != module:
                    edges.setdefault(owner, node.lineno)
        graph[module] = edges
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through every strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, {}):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:
        start = min(comp)
        # shortest path back to start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier, found = [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, {})):
                    if w not in comp:
                        continue
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        back = [found]  # found -> ... -> start, walking prev
        while back[-1] != start:
            back.append(prev[back[-1]])
        cycles.append([*reversed(back), start])
    return cycles


def _describe(graph: Graph, cycle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False)) + f" -> {cycle[-1]}"


def test_find_cycles_reports_a_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "synth_pipeline.release_store" in graph["synth_pipeline.release"]  # module level
    assert "synth_pipeline.release_store" in graph["synth_pipeline.dataset_config"]  # inside a function
    assert "synth_pipeline.models.refine" in graph["synth_pipeline.models.timeautodiff"]
    assert "synth_pipeline.synthesizer" in graph["synth_pipeline.models.launch"]  # inside a function


def test_synth_pipeline_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycle(s) in synth_pipeline (line: where the import is written):\n" + "\n".join(
        _describe(graph, c) for c in cycles)
