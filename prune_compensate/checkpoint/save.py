"""Write a pruned model as a checkpoint folder (see ``format`` for what the folder holds).

Writing goes to a hidden temporary sibling of ``out`` that is renamed into place at the end, so a
failed or interrupted save leaves no ``out`` and ``--overwrite`` never leaves neither the old nor
the new checkpoint (``output_dir``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import output_dir
from ..errors import PCError
from .format import (
    CHECKPOINT_README,
    MANIFEST,
    PruneCompensateConfig,
    compensation_spec,
    package_versions,
    read_manifest,
    replaced_modules,
)
from .usage_files import copy_usage_files


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Fail before any work if ``out`` cannot take a checkpoint (only a checkpoint is overwritten)."""
    output_dir.check_out_dir(Path(out).resolve(), overwrite, owned=MANIFEST)


def save_pruned(
    model: nn.Module,
    processor: Any,
    out: str | os.PathLike,
    manifest: dict[str, Any],
    overwrite: bool = False,
    source: str | os.PathLike | None = None,
) -> Path:
    """Write config (with the replacement spec), safetensors weights, processor files and
    ``prune_manifest.json`` to ``out`` atomically (see ``output_dir``).

    ``overwrite`` replaces only a folder that is itself a pruned checkpoint. ``source`` (default:
    the folder the model was loaded from) lends the files that say how the model is used beyond
    transformers, e.g. sentence-transformers' ``modules.json`` and pooling folders.
    """
    out = Path(out).resolve()
    modules = replaced_modules(model)
    if not modules:
        raise PCError("the model has no pruned layers to save", "run prune_ first")
    with output_dir.atomic_out_dir(out, overwrite, owned=MANIFEST) as tmp:
        model.config.quantization_config = PruneCompensateConfig(
            {name: compensation_spec(m) for name, m in modules.items()}
        )
        state = model.state_dict()
        for name, module in modules.items():
            dtype = next(module.parameters(), torch.empty(0)).dtype
            for param in module.dropped_params:
                state[f"{name}.{param}"] = torch.empty(0, dtype=dtype)
        model.save_pretrained(tmp, state_dict=state)
        (tmp / "README.md").write_text(CHECKPOINT_README, encoding="utf-8")
        if processor is not None:
            processor.save_pretrained(tmp)
        source = source if source is not None else getattr(model, "name_or_path", None)
        copy_usage_files(source, tmp)
        manifest = {**manifest, "versions": manifest.get("versions") or package_versions()}
        history = pruning_history(source)
        if history:
            manifest["history"] = history
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def pruning_history(source: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Earlier pruning steps of ``source`` when it is itself a pruned checkpoint (oldest first):
    its own history plus its manifest, so a checkpoint pruned twice says what each step did."""
    folder = Path(source) if source else None
    if folder is None or not (folder / MANIFEST).is_file():
        return []
    try:
        previous = read_manifest(folder)
    except PCError:
        return []
    history = list(previous.pop("history", []))
    return [*history, previous]
