"""The repository's import graph, read from source by AST (so it cannot rot with new files), and
the circles in it.

Every import counts: top-level, and lazy ones inside functions (a lazy import hides a circle from
Python, not from a reader). A package's modules are named by their dotted path inside it; a
``__init__.py`` is the package itself. ``from pkg import name`` is an edge to ``pkg.name`` when that
is a module, else to ``pkg``. A folder of scripts (``benchmarks/``, ``tools/``) is a flat namespace:
``import other`` there means the sibling file ``other.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package whose folder is ``root``."""
    modules = {}
    for file in sorted(root.rglob("*.py")):
        parts = file.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = file
    return modules


def script_modules(folder: Path) -> dict[str, Path]:
    """``{name: file}`` for the scripts directly in ``folder`` (a flat namespace)."""
    return {file.stem: file for file in sorted(folder.glob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement names, relative imports resolved against ``module``;
    ``from pkg import name`` gives ``pkg.name`` (``import_graph`` falls back to ``pkg`` when that is
    no module), so ``from .. import output_dir`` is an edge to that module, not to the facade."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = here[: len(here) - (node.level - 1)]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = node.module or ""
    return [f"{target}.{alias.name}".strip(".") for alias in node.names]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module → modules (of ``modules``) it imports``; a name that is not a module falls back to
    the longest dotted prefix that is one (``from pkg.mod import func`` → ``pkg.mod``)."""
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        is_package = file.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            for dotted in _imported(node, name, is_package):
                parts = dotted.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                if parts:
                    edges.add(".".join(parts))
        graph[name] = edges - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk meets, each as ``[a, b, ..., a]`` (empty: no circle)."""
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found
