"""Per-entity image tokens for MVTC, encoded once per dataset and kept on disk.

Two sources:

* ``folder``: ``images/<entity>/*`` through the backbone's *own* image processor and vision tower
  (``get_image_features``, the public VLM API, so the tokens are already projected into the
  language model's hidden size D). When the model can return the CLS token
  (``vision_feature_select_strategy="full"``, LLaVA) it is split off as the image's CLS, as in
  the paper; otherwise the image's CLS is the mean of its tokens. Encoded tokens go to
  ``cache_dir/<dataset>-<key>/<entity id>.safetensors`` (``tokens`` ``(n, M, D)``, ``cls``
  ``(n, D)``), so epochs read them back instead of re-running the tower. Size: n·M·D values per
  entity (LLaVA-1.5: 10 × 576 × 4096 in fp16 = 47 MB), so pick ``cache_dir`` on a large disk.
* ``features``: the dataset's precomputed ``image_features`` ``(|E|, F)`` rows: one token per
  entity (N = M = 1), projected to D by a trained linear map in the model.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prune_compensate import PCError, progress_bar
from prune_compensate_recipes.mkgc.data import KGDataset


@dataclass
class ImageBatch:
    """``tokens`` ``(B, N, M, F)``, ``mask`` ``(B, N)`` (which slots hold an image), ``cls``
    ``(B, N, F)``. F = D for folder images, the feature width for precomputed features."""

    tokens: torch.Tensor
    mask: torch.Tensor
    cls: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ImageBatch:
        return ImageBatch(self.tokens.to(device, dtype), self.mask.to(device), self.cls.to(device, dtype))


def has_vision_tower(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "get_image_features", None))


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise PCError(f"cannot read image {path} ({err})", "remove or replace the file") from err


def _image_tokens(output: Any, count: int) -> list[torch.Tensor]:
    """``get_image_features``' output as one ``(M, D)`` tensor per image."""
    if hasattr(output, "pooler_output") and output.pooler_output is not None:
        output = output.pooler_output
    if isinstance(output, (list, tuple)):
        return [t.reshape(-1, t.shape[-1]) for t in output]
    if output.dim() == 3:
        return list(output)
    if output.shape[0] % count:
        raise PCError(f"cannot split {output.shape[0]} image tokens into {count} images", "use precomputed features")
    return list(output.reshape(count, -1, output.shape[-1]))


@torch.no_grad()
def encode_images(model: torch.nn.Module, processor: Any, paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """``paths`` → tokens ``(n, M, D)`` and CLS ``(n, D)`` in the language model's space."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        raise PCError("the backbone's processor has no image processor", "set images.source=features or none")
    inputs = image_processor([_open_image(p) for p in paths], return_tensors="pt")
    parameters = inspect.signature(model.get_image_features).parameters
    kwargs = {k: v for k, v in inputs.items() if k in parameters or "kwargs" in parameters}
    dtype = next(model.parameters()).dtype
    kwargs = {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in kwargs.items()}
    full = "vision_feature_select_strategy" in parameters
    if full:
        kwargs["vision_feature_select_strategy"] = "full"
    output = model.get_image_features(**kwargs, return_dict=True)
    per_image = _image_tokens(output, len(paths))
    if len({t.shape for t in per_image}) != 1:
        raise PCError("images of one entity gave different token counts", "use a fixed-resolution processor")
    tokens = torch.stack(per_image).float()
    if full:
        return tokens[:, 1:], tokens[:, 0]
    return tokens, tokens.mean(1)


class ImageBank:
    """Gives each batch of entities its images (``None`` when the run uses no images)."""

    def __init__(self, kind: str, dataset: KGDataset, per_entity: int, cache: Path | None = None) -> None:
        self.kind, self.dataset, self.per_entity, self.cache = kind, dataset, per_entity, cache
        self.dim = 0
        if kind == "features":
            if dataset.image_features is None:
                raise PCError(f"{dataset.name} has no image_features file", "set images.source=folder or none")
            self.dim = int(dataset.image_features.shape[1])

    @staticmethod
    def resolve_source(source: str, dataset: KGDataset, model: torch.nn.Module, per_entity: int) -> str:
        if per_entity == 0 or source == "none":
            return "none"
        if source == "folder" and not has_vision_tower(model):
            raise PCError(f"{type(model).__name__} has no vision tower", "set images.source=features or none")
        if source == "folder" and not dataset.entity_images:
            raise PCError(f"{dataset.name} has no images/<entity>/ folders", "set images.source=features or none")
        if source != "auto":
            return source
        if dataset.entity_images and has_vision_tower(model):
            return "folder"
        return "features" if dataset.image_features is not None else "none"

    @staticmethod
    def cache_key(dataset: KGDataset, model_source: str, per_entity: int) -> str:
        digest = hashlib.sha1(f"{Path(model_source).resolve()}|{per_entity}".encode()).hexdigest()[:12]
        return f"{dataset.name}-{digest}"

    def prepare(self, model: torch.nn.Module, processor: Any, show_progress: bool = True) -> None:
        """Encode every entity's first ``per_entity`` images once; later runs reuse the files."""
        if self.kind != "folder":
            return
        assert self.cache is not None
        self.cache.mkdir(parents=True, exist_ok=True)
        todo = [e for e in sorted(self.dataset.entity_images) if not (self.cache / f"{e}.safetensors").is_file()]
        with progress_bar(show_progress) as progress:
            task = progress.add_task("encoding entity images", total=len(todo))
            for entity in todo:
                paths = self.dataset.entity_images[entity][: self.per_entity]
                tokens, cls = encode_images(model, processor, paths)
                tmp = self.cache / f".{entity}.tmp"
                save_file({"tokens": tokens.half(), "cls": cls.half()}, str(tmp))
                tmp.replace(self.cache / f"{entity}.safetensors")
                progress.advance(task)
        first = next(iter(sorted(self.dataset.entity_images)), None)
        if first is not None:
            self.dim = int(load_file(str(self.cache / f"{first}.safetensors"))["cls"].shape[-1])

    def batch(self, entities: torch.Tensor) -> ImageBatch | None:
        if self.kind == "none":
            return None
        b = entities.shape[0]
        if self.kind == "features":
            features = self.dataset.image_features[entities]  # (B, F)
            mask = torch.ones(b, 1, dtype=torch.bool)
            if self.dataset.image_feature_mask is not None:
                mask = self.dataset.image_feature_mask[entities][:, None]
            return ImageBatch(features[:, None, None, :], mask, features[:, None, :])
        loaded = {}
        for e in entities.tolist():
            if e in self.dataset.entity_images and e not in loaded:
                loaded[e] = load_file(str(self.cache / f"{e}.safetensors"))
        n = max([1] + [v["tokens"].shape[0] for v in loaded.values()])
        m = max([1] + [v["tokens"].shape[1] for v in loaded.values()])
        tokens = torch.zeros(b, n, m, self.dim)
        cls = torch.zeros(b, n, self.dim)
        mask = torch.zeros(b, n, dtype=torch.bool)
        for i, e in enumerate(entities.tolist()):
            if e in loaded:
                t = loaded[e]["tokens"].float()
                tokens[i, : t.shape[0], : t.shape[1]] = t
                cls[i, : t.shape[0]] = loaded[e]["cls"].float()
                mask[i, : t.shape[0]] = True
        return ImageBatch(tokens, mask, cls)
