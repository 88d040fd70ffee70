"""Save a pruned model as a checkpoint that reloads in one call, and never loads silently wrong.

Like peft, the saved config names what was replaced: ``config.json`` carries a
``quantization_config`` with ``quant_method`` = ``METHOD`` and, per replaced module path,
the compensation module's spec. transformers reads that field *before* it loads weights: with
``import prune_compensate`` (which registers this quantizer through transformers' public
``register_quantization_config`` / ``register_quantizer``), ``from_pretrained`` rebuilds the
skeleton — each listed attention core swapped for a ``LinearCompensation`` — and then loads the
safetensors weights into it. Without the import, stock transformers stops with "Unknown
quantization type ... prune_compensate" instead of handing back a model with random attention.

A stock ``from_pretrained`` would only *warn* about an unknown quantization type and then
re-initialise the dropped q/k/v/o at random (checked on transformers 5.23). To make that fail
loudly, the weights file keeps every dropped parameter as a zero-size *tombstone* tensor (no
weights, zero bytes): stock transformers sees a size mismatch and raises; our quantizer rebuilds a
skeleton without those parameters and tells the loader to ignore the tombstones. A ``README.md``
in the folder says how to load it.

Writing is ``save.save_pruned``, reloading ``reload.load_pruned``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.quantizers.auto import (
    AUTO_QUANTIZATION_CONFIG_MAPPING,
    AUTO_QUANTIZER_MAPPING,
    register_quantization_config,
    register_quantizer,
)
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..errors import PCError
from ..pruning.compensation import (
    BlockCompensation,
    LinearCompensation,
    MergedProjection,
    compensation_from_spec,
    replace_module,
)

# The name stock transformers prints in its "Unknown quantization type, got ..." warning when the
# package is not imported, so it says what to do. Checkpoints written before it used the bare name.
METHOD = "prune_compensate: run `import prune_compensate` before from_pretrained"
LEGACY_METHODS = ("prune_compensate",)
MANIFEST = "prune_manifest.json"
CHECKPOINT_README = """# Pruned with prune_compensate

Some attention layers of this model were replaced by linear compensation modules
(see prune_manifest.json). Load it with

    import prune_compensate
    model = prune_compensate.load_pruned("THIS_FOLDER").model

or call transformers' from_pretrained after `import prune_compensate`. A plain from_pretrained
without that import fails with a size mismatch on the dropped attention weights (stored as
zero-size tensors), by design: otherwise it would re-initialise them at random.
"""


def _register(mapping: dict, registrar: Callable[[str], Callable], cls: type) -> type:
    for name in (METHOD, *LEGACY_METHODS):
        # importing twice (e.g. importlib.reload) must not fail on "already registered"
        if mapping.get(name) is not cls:
            mapping.pop(name, None)
            registrar(name)(cls)
    return cls


class PruneCompensateConfig(QuantizationConfigMixin):
    """``replaced``: {module path in the model: ``LinearCompensation`` keyword arguments}."""

    def __init__(self, replaced: dict[str, dict[str, Any]] | None = None, version: int = 1, **kwargs: Any) -> None:
        self.quant_method = METHOD
        self.replaced = dict(replaced or {})
        self.version = version

    def to_dict(self) -> dict[str, Any]:
        return {"quant_method": METHOD, "replaced": self.replaced, "version": self.version}


class PruneCompensateQuantizer(HfQuantizer):
    """Rebuilds the pruned skeleton before transformers loads the weights (no calibration)."""

    requires_calibration = False

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        tombstones = set()
        for path, spec in self.quantization_config.replaced.items():
            tombstones |= {_tombstone_pattern(path, name) for name in spec.get("dropped_params", [])}
            try:
                model.get_submodule(path)
            except AttributeError as err:
                raise PCError(
                    f"pruned checkpoint names module {path!r}, which {type(model).__name__} does not have",
                    "load it with the transformers version it was saved with",
                ) from err
            replace_module(model, path, compensation_from_spec(spec, device="meta"))
        # an instance attribute read by transformers' loading report: the tombstones are expected
        # (their on-disk names may carry the older prefixes, hence the end-anchored patterns)
        ignored = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])
        model._keys_to_ignore_on_load_unexpected = ignored | tombstones
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True


PruneCompensateConfig = _register(AUTO_QUANTIZATION_CONFIG_MAPPING, register_quantization_config, PruneCompensateConfig)
PruneCompensateQuantizer = _register(AUTO_QUANTIZER_MAPPING, register_quantizer, PruneCompensateQuantizer)


def _tombstone_pattern(path: str, param: str) -> str:
    """Regex for a tombstone key from the block list's name on (``layers.0.self_attn.q_proj.weight``),
    so it matches whatever prefix the checkpoint's key naming puts before the block list."""
    parts = path.split(".")
    index = max(i for i, part in enumerate(parts) if part.isdigit())
    return r"(^|\.)" + re.escape(".".join([*parts[index - 1 :], param])) + "$"


def compensation_spec(module: LinearCompensation) -> dict[str, Any]:
    """The keyword arguments that rebuild ``module`` (``compensation_from_spec``)."""
    extra: dict[str, Any] = {}
    if isinstance(module, BlockCompensation):
        extra = {"block": True, "attributes": module.attributes}
    if isinstance(module, MergedProjection):
        extra = {"merged": True, "merged_layer": module.merged_layer}
    return {
        **extra,
        "dim_in": module.dim_in,
        "dim_out": module.dim_out,
        "kind": module.kind,
        "rank": module.rank,
        "bias": module.bias is not None,
        "output_arity": module.output_arity,
        "layer_idx": module.layer_idx,
        "dropped_params": module.dropped_params,
    }


def replaced_modules(model: nn.Module) -> dict[str, LinearCompensation]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LinearCompensation)}


def package_versions() -> dict[str, str]:
    """Versions that produced a checkpoint, written into every manifest."""
    import platform

    import transformers

    from ..version import __version__

    return {
        "prune_compensate": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The ``prune_manifest.json`` of a checkpoint folder."""
    file = Path(path) / MANIFEST
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PCError(f"cannot read {file} ({err})", "point at a complete checkpoint written by `pc prune`") from err
