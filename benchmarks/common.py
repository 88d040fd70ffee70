"""What every benchmark script shares: where an area's results live, and the one writer that puts
a run's settings and command inside its result file, so tables select on fields, never on names.

Scripts run as modules from the repository root (``python -m benchmarks.core.heal_minilm ...``), so
they import each other and ``tools`` as packages, with no ``sys.path`` edits.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AREAS = ("core", "elmm", "tofu", "families")


def results_dir(area: str) -> Path:
    """``benchmarks/<area>/results``: the committed result files of one area."""
    if area not in AREAS:
        raise ValueError(f"unknown benchmark area {area!r}: use one of {', '.join(AREAS)}")
    return ROOT / "benchmarks" / area / "results"


PRIVATE = ("data_dir",)  # where the data sits on the machine that ran it: recorded as DIR, as in the command


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """A script's parsed options as JSON values (paths as strings, the data folder as ``DIR``)."""
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in sorted(vars(args).items())}
    return {key: "DIR" if key in PRIVATE and value is not None else value for key, value in settings.items()}


def command_line() -> str:
    """How this run was started, as a reader would retype it (``python -m`` for a module run)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    return " ".join([head, *map(shlex.quote, sys.argv[1:])])


def write_result(path: Path, document: dict[str, Any], args: argparse.Namespace | None = None) -> Path:
    """Write ``document`` as JSON to ``path`` atomically, with ``settings`` (the parsed options)
    and ``command`` first, unless the document already holds them."""
    head: dict[str, Any] = {"command": document.get("command") or command_line()}
    if args is not None:
        head["settings"] = settings_of(args)
    text = json.dumps({**head, **document}, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
    return path


def keep(source: Path, dest: Path, run: dict[str, Any]) -> Path:
    """Commit a run's metrics file as a result, with ``run`` inside: what the run was (``kind``,
    ``dataset``, ``group``, ``variant``, ``seed``, ``minutes``), the fields the results tables
    select on (``tools/results_table.results_of``), so a file's name carries no setting."""
    document = json.loads(Path(source).read_text(encoding="utf-8"))
    rest = {key: value for key, value in document.items() if key != "run"}
    return write_result(Path(dest), {"run": dict(sorted(run.items())), **rest})


def _run_fields(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` words as a run record; integers (seed, minutes) as numbers."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields[key] = int(value) if value.isdigit() else value
    return fields


if __name__ == "__main__":  # python -m benchmarks.common keep SOURCE DEST kind=tofu dataset=DB15K seed=0 ...
    if len(sys.argv) < 4 or sys.argv[1] != "keep":
        raise SystemExit("usage: python -m benchmarks.common keep SOURCE DEST key=value ...")
    print(keep(Path(sys.argv[2]), Path(sys.argv[3]), _run_fields(sys.argv[4:])))
