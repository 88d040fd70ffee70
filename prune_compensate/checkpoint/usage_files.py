"""Carry over the files of the source model that say how it is used beyond transformers.

Why: a sentence-transformers model (MiniLM among them) is a transformer *plus* ``modules.json``,
``sentence_bert_config.json`` and module folders such as ``1_Pooling/`` and ``2_Normalize/``.
``save_pretrained`` writes only the transformer, so without these the pruned folder no longer
loads as the sentence model it was. Copied: the top-level files that are not the transformer's
weights and not already written by the save, and every module folder that ``modules.json`` names
(whole: a ``Dense`` module's own weights belong to the pipeline, not to the pruned transformer).
Exports of the *unpruned* weights (``onnx/``, ``openvino/``) and anything hidden stay behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")
NEVER_COPIED = {"config.json", "README.md", "generation_config.json"}


def source_folder(source: str | os.PathLike | None) -> Path | None:
    """The local folder of ``source``: itself when it is a folder, else its hub-cache snapshot."""
    if source is None or str(source) == "":
        return None
    path = Path(source)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), local_files_only=True))
    except Exception:  # not a cached hub id either: nothing to carry over
        return None


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")


def _module_folders(folder: Path) -> list[str]:
    """Sub-folders named by sentence-transformers' ``modules.json`` (``path`` of each module)."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    paths = [str(m.get("path", "")) for m in modules if isinstance(m, dict)]
    return [p for p in paths if p and not p.startswith((".", "/")) and ".." not in Path(p).parts]


def copy_usage_files(source: str | os.PathLike | None, out: Path) -> list[str]:
    """Copy the usage files of ``source`` into ``out`` (never over a file the save wrote).
    Returns the copied names, relative to ``out``."""
    folder = source_folder(source)
    if folder is None:
        return []
    copied = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if not entry.is_file() or name.startswith(".") or name in NEVER_COPIED or _is_weight_file(name):
            continue
        if not (out / name).exists():
            shutil.copy2(entry, out / name)
            copied.append(name)
    for sub in _module_folders(folder):
        if (folder / sub).is_dir() and not (out / sub).exists():
            shutil.copytree(folder / sub, out / sub)
            copied.append(sub)
    return copied
