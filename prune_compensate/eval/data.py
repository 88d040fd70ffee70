"""Evaluation data for ``pc eval``: a text corpus (LMs), image–caption pairs (VLMs) and
(query, document) pairs (encoders), from files, ``datasets``, or the embedded defaults.

The embedded sets are disjoint from the embedded calibration set by construction
(``tools/make_default_eval.py``): the text is FB15k-237 *test* triples (calibration: training
triples), the pairs are entities whose name appears in no calibration line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import PCError

EMBEDDED = "embedded"
DATA = Path(str(files("prune_compensate") / "data"))
EMBEDDED_FILES = {"text": DATA / "default_eval_text.jsonl", "pairs": DATA / "default_eval_pairs.jsonl"}


@dataclass
class Caption:
    """One image–caption example: the caption is scored, the images are context."""

    caption: str
    images: list[str] = field(default_factory=list)
    origin: str = ""


def _jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                origin = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PCError(
                        f"line {origin} is not valid JSON ({err.msg})", "write one JSON object per line"
                    ) from err
                if not isinstance(record, dict):
                    raise PCError(f"line {origin} is not a JSON object", "write one JSON object per line")
                rows.append((origin, record))
    except UnicodeDecodeError as err:
        raise PCError(f"{path} is not UTF-8 text", "pass a UTF-8 JSONL or text file") from err
    except FileNotFoundError as err:
        raise PCError(f"evaluation data {path} does not exist", "check the path") from err
    if not rows:
        raise PCError(f"evaluation data {path} holds no examples", "add at least one line")
    return rows


def _field(origin: str, record: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        if isinstance(record.get(name), str):
            return record[name]
    raise PCError(f"line {origin} has no string field {' or '.join(map(repr, names))}", "add it to every line")


def read_texts(source: str, text_column: str = "text", split: str = "test") -> list[str]:
    """Documents of a corpus: ``embedded``, a ``.txt`` file (one document), a JSONL file
    (``text_column`` per line), a ``datasets`` folder, or a ``datasets`` hub id as
    ``NAME[:CONFIG]`` (``split`` of it, e.g. ``wikitext:wikitext-2-raw-v1``)."""
    path = EMBEDDED_FILES["text"] if source == EMBEDDED else Path(source)
    if path.is_file() and path.suffix != ".jsonl":
        try:
            return [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as err:
            raise PCError(f"{path} is not UTF-8 text", "pass a UTF-8 text or JSONL file") from err
    if path.is_file():
        return [_field(origin, record, (text_column,)) for origin, record in _jsonl(path)]
    return _dataset_texts(source, text_column, split)


def _dataset_texts(source: str, text_column: str, split: str) -> list[str]:
    import datasets

    try:
        if Path(source).is_dir():
            data = datasets.load_from_disk(source)
        else:
            name, _, config = source.partition(":")
            data = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types for missing or unreachable data
        raise PCError(
            f"cannot read evaluation text {source!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            "pass a text/JSONL file, a saved dataset folder, or a datasets id as NAME[:CONFIG]",
        ) from err
    if isinstance(data, datasets.DatasetDict):
        data = data[split] if split in data else data[next(iter(data))]
    if text_column not in data.column_names:
        raise PCError(f"{source} has no column {text_column!r} ({', '.join(data.column_names)})", "set --text-column")
    return [str(t) for t in data[text_column] if str(t).strip()]


def read_pairs(source: str) -> list[tuple[str | None, str]]:
    """(query, document) pairs: ``embedded`` or a JSONL file with ``query`` and ``document`` per
    line; a line with a ``document`` only adds a distractor to the corpus (a negative for every
    query)."""
    path = EMBEDDED_FILES["pairs"] if source == EMBEDDED else Path(source)
    pairs: list[tuple[str | None, str]] = []
    for origin, record in _jsonl(path):
        query = _field(origin, record, ("query",)) if "query" in record else None
        pairs.append((query, _field(origin, record, ("document",))))
    if not any(query is not None for query, _ in pairs):
        raise PCError(f"{path} has no line with a 'query'", "add (query, document) pairs")
    return pairs


def read_captions(source: str) -> list[Caption]:
    """Image–caption examples from a JSONL file: ``caption`` (or ``text``) and ``images`` (or
    ``image``), image paths relative to the file."""
    path = Path(source)
    examples = []
    for origin, record in _jsonl(path):
        images = record.get("images", record.get("image", []))
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise PCError(f"line {origin} needs 'images': a list of image paths", "add the image of the caption")
        images = [str(p if Path(p).is_absolute() else path.parent / p) for p in images]
        examples.append(Caption(_field(origin, record, ("caption", "text")), images, origin))
    return examples
