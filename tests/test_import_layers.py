"""The import graph of ``src/mibench``, read with ``ast`` (nothing is imported): no cycles, and no upward imports.

Every ``import`` counts, also one inside a function or under ``TYPE_CHECKING``: a function-level import done to
dodge a cycle is still a cycle. A module imports another if it names it or anything inside it; importing the
top package ``mibench`` (for ``__version__``) is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.configs import REPO

SRC = REPO / "src"

#: The layers below: results layout and schemas, sample checks, provenance, config, registries, tasks, estimators, guards.
LOW = (
    "mibench.io",
    "mibench.inputs",
    "mibench.layout",
    "mibench.provenance",
    "mibench.config",
    "mibench.registry",
    "mibench.tasks",
    "mibench.estimators",
    "mibench.guards",
)
#: What runs benchmarks or drives them: nothing in LOW may reach these, directly or through other modules.
HIGH = ("mibench.runner", "mibench.benchmark", "mibench.jobs", "mibench.resolve", "mibench.cli", "mibench.workflow")


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ``mibench`` it imports (the top package ``mibench`` itself is not counted)."""
    files = {_name(p): p for p in (SRC / "mibench").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
                base = base if node.level else (node.module or "")
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                while name and name not in files:  # `from mibench.x import func` -> mibench.x
                    name = name.rpartition(".")[0]
                if name and name not in (module, "mibench"):
                    targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "mibench.layout" in graph["mibench.runner"] and "mibench.guards" in graph["mibench.runner"]
    assert "mibench.variational" in graph["mibench.estimators.neural"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_low_layers_import_nothing_above_them():
    graph = import_graph()
    upward = []
    for module in sorted(m for m in graph if _within(m, LOW)):
        seen, todo = {module}, [(module, [module])]
        while todo:
            node, path = todo.pop()
            for target in sorted(graph.get(node, ())):
                if target in seen:
                    continue
                seen.add(target)
                if _within(target, HIGH):
                    upward.append(" -> ".join([*path, target]))
                todo.append((target, [*path, target]))
    assert upward == []


def test_git_sha_comes_from_provenance():
    """One definition of the commit stamp; everyone imports it from :mod:`mibench.provenance`."""
    wrong = []
    for path in (SRC / "mibench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and any(a.name == "git_sha" for a in node.names):
                if node.module != "mibench.provenance":
                    wrong.append(f"{_name(path)}: from {node.module} import git_sha")
            if isinstance(node, ast.FunctionDef) and node.name == "git_sha" and _name(path) != "mibench.provenance":
                wrong.append(f"{_name(path)} defines git_sha")
    assert wrong == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between the rooms of ``mibench``: each subpackage (``mibench.learned``) or top module."""

    def room(name: str) -> str:
        return ".".join(name.split(".")[:2])

    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    return rooms


def test_no_cycles_between_packages():
    """A loop through packages (learned -> tracking -> estimators -> learned) is an upward import too."""
    rooms = package_graph(import_graph())
    assert "mibench.tracking" in rooms["mibench.learned"]  # the graph between rooms is read
    assert cycles(rooms) == []
