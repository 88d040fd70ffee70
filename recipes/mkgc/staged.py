"""The datasets staged under ``../shared/data`` (see its README), with text joined in from the
cross-links it documents. Each loads through ``load_kg``; this module only adds what is not in the
dataset's own folder:

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
import re
from pathlib import Path

from prune_compensate import PCError

from .data import KGDataset, _read_pairs, load_kg

STAGED = ("FB15k-237", "WN18", "WN18RR", "DB15K", "MKG-W", "MKG-Y")


def default_shared_root() -> Path:
    """``../shared/data`` next to the repository checkout."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


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


def load_staged(name: str, shared_root: str | Path | None = None) -> KGDataset:
    root = Path(shared_root) if shared_root else default_shared_root()
    if name not in STAGED and not name.startswith("inductive/"):
        raise PCError(f"unknown staged dataset {name!r}", f"use one of {', '.join(STAGED)} or inductive/<split>")
    if not (root / name).is_dir():
        raise PCError(f"staged dataset {root / name} is not on this machine", "see ../shared/data/README.md")
    data = load_kg(root / name, name=name)
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
    if data.source == "openke" and not any(data.relation_text):
        data.relation_text = [_readable_uri(r) for r in data.relations]
    return data
