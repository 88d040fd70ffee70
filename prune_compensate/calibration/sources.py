"""Calibration sources: the one place samples are read — a JSONL file, a ``datasets`` folder,
the embedded text sets — and mixed with the embedded image set for a model that takes images.

Two text sets ship with the package: verbalised FB15k-237 triples (what an MKGC model reads) and
WikiText-2 prose (what a language model reads). ``"embedded"`` picks by model once it is loaded:
prose for a model that predicts tokens (an LM, a VLM's text decoder), triples for an encoder;
``"embedded:prose"`` / ``"embedded:triples"`` name one.

Only the raw samples (text and image paths) are held in memory; activations never are. Turning
samples into model inputs is ``encode``; running them through the model with hooks is ``forward``.
"""

from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..errors import PCError, first_line
from ..model.hub import looks_like_path

EMBEDDED = "embedded"
EMBEDDED_PROSE = "embedded:prose"
EMBEDDED_TRIPLES = "embedded:triples"
DATA = Path(str(files("prune_compensate") / "data"))  # the package's data folder, wherever it is installed


class CalibrationWarning(UserWarning):
    """Calibration data is usable but not what was asked for (e.g. fewer samples than ``n_samples``)."""


def embedded_calibration_path() -> Path:
    """1,500 verbalised FB15k-237 triples shipped with the package (see tools/make_default_calibration.py)."""
    return DATA / "default_calibration.jsonl"


def embedded_prose_calibration_path() -> Path:
    """1,257 paragraphs (at most 150 words) of 30 WikiText-2 test articles, CC BY-SA 3.0 (see
    tools/make_default_prose.py and data/PROSE_LICENSE.md); the embedded evaluation text is 16
    other articles of the same split."""
    return DATA / "default_calibration_prose.jsonl"


def embedded_image_calibration_path() -> Path:
    """46 image + prompt samples on 11 public-domain / CC0 photos (see tools/make_default_images.py)."""
    return DATA / "default_calibration_images.jsonl"


@dataclass
class CalibrationSample:
    """One calibration input: text and zero or more image paths. ``origin`` names it in errors."""

    text: str
    images: list[str] = field(default_factory=list)
    origin: str = ""


@dataclass
class CalibrationConfig:
    """Where calibration data comes from and how it is batched.

    ``source``: a JSONL file, a ``datasets`` directory (``save_to_disk`` or loadable files), a
    ``datasets`` hub id as ``NAME[:CONFIG]`` (its ``split``, blank rows left out; e.g.
    ``wikitext:wikitext-2-raw-v1``, downloaded once into the ``datasets`` cache), or an embedded
    set (``"embedded"``: prose for a model that predicts tokens, triples for an encoder;
    ``"embedded:prose"``, ``"embedded:triples"``). ``n_samples`` are drawn with ``seed`` when the
    source has more.
    """

    source: str = EMBEDDED
    n_samples: int = 1000
    max_length: int = 256
    batch_size: int = 8
    seed: int = 0
    text_column: str = "text"
    image_column: str | None = None
    split: str = "train"

    def __post_init__(self) -> None:
        for name in ("n_samples", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise PCError(f"{flag} must be at least 1, got {getattr(self, name)}", f"pass a positive {flag}")


def _read_jsonl(path: Path, text_column: str, image_column: str | None) -> list[CalibrationSample]:
    samples: list[CalibrationSample] = []
    image_key = image_column or "images"
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                sample = _parse_line(line, f"{path}:{number}", path.parent, text_column, image_key)
                if sample is not None:
                    samples.append(sample)
    except UnicodeDecodeError as err:
        raise PCError(
            f"calibration file {path} is not UTF-8 text (undecodable byte at offset {err.start})",
            'pass a JSONL file with one {"text": ..., "images": [...]} object per line',
        ) from err
    return samples


def _parse_line(line: str, origin: str, base: Path, text_column: str, image_key: str) -> CalibrationSample | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PCError(f"sample {origin} is not valid JSON ({err.msg})", "write one JSON object per line") from err
    if not isinstance(record, dict) or not isinstance(record.get(text_column), str):
        raise PCError(
            f"sample {origin} has no string field {text_column!r}",
            'each line needs {"text": ..., "images": [paths]} (or set --text-column)',
        )
    images = record.get(image_key) or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise PCError(f"sample {origin}: {image_key!r} must be a list of image paths", "fix that line")
    images = [str(p if Path(p).is_absolute() else base / p) for p in images]
    return CalibrationSample(record[text_column], images, origin)


def _read_dataset(path: Path, text_column: str, image_column: str | None) -> list[CalibrationSample]:
    import datasets

    try:
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            data = datasets.load_from_disk(str(path))
        else:
            data = datasets.load_dataset(str(path))
    except Exception as err:  # datasets raises many types for unreadable folders
        raise PCError(
            f"cannot read dataset {path}: {err}".splitlines()[0], "pass a JSONL file or a saved dataset"
        ) from err
    if isinstance(data, datasets.DatasetDict):
        split = "train" if "train" in data else next(iter(data))
        data = data[split]
    return _rows_as_samples(data, str(path), text_column, image_column)


def _rows_as_samples(data: Any, origin: str, text_column: str, image_column: str | None) -> list[CalibrationSample]:
    """A ``datasets.Dataset``'s rows as samples (the image column, when named, as a list of images)."""
    for column in (text_column, image_column):
        if column is not None and column not in data.column_names:
            raise PCError(
                f"dataset {origin} has no column {column!r} (columns: {', '.join(data.column_names)})",
                "set --text-column / --image-column",
            )
    samples = []
    for index, row in enumerate(data):
        images: Any = row[image_column] if image_column else []
        if images is None:
            images = []
        elif not isinstance(images, list):
            images = [images]
        samples.append(CalibrationSample(str(row[text_column]), images, f"{origin}[{index}]"))
    return samples


def load_dataset_id(source: str, split: str) -> Any:
    """``split`` of the ``datasets`` hub id ``NAME[:CONFIG]`` (``wikitext:wikitext-2-raw-v1``): the one
    reading of that form, for calibration here and for ``pc eval --text``. Raises what
    ``datasets`` raises; each caller words its own one-line error."""
    import datasets

    name, _, config = source.partition(":")
    return datasets.load_dataset(name, config or None, split=split)


def _read_hub_dataset(source: str, split: str, text_column: str, image_column: str | None) -> list[CalibrationSample]:
    """``NAME[:CONFIG]``'s ``split`` through ``datasets.load_dataset`` (its cache, its offline
    switch ``HF_DATASETS_OFFLINE``), blank rows left out: WikiText keeps empty lines between
    paragraphs, which would calibrate on nothing."""
    try:
        data = load_dataset_id(source, split)
    except Exception as err:  # datasets raises many types for missing, private or unreachable data
        raise PCError(
            f"cannot read calibration dataset {source!r} ({first_line(err)})",
            "pass a JSONL file, a saved dataset folder, or a datasets id as NAME[:CONFIG] (with --calib-split)",
        ) from err
    samples = _rows_as_samples(data, f"{source}:{split}", text_column, image_column)
    return [sample for sample in samples if sample.text.strip() or sample.images]


def _is_dataset_id(source: str) -> bool:
    """A name that is no file and can only be meant as a ``datasets`` hub id (``wikitext:wikitext-2-raw-v1``,
    ``allenai/c4``): not path-like, no file suffix, at most one ``/``."""
    path = Path(source)
    return not path.exists() and not looks_like_path(source) and path.suffix == "" and source.count("/") <= 1


class SourceSamples(list):
    """Samples as read from a ``CalibrationConfig``'s source (a ``list`` of ``CalibrationSample``).

    The type records where they came from: ``for_model`` turns the embedded default into image +
    text for a model that takes images only for samples read from the source, never for a list a
    caller built, which is used as given."""


def read_samples(config: CalibrationConfig) -> SourceSamples:
    """Read all samples of ``config.source`` and draw ``n_samples`` of them (seeded): the one
    reader of every calibration source, called once per job, before any model is loaded.
    ``"embedded"`` reads the triples here; ``for_model`` swaps in the prose for a token predictor."""
    embedded = {EMBEDDED: embedded_calibration_path(), EMBEDDED_TRIPLES: embedded_calibration_path()}
    embedded[EMBEDDED_PROSE] = embedded_prose_calibration_path()
    if config.source not in embedded and _is_dataset_id(config.source):
        hub = _read_hub_dataset(config.source, config.split, config.text_column, config.image_column)
        return _drawn(hub, config)
    source = embedded.get(config.source) or Path(config.source)
    if not source.exists():
        raise PCError(f"calibration source {source} does not exist", "pass a JSONL file or dataset directory")
    if source.is_dir():
        samples = _read_dataset(source, config.text_column, config.image_column)
    else:
        samples = _read_jsonl(source, config.text_column, config.image_column)
    return _drawn(samples, config, str(source))


def _drawn(samples: list[CalibrationSample], config: CalibrationConfig, source: str | None = None) -> SourceSamples:
    """``n_samples`` of ``samples``, drawn with ``seed`` (all of them, with a warning, when fewer)."""
    source = source or config.source
    if not samples:
        raise PCError(f"calibration source {source} holds no samples", "add at least one sample")
    if len(samples) < config.n_samples:
        warnings.warn(
            f"--n-samples {config.n_samples} asked for, but {source} holds {len(samples)} samples: using all of them",
            CalibrationWarning,
            stacklevel=3,  # the caller of read_samples
        )
    if len(samples) > config.n_samples:
        rng = random.Random(config.seed)
        samples = rng.sample(samples, config.n_samples)
    return SourceSamples(samples)


def for_model(
    samples: list[CalibrationSample],
    config: CalibrationConfig,
    has_images: bool,
    needs_images: bool = False,
    predicts_tokens: bool = False,
) -> list[CalibrationSample]:
    """The samples a model is calibrated on, given what it takes.

    The embedded default (``"embedded"``), as read from the source (``SourceSamples``), is the
    prose for a model that ``predicts_tokens`` (an LM, a VLM's text decoder), drawn with the same
    ``n_samples`` and ``seed``. For a model with an image processor (``has_images``), an embedded
    set becomes image + text: the embedded
    image samples replace as many text samples (only images, when the model ``needs_images`` in
    every prompt), shuffled with ``config.seed`` so that both kinds fall in the fitting and the
    held-out parts. Any other set is checked by ``check_images``.
    """
    if config.source == EMBEDDED and isinstance(samples, SourceSamples) and predicts_tokens:
        samples = read_samples(replace(config, source=EMBEDDED_PROSE))
    if not has_images:
        return samples
    if config.source in (EMBEDDED, EMBEDDED_PROSE, EMBEDDED_TRIPLES) and isinstance(samples, SourceSamples):
        images = _read_jsonl(embedded_image_calibration_path(), "text", None)
        if needs_images:
            mixed = images[: config.n_samples]
        else:
            n_images = min(len(images), max(1, config.n_samples // 2))
            mixed = samples[: max(0, config.n_samples - n_images)] + images[:n_images]
        random.Random(config.seed).shuffle(mixed)
        return mixed
    check_images(samples, has_images, needs_images)
    return samples


def check_images(samples: list[CalibrationSample], has_images: bool, needs_images: bool = False) -> None:
    """Refuse text-only samples for a model that needs an image in every prompt (BLIP-2, Kosmos-2,
    PaliGemma), before any work; warn (``CalibrationWarning``) when a model that takes images is
    calibrated on text alone. ``has_images``: the model came with an image processor."""
    if not has_images:
        return
    text_only = [s for s in samples if not s.images]
    if needs_images and text_only:
        raise PCError(
            f"the model needs an image in every prompt, but {len(text_only)} of {len(samples)} calibration "
            f"samples have none (first: {text_only[0].origin or 'unnamed'})",
            "give every sample an image, or leave --calib out for the embedded image samples",
        )
    if len(text_only) == len(samples):
        warnings.warn(
            "the calibration samples have no images but the model takes them: the compensation is fitted "
            "to text statistics only and may not transfer to image inputs (pass image samples, or leave "
            "--calib out for the embedded image + text set)",
            CalibrationWarning,
            stacklevel=3,
        )


def split_samples(samples: list[CalibrationSample], held_out: float) -> tuple[list, list]:
    """Split into (fit, held-out) parts; the held-out part is the tail, never used for fitting."""
    n_held = int(round(len(samples) * held_out))
    if held_out > 0 and len(samples) >= 2:
        n_held = max(1, min(n_held, len(samples) - 1))
    return samples[: len(samples) - n_held], samples[len(samples) - n_held :]
