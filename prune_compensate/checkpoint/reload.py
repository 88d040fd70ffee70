"""``load_pruned``: one call for any checkpoint ``pc prune`` writes, full or delta."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PCError
from ..model.load import LoadedModel, load_model
from .delta import is_delta, load_delta
from .format import MANIFEST


def load_pruned(
    path: str | os.PathLike, *, dtype: str = "auto", device: str = "cpu", allow_base_change: bool = False
) -> LoadedModel:
    """Reload a checkpoint written by ``save_pruned`` / ``save_delta`` (or ``pc prune --out``): one
    call. A delta checkpoint loads its recorded base first (see ``delta``)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise PCError(f"{path} is not a pruned checkpoint (no {MANIFEST})", "point at a folder written by `pc prune`")
    if is_delta(path):
        return load_delta(path, dtype=dtype, device=device, allow_base_change=allow_base_change)
    return load_model(path, dtype=dtype, device=device)
