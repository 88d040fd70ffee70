"""Evaluation data for ``pc eval``: a text corpus (LMs) and image–caption pairs (VLMs), from
files, ``datasets``, or the embedded defaults; (query, document) pairs (encoders) are read by
``scoring.pairs``, which the heal's step selection shares.

The embedded sets are disjoint from the embedded calibration sets by construction: the text is 16
WikiText-2 test articles (the prose calibration set is 30 others, ``tools/make_default_prose.py``),
the pairs are FB15k-237 entities whose name appears in no triples calibration line
(``tools/make_default_eval.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ..calibration.sources import EMBEDDED_PROSE, EMBEDDED_TRIPLES, load_dataset_id
from ..errors import PCError, first_line
from ..scoring.pairs import EMBEDDED, read_records, string_field

DATA = Path(str(files("prune_compensate") / "data"))
EMBEDDED_TEXTS = {
    EMBEDDED: DATA / "default_eval_prose.jsonl",  # CC BY-SA 3.0, see data/PROSE_LICENSE.md
    EMBEDDED_PROSE: DATA / "default_eval_prose.jsonl",
    EMBEDDED_TRIPLES: DATA / "default_eval_text.jsonl",  # 500 verbalised FB15k-237 test triples
}


@dataclass
class Caption:
    """One image–caption example: the caption is scored, the images are context."""

    caption: str
    images: list[str] = field(default_factory=list)
    origin: str = ""


def read_texts(source: str, text_column: str = "text", split: str = "test") -> list[str]:
    """Documents of a corpus: ``embedded`` (= ``embedded:prose``; ``embedded:triples`` for the
    verbalised test triples), a ``.txt`` file (one document), a JSONL file
    (``text_column`` per line), a ``datasets`` folder, or a ``datasets`` hub id as
    ``NAME[:CONFIG]`` (``split`` of it, e.g. ``wikitext:wikitext-2-raw-v1``)."""
    path = EMBEDDED_TEXTS.get(source) or Path(source)
    if path.is_file() and path.suffix != ".jsonl":
        try:
            return [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as err:
            raise PCError(f"{path} is not UTF-8 text", "pass a UTF-8 text or JSONL file") from err
    if path.is_file():
        return [string_field(origin, record, (text_column,)) for origin, record in read_records(path)]
    return _dataset_texts(source, text_column, split)


def _dataset_texts(source: str, text_column: str, split: str) -> list[str]:
    import datasets

    try:
        data = datasets.load_from_disk(source) if Path(source).is_dir() else load_dataset_id(source, split)
    except Exception as err:  # datasets raises many types for missing or unreachable data
        raise PCError(
            f"cannot read evaluation text {source!r}: {first_line(err)}",
            "pass a text/JSONL file, a saved dataset folder, or a datasets id as NAME[:CONFIG]",
        ) from err
    if isinstance(data, datasets.DatasetDict):
        data = data[split] if split in data else data[next(iter(data))]
    if text_column not in data.column_names:
        raise PCError(f"{source} has no column {text_column!r} ({', '.join(data.column_names)})", "set --text-column")
    return [str(t) for t in data[text_column] if str(t).strip()]


def read_captions(source: str) -> list[Caption]:
    """Image–caption examples from a JSONL file: ``caption`` (or ``text``) and ``images`` (or
    ``image``), image paths relative to the file."""
    path = Path(source)
    examples = []
    for origin, record in read_records(path):
        images = record.get("images", record.get("image", []))
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise PCError(f"line {origin} needs 'images': a list of image paths", "add the image of the caption")
        images = [str(p if Path(p).is_absolute() else path.parent / p) for p in images]
        examples.append(Caption(string_field(origin, record, ("caption", "text")), images, origin))
    return examples
