"""Change-only checkpoints (``pc prune --save delta``): the replacement maps and where they go,
like a peft adapter folder, instead of the whole model again.

Why: a full save of a 7B model is about 13 GB although only the compensation maps are new (16
maps of 4096 × 4096 + bias in bf16 are about 0.54 GB). A delta folder holds ``prune_delta.json``
(the base: hub id + resolved commit, or a local path + SHA-256 of its config and weight files;
the replaced module paths with their ``LinearCompensation`` specs), ``compensation.safetensors``
(the maps' weights only), the processor files and ``prune_manifest.json``. ``load_delta`` loads
the base, checks it is the one the maps were fitted on, swaps the recorded modules in and loads
their weights. A hub base is loaded at the recorded commit; a local base whose files changed is a
one-line error unless ``allow_base_change``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from .. import output_dir
from ..errors import PCError
from ..model.hub import ModelOrigin, file_sha256
from ..model.load import LoadedModel, load_model
from ..pruning.compensation import compensation_from_spec, replace_module
from .format import MANIFEST, compensation_spec, package_versions, replaced_modules

DELTA_FILE = "prune_delta.json"
WEIGHTS_FILE = "compensation.safetensors"


def local_fingerprint(folder: Path, gguf_file: str | None = None) -> dict[str, str]:
    """SHA-256 of a local model's config and weight files (what the maps depend on); of its GGUF
    file alone when it is one."""
    if gguf_file is not None:
        return {gguf_file: file_sha256(folder / gguf_file)}
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors")), *sorted(folder.glob("*.bin"))]
    return {f.name: file_sha256(f) for f in files if f.is_file()}


def base_record(origin: ModelOrigin) -> dict[str, Any]:
    """What a delta records about its base (see module docstring)."""
    record: dict[str, Any] = dict(origin.to_manifest())
    if origin.repo_id is None:
        record["sha256"] = local_fingerprint(origin.local_dir, origin.gguf_file)
    elif not origin.commit:
        raise PCError(f"the commit of base {origin.repo_id} is unknown", "save with --save full instead")
    return record


def save_delta(
    model: nn.Module,
    processor: Any,
    out: str | os.PathLike,
    manifest: dict[str, Any],
    base: ModelOrigin,
    overwrite: bool = False,
) -> Path:
    """Write a change-only checkpoint of ``model`` (pruned in place from ``base``) to ``out``."""
    modules = replaced_modules(model)
    if not modules:
        raise PCError("the model has no pruned layers to save", "run prune_ first")
    record = base_record(base)
    out = Path(out).resolve()
    with output_dir.atomic_out_dir(out, overwrite, owned=MANIFEST) as tmp:
        state = {
            f"{name}.{key}": value.detach().contiguous().cpu()
            for name, m in modules.items()
            for key, value in m.state_dict().items()
        }
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        delta = {"schema": 1, "base": record, "replaced": {n: compensation_spec(m) for n, m in modules.items()}}
        (tmp / DELTA_FILE).write_text(json.dumps(delta, indent=2) + "\n", encoding="utf-8")
        if processor is not None:
            processor.save_pretrained(tmp)
        manifest = {**manifest, "base": record, "save": "delta"}
        manifest.setdefault("versions", package_versions())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out


def is_delta(path: str | os.PathLike) -> bool:
    return (Path(path) / DELTA_FILE).is_file()


def _load_base(base: dict[str, Any], allow_base_change: bool, **options: Any) -> LoadedModel:
    if "hub_id" in base:
        try:
            return load_model(base["hub_id"], revision=base["commit"], **options)
        except PCError:
            if not allow_base_change:
                raise
            return load_model(base["hub_id"], revision=base.get("revision"), **options)
    folder, gguf_file = Path(base["path"]), base.get("gguf_file")
    if not (folder / (gguf_file or "config.json")).is_file():
        raise PCError(f"the base model {folder} of this delta checkpoint is gone", "restore it, or re-prune")
    if not allow_base_change:
        found = local_fingerprint(folder, gguf_file)
        if found != base.get("sha256"):
            changed = sorted(k for k in {*found, *base.get("sha256", {})} if found.get(k) != base["sha256"].get(k))
            raise PCError(
                f"the base model {folder} changed since the maps were fitted ({', '.join(changed)} differ)",
                "restore the original base, or pass --allow-base-change to apply the maps anyway",
            )
    return load_model(folder, gguf_file=gguf_file, **options)


def load_delta(
    path: str | os.PathLike,
    *,
    allow_base_change: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
    **options: Any,
) -> LoadedModel:
    """Load the recorded base, apply the recorded replacements and load their weights."""
    path = Path(path)
    try:
        delta = json.loads((path / DELTA_FILE).read_text(encoding="utf-8"))
        weights = load_file(str(path / WEIGHTS_FILE))
    except (OSError, ValueError) as err:
        raise PCError(
            f"delta checkpoint {path} is damaged ({err})", "write it again with `pc prune --save delta`"
        ) from err
    loaded = _load_base(delta["base"], allow_base_change, dtype=dtype, device=device, **options)
    model = loaded.model
    for name, spec in delta["replaced"].items():
        try:
            model.get_submodule(name)
        except AttributeError as err:
            raise PCError(f"the base has no module {name!r} named by {path}", "is this the right base model?") from err
        replace_module(model, name, compensation_from_spec(spec))
        prefix = name + "."
        own = {key[len(prefix) :]: value for key, value in weights.items() if key.startswith(prefix)}
        model.get_submodule(name).load_state_dict(own, strict=True)
    model.eval()
    return LoadedModel(model=model, processor=loaded.processor, source=str(path), origin=loaded.origin)
