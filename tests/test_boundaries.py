"""Boundaries: recipes use the core's public API only, the core never imports a recipe, the core's
stages import only lower ones, and no module of the repository is in an import circle.

An AST walk (so it cannot rot with new files): every ``prune_compensate`` import in ``recipes/``
(the ``prune_compensate_recipes`` distribution)
must be ``from prune_compensate import NAME`` with NAME in ``prune_compensate.__all__``."""

from __future__ import annotations

import ast
from pathlib import Path

from import_graph import circles, import_graph, package_modules, script_modules

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


PACKAGES = {
    "prune_compensate": ROOT / "prune_compensate",
    "prune_compensate_recipes": ROOT / "recipes" / "prune_compensate_recipes",
    "pc_testkit": ROOT / "testkit" / "pc_testkit",
    "benchmarks": ROOT / "benchmarks",
    "tools": ROOT / "tools",
}
SCRIPT_FOLDERS = ("tests", "examples")

# The core's stages, lowest first: a module imports only its own stage and lower ones. Every
# top-level module and subpackage of the core is placed here; a new one fails the test until it is.
STAGES = [
    {"errors", "version", "progress", "output_dir"},  # the foundation every stage may use
    {"model"},  # find, load and locate the blocks
    {"calibration"},  # read samples, encode them, run the hooked forward
    {"scoring"},  # sentence embeddings, retrieval metrics and pairs: shared by pruning and eval
    {"pruning"},  # profile, fit, heal, prune
    {"checkpoint"},  # save, reload, delta
    {"export"},  # engine formats (DeciLM, GGUF) written from a pruned model
    {"eval"},  # what pruning cost, pruned vs original
    {"report"},  # rich tables and plots of the results
    {"jobs"},  # one call per job: load, prune, evaluate, save
    {"cli"},  # the typer skin
    {""},  # the package facade (prune_compensate/__init__.py)
]


def repository_graph() -> dict[str, set[str]]:
    """Every module the repository has: its packages (the core, the recipes, the test kit, the
    benchmarks and the tools), and each folder of scripts (``tests``, ``examples``) as a flat
    namespace, prefixed by the folder."""
    modules = {}
    for package, root in PACKAGES.items():
        modules |= package_modules(root, package)
    graph = import_graph(modules)
    for folder in SCRIPT_FOLDERS:
        scripts = script_modules(ROOT / folder)
        local = import_graph({**modules, **scripts})
        graph |= {f"{folder}.{name}": {f"{folder}.{e}" if e in scripts else e for e in local[name]} for name in scripts}
    return graph


def _stage(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    placed = [i for i, stage in enumerate(STAGES) if part in stage]
    assert placed, f"{module} belongs to no stage: place prune_compensate.{part} in STAGES"
    return placed[0]


def test_graph_sees_every_module_and_lazy_import() -> None:
    graph = repository_graph()
    core = [f for f in (ROOT / "prune_compensate").rglob("*.py")]
    assert sum(name.startswith("prune_compensate.") or name == "prune_compensate" for name in graph) == len(core)
    assert "prune_compensate" in graph and "tools.results_table" in graph and "tests.conftest" in graph
    # ``package_versions`` imports the version inside the function: a lazy import is still an edge
    assert "prune_compensate.version" in graph["prune_compensate.checkpoint.format"]


def test_repository_has_no_import_circles() -> None:
    found = circles(repository_graph())
    assert not found, [" → ".join(c) for c in found]


def test_a_circle_is_found(tmp_path: Path) -> None:
    """The check above can fail: a package whose two modules import each other, one of them lazily
    inside a function (the shape of the loop that ``pruning`` and ``eval`` once had)."""
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "error.py").write_text("def mean_pool():\n    from ..high import score\n")
    (package / "high.py").write_text("from .low.error import mean_pool\n\ndef score():\n    pass\n")
    found = circles(import_graph(package_modules(package, "pkg")))
    assert found == [["pkg.high", "pkg.low.error", "pkg.high"]]
    (package / "low" / "error.py").write_text("def mean_pool():\n    pass\n")
    assert circles(import_graph(package_modules(package, "pkg"))) == []


def test_core_stages_only_import_lower_ones() -> None:
    """errors ← model ← calibration ← scoring ← pruning ← checkpoint ← eval ← report ← jobs ← cli
    ← the facade: a module never imports a later stage, lazily or not."""
    offences = []
    for name, edges in repository_graph().items():
        if name != "prune_compensate" and not name.startswith("prune_compensate."):
            continue
        for target in edges:
            if target.startswith("prune_compensate") and _stage(target) > _stage(name):
                offences.append(f"{name} imports the later stage {target}")
    assert not offences, offences


def test_core_never_imports_recipe_dependencies() -> None:
    """torch-geometric, peft, pyyaml and pykeen belong to the recipes' distribution."""
    offences = [
        f"{file.relative_to(ROOT)}:{line} imports {module}"
        for file, line, module, _ in _imports(ROOT / "prune_compensate")
        if module.split(".")[0] in ("torch_geometric", "peft", "yaml", "pykeen")
    ]
    assert not offences, offences
