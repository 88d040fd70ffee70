"""Boundaries: recipes use the core's public API only, and the core never imports a recipe.

An AST walk (so it cannot rot with new files): every ``prune_compensate`` import in ``recipes/``
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
        if module == "recipes" or module.startswith("recipes.")
    ]
    assert not offences, offences
