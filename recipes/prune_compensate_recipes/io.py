"""File writing shared by the recipes: the core's atomic folder writer (one writer for the project)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prune_compensate import atomic_out_dir, clean_stale


def atomic_dir_write(target: Path, write: Callable[[Path], None], owned: str) -> None:
    """Fill a hidden temporary folder with ``write(tmp)``, then swap it in for ``target`` (the core's
    ``atomic_out_dir``): a kill leaves the old folder or the new one, never a half-written one, and a
    failing ``write`` leaves ``target`` untouched. ``owned`` is a file ``write`` creates; an existing
    ``target`` without it is someone else's folder and is refused, not replaced."""
    with atomic_out_dir(target, overwrite=True, owned=owned) as tmp:
        write(tmp)


def recover(target: Path, owned: str) -> None:
    """Undo what a killed write left beside ``target`` (a swap cut between its two renames is put
    back, abandoned partial folders are removed) before reading ``target``."""
    target = Path(target).resolve()
    if target.parent.is_dir():
        clean_stale(target.parent, target.name, owned)
