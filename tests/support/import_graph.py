"""The import graph of Flywheel's own modules, read from the source with ast (nothing imported).

Every `import x` and `from x import y` counts, at module level, inside functions and under
`if TYPE_CHECKING:` alike: a cycle that only lazy imports keep from failing is still a knot.
`from pkg import name` counts as an import of `pkg.name` when that is a module, else of `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOMS = ("actors", "buffer", "learner", "weights", "rewards", "launch")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path, rooms=ROOMS) -> dict[str, Path]:
    found = {}
    for room in rooms:
        for path in sorted((root / room).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the current package upward
        package = here.split(".") if is_package else here.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def import_graph(root: Path, rooms=ROOMS) -> dict[str, set[str]]:
    """module -> the project modules it imports (the nearest known module of each target)."""
    found = modules(root, rooms)
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        edges = set()
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py", known):
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def crossings(graph: dict[str, set[str]], forbidden: dict[str, set[str]]) -> list[str]:
    """'a.b imports c.d' for every edge from a room to a room it must not import."""
    bad = []
    for src, targets in sorted(graph.items()):
        room = src.split(".")[0]
        for dst in sorted(targets):
            if dst.split(".")[0] in forbidden.get(room, set()):
                bad.append(f"{src} imports {dst}")
    return bad
