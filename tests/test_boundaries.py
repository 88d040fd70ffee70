"""Boundaries: recipes use the core's public API only, and the core never imports a recipe.

An AST walk (so it cannot rot with new files): every ``prune_compensate`` import in ``recipes/``
(the ``prune_compensate_recipes`` distribution)
must be ``from prune_compensate import NAME`` with NAME in ``prune_compensate.__all__``."""

from __future__ import annotations

import ast
from pathlib import Path

import prune_compensate

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: Path) -> list[tuple[Path, int, str, list[str]]]:
    found = []
    for file in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((file, node.lineno, node.module, [alias.name for alias in node.names]))
            elif isinstance(node, ast.Import):
                found += [(file, node.lineno, alias.name, []) for alias in node.names]
    return found


def test_recipes_import_only_public_core_names() -> None:
    public = set(prune_compensate.__all__)
    offences = []
    for file, line, module, names in _imports(ROOT / "recipes"):
        where = f"{file.relative_to(ROOT)}:{line}"
        if module.startswith("prune_compensate."):
            offences.append(f"{where} imports the core submodule {module}")
        elif module == "prune_compensate":
            offences += [
                f"{where} imports {name}, not in prune_compensate.__all__" for name in names if name not in public
            ]
    assert not offences, "\n".join(offences)


def test_public_names_exist() -> None:
    assert all(hasattr(prune_compensate, name) for name in prune_compensate.__all__)


def test_core_never_imports_recipes() -> None:
    offences = [
        f"{file.relative_to(ROOT)}:{line}"
        for file, line, module, _ in _imports(ROOT / "prune_compensate")
        if module.startswith("prune_compensate_recipes") or module == "recipes" or module.startswith("recipes.")
    ]
    assert not offences, offences


def _core_import_graph() -> dict[str, set[str]]:
    """module → core modules it imports (anywhere in the file, lazy imports included), by AST."""
    package = ROOT / "prune_compensate"
    modules = {
        ".".join(f.relative_to(package).with_suffix("").parts): f
        for f in package.rglob("*.py")
        if f.name != "__init__.py" and "testing" not in f.parts
    }
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        here = name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("prune_compensate."):
                target = node.module.split(".")[1:]
            else:
                continue
            dotted = ".".join(target)
            if dotted in modules:
                edges.add(dotted)
            for alias in node.names:  # from . import output_dir
                if f"{dotted}.{alias.name}".strip(".") in modules:
                    edges.add(f"{dotted}.{alias.name}".strip("."))
        graph[name] = edges - {name}
    return graph


def test_core_has_no_import_circles() -> None:
    graph = _core_import_graph()
    assert "pruning.prune" in graph and "model.locate" in graph  # the walk sees the package
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, [" → ".join(c) for c in cycles]


def test_pipeline_folders_only_import_downstream() -> None:
    """model ← calibration ← pruning ← checkpoint: a stage never imports a later one."""
    order = ["model", "calibration", "pruning", "checkpoint"]
    offences = []
    for name, edges in _core_import_graph().items():
        stage = name.split(".")[0]
        if stage not in order:
            continue
        for target in edges:
            later = target.split(".")[0]
            if later in order and order.index(later) > order.index(stage):
                offences.append(f"{name} imports {target}")
    assert not offences, offences


def test_core_never_imports_recipe_dependencies() -> None:
    """torch-geometric, peft, pyyaml and pykeen belong to the recipes' distribution."""
    offences = [
        f"{file.relative_to(ROOT)}:{line} imports {module}"
        for file, line, module, _ in _imports(ROOT / "prune_compensate")
        if module.split(".")[0] in ("torch_geometric", "peft", "yaml", "pykeen")
    ]
    assert not offences, offences
