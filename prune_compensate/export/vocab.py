"""Where a GGUF export gets its tokenizer: the ``tokenizer.*`` fields of a GGUF file.

A GGUF carries its tokenizer as metadata (token strings, types, merges, the pre-tokenizer's name,
special ids, the chat template). Writing those for an arbitrary transformers tokenizer means
naming its pre-tokenizer the way llama.cpp's converter does (by hashing how it splits a test
text), which a wrong guess breaks silently. So the export copies them, unchanged, from a GGUF of
the same base model: the base itself when the model was pruned from a ``.gguf`` (its manifest
names the file), or ``--vocab-from FILE.gguf``. ``--vocab-from none`` writes no tokenizer: the
engine then takes token ids only (llama.cpp's vocabulary type ``none``), for tests and pipelines
that tokenise elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import PCError, first_line

NO_VOCAB = "none"


@dataclass
class Vocab:
    """Tokenizer fields to write: ``(key, value, type, array element type)``; empty for none."""

    source: str
    fields: list[tuple[str, Any, Any, Any]] = field(default_factory=list)
    size: int | None = None


def require_gguf() -> ModuleType:
    """The ``gguf`` package, or one line saying how to install it."""
    try:
        import gguf
    except ImportError as err:
        raise PCError("writing GGUF needs the gguf package, which is not installed", "pip install gguf") from err
    return gguf


def read_vocab(source: str | Path) -> Vocab:
    """The ``tokenizer.*`` fields of the GGUF file ``source`` (``"none"``: no tokenizer)."""
    if str(source) == NO_VOCAB:
        return Vocab(NO_VOCAB)
    gguf = require_gguf()
    path = Path(source)
    if not path.is_file():
        raise PCError(f"--vocab-from {path} is not a file", "pass a .gguf file of the same base model, or none")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError/struct errors on anything not a GGUF
        raise PCError(f"cannot read {path} as GGUF ({first_line(err)})", "pass a .gguf file") from err
    fields = []
    size = None
    for key, entry in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = entry.types[0]
        element = entry.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = entry.contents()
        fields.append((key, value, kind, element))
        if key == "tokenizer.ggml.tokens":
            size = len(value)
    if size is None:
        raise PCError(f"{path} holds no tokenizer (no tokenizer.ggml.tokens)", "pass a GGUF that has one, or none")
    return Vocab(str(path), fields, size)


def base_gguf(manifest: dict[str, Any]) -> Path | None:
    """The GGUF file a pruned checkpoint was made from, when its manifest records one."""
    for record in [manifest.get("base") or {}, *(step.get("base") or {} for step in manifest.get("history", []))]:
        if record.get("gguf_file") and record.get("path"):
            path = Path(record["path"]) / record["gguf_file"]
            if path.is_file():
                return path
    return None
