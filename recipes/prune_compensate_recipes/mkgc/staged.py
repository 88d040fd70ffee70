"""The named datasets (FB15k-237, WN18, WN18RR, DB15K, MKG-W, MKG-Y, the GraIL inductive splits),
found under a *data root*, with text joined in from the cross-links their sources document.

Where a dataset is looked for, first match wins (``data_roots``): ``--data-dir`` / the
``data_dir`` argument, ``$PC_DATA_DIR``, a ``shared/data`` folder in the working directory or its
parent (when it exists: the layout of a checkout run from its root), and the user cache
``~/.cache/prune_compensate/data`` (``$XDG_CACHE_HOME`` respected). When none holds it:
FB15k-237, WN18RR and WN18 come from PyKEEN's own download and cache (triples only;
``pc data download text`` adds the entity text), and the others are fetched by
``pc data download NAME`` (``download``), which the error says.

Each loads through ``load_kg``; this module only adds what is not in the dataset's own folder:

* WN18: entity text from ``WN18RR/entity2text.txt.gz`` (identical entity set);
* DB15K: names through ``mmkb/DB15K_SameAsLink.txt`` (DBpedia URI → Freebase mid) and
  ``FB15k-237/entity2text.txt`` / ``entity2wikidata.json.gz``;
* MKG-W: label and description where the Wikidata id appears in FB15k-237's Wikidata file
  (2,289 entities); the rest keep their id;
* MKG-Y: the YAGO name with spaces (``Gilles_Mbang_Ondo`` → ``Gilles Mbang Ondo``);
* OpenKE relation URIs → their last segment, camelCase split;
* inductive splits: fb237 mids get FB15k-237's names + Wikidata descriptions, WN18RR offsets their
  WordNet gloss, NELL ids their readable tail (``concept:coach:harbaugh`` → ``coach harbaugh``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from pathlib import Path

from prune_compensate import PCError

from .data import KGDataset, _read_pairs, load_kg

STAGED = ("FB15k-237", "WN18", "WN18RR", "DB15K", "MKG-W", "MKG-Y")
DATA_DIR_ENV = "PC_DATA_DIR"
PYKEEN_FALLBACK = {"FB15k-237": "FB15k237", "WN18RR": "WN18RR", "WN18": "WN18"}
SPLIT_FILES = ("train.txt", "train.txt.gz", "train2id.txt")


def default_shared_root() -> Path:
    """``shared/data`` in the working directory or, failing that, in its parent (a checkout run from
    its root, with the staged data beside it); never a path counted up from this file, which
    means nothing once the package is installed elsewhere."""
    here = Path.cwd() / "shared" / "data"
    return here if here.is_dir() else Path.cwd().parent / "shared" / "data"


def user_data_dir() -> Path:
    """Where downloads go by default: ``$XDG_CACHE_HOME/prune_compensate/data`` (``~/.cache/...``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "prune_compensate" / "data"


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for a named dataset, in order (see the module docstring)."""
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get(DATA_DIR_ENV):
        roots.append(Path(os.environ[DATA_DIR_ENV]))
    if default_shared_root().is_dir():
        roots.append(default_shared_root())
    roots.append(user_data_dir())
    return list(dict.fromkeys(roots))


def download_root(data_dir: str | Path | None = None) -> Path:
    """Where ``pc data download`` and the PyKEEN fallback write: the first explicit root, else the cache."""
    if data_dir:
        return Path(data_dir)
    return Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else user_data_dir()


def _has_splits(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SPLIT_FILES)


def dataset_folder(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder of ``name`` in the first data root that holds its splits, or ``None``."""
    return next((root / name for root in data_roots(data_dir) if _has_splits(root / name)), None)


def pykeen_fallback(name: str, root: Path, cache_root: str | Path | None = None) -> Path:
    """Load ``name`` through PyKEEN (its download and cache) and write its labelled splits to
    ``root/name`` as ``{train,valid,test}.txt``; returns that folder."""
    try:
        import pykeen.datasets
    except ImportError as err:
        raise PCError(
            f"dataset {name} is not under any data root and pykeen is not installed", "pip install pykeen"
        ) from err
    try:
        dataset = getattr(pykeen.datasets, PYKEEN_FALLBACK[name])(cache_root=cache_root)
        splits = {"train": dataset.training, "valid": dataset.validation, "test": dataset.testing}
        triples = {split: factory.triples for split, factory in splits.items()}
    except Exception as err:  # PyKEEN raises urllib/pystow errors of many types when offline
        raise PCError(
            f"dataset {name} is not under {', '.join(map(str, data_roots(root)))} and PyKEEN's download of it "
            f"failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
            "check the network connection, or put the dataset's files under --data-dir",
        ) from err
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in triples.items():  # each file through a temporary name: never half written
        partial = folder / f".{split}.txt.partial"
        partial.write_text("".join("\t".join(map(str, row)) + "\n" for row in rows), encoding="utf-8")
        os.replace(partial, folder / f"{split}.txt")
    return folder


def _missing(name: str, data_dir: str | Path | None) -> PCError:
    where = ", ".join(map(str, data_roots(data_dir)))
    return PCError(
        f"dataset {name} is not under any data root ({where})",
        f"fetch it with `pc data download {name}` (or pass --data-dir / set {DATA_DIR_ENV})",
    )


def _text_files_present(root: Path, *paths: str) -> bool:
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        warnings.warn(
            f"entity text for this dataset needs {', '.join(missing)} under {root}: names stay ids "
            "(`pc data download text` fetches them)",
            stacklevel=3,
        )
    return not missing


def _readable_uri(uri: str) -> str:
    tail = re.split(r"[/#]", uri.strip("<>").rstrip("/"))[-1]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", tail).replace("_", " ")


def _fb_text(root: Path) -> dict[str, str]:
    names = _read_pairs(root / "FB15k-237" / "entity2text.txt")
    with gzip.open(root / "FB15k-237" / "entity2wikidata.json.gz", "rt", encoding="utf-8") as handle:
        wikidata = json.load(handle)
    text = {}
    for mid, name in names.items():
        desc = (wikidata.get(mid) or {}).get("description")
        text[mid] = f"{name}, {desc}" if desc else name
    return text


def load_staged(name: str, data_dir: str | Path | None = None) -> KGDataset:
    """Load a named dataset from the first data root that holds it (see the module docstring)."""
    if name not in STAGED and not name.startswith("inductive/"):
        raise PCError(f"unknown dataset name {name!r}", f"use one of {', '.join(STAGED)} or inductive/<split>")
    folder = dataset_folder(name, data_dir)
    if folder is None:
        if name not in PYKEEN_FALLBACK:
            raise _missing(name, data_dir)
        folder = pykeen_fallback(name, download_root(data_dir))
    root = folder.parents[1] if name.startswith("inductive/") else folder.parent
    data = load_kg(folder, name=name)
    needs = {
        "WN18": ("WN18RR/entity2text.txt.gz",),
        "DB15K": ("mmkb/DB15K_SameAsLink.txt", "FB15k-237/entity2text.txt", "FB15k-237/entity2wikidata.json.gz"),
        "MKG-W": ("FB15k-237/entity2wikidata.json.gz",),
    }
    if name.startswith("inductive/fb237"):
        needs[name] = ("FB15k-237/entity2text.txt", "FB15k-237/entity2wikidata.json.gz")
    elif name.startswith("inductive/WN18RR"):
        needs[name] = ("WN18RR/entity2text.txt.gz",)
    if name not in needs or _text_files_present(root, *needs[name]):
        _join_text(data, name, root)
    if data.source == "openke" and not any(data.relation_text):
        data.relation_text = [_readable_uri(r) for r in data.relations]
    return data


def _join_text(data: KGDataset, name: str, root: Path) -> None:
    """Fill ``data.entity_text`` from the cross-links of ``name`` (files under ``root``)."""
    if name == "WN18":
        with gzip.open(root / "WN18RR" / "entity2text.txt.gz", "rt", encoding="utf-8") as handle:
            text = dict(line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line)
        data.entity_text = [text.get(e) for e in data.entities]
    elif name == "DB15K":
        mids = {}
        for line in (root / "mmkb" / "DB15K_SameAsLink.txt").read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mids[parts[2]] = parts[0]
        fb = _fb_text(root)
        data.entity_text = [fb.get(mids.get(e, "")) or _readable_uri(e) for e in data.entities]
    elif name == "MKG-W":
        with gzip.open(root / "FB15k-237" / "entity2wikidata.json.gz", "rt", encoding="utf-8") as handle:
            by_qid = {v["wikidata_id"]: v for v in json.load(handle).values() if v.get("wikidata_id")}
        texts = []
        for uri in data.entities:
            entry = by_qid.get(uri.rsplit("/", 1)[-1])
            if entry and entry.get("label"):
                desc = entry.get("description")
                texts.append(f"{entry['label']}, {desc}" if desc else entry["label"])
            else:
                texts.append(None)
        data.entity_text = texts
    elif name == "MKG-Y":
        data.entity_text = [e.replace("_", " ") for e in data.entities]
    elif name.startswith("inductive/fb237"):
        fb = _fb_text(root)
        data.entity_text = [fb.get(e) for e in data.entities]
    elif name.startswith("inductive/WN18RR"):
        with gzip.open(root / "WN18RR" / "entity2text.txt.gz", "rt", encoding="utf-8") as handle:
            text = dict(line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line)
        data.entity_text = [text.get(e) for e in data.entities]
    elif name.startswith("inductive/nell"):
        data.entity_text = [" ".join(e.split(":")[1:]).replace("_", " ") or None for e in data.entities]


def resolve_dataset(spec: str, data_dir: str | Path | None = None) -> tuple[KGDataset, Path | None]:
    """The one resolver every recipe and ``pc data`` uses: ``spec`` is a dataset name (FB15k-237,
    DB15K, ``inductive/fb237_v1_ind``, …) looked up in the data roots (``data_roots``: ``data_dir``,
    ``$PC_DATA_DIR``, ``shared/data`` by the working directory, the user cache), a graph in
    pykeen's wheel (``umls``, ``nations``, ``kinships``) or a folder. Returns the dataset and the
    folder it was read from (``None`` for pykeen's graphs), where side files such as visual
    tokens are looked for."""
    from .data import resolve_kg

    if (spec in STAGED or spec.startswith("inductive/")) and not Path(spec).exists():
        return load_staged(spec, data_dir), dataset_folder(spec, data_dir)
    folder = Path(spec)
    return resolve_kg(spec), folder if folder.is_dir() else None
