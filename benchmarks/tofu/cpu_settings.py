"""The TOFU CPU settings of ``cpu.yaml``: one list of ``pc run tofu`` overrides per kind of run.

    python -m benchmarks.tofu.cpu_settings runs     # one override per line, for the shell scripts

An entry of a list that names another list (``model``, ``transductive``) stands for that list's
overrides, in place; everything else is a ``key=value`` override.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

SETTINGS = Path(__file__).resolve().parent / "cpu.yaml"


def overrides(name: str) -> list[str]:
    """The overrides of the list ``name``, the lists it names expanded in place."""
    lists = yaml.safe_load(SETTINGS.read_text(encoding="utf-8"))
    if name not in lists:
        raise SystemExit(f"no TOFU CPU settings named {name!r} in {SETTINGS.name}: use one of {', '.join(lists)}")
    expanded: list[str] = []
    for entry in lists[name]:
        expanded += overrides(entry) if entry in lists else [entry]
    return expanded


if __name__ == "__main__":
    print("\n".join(overrides(sys.argv[1] if len(sys.argv) > 1 else "runs")))
