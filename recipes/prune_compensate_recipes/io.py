"""File writing shared by the recipes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_dir_write(target: Path, write: Callable[[Path], None]) -> None:
    """Fill a temp folder with ``write(tmp)``, then swap it in for ``target``: a kill leaves either
    the old folder or the new one (or ``.<name>.old``, which resuming recovers), never a half-written
    one; a failing ``write`` leaves ``target`` untouched."""
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
