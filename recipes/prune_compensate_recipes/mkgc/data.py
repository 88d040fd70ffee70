"""Knowledge-graph datasets with their modalities: one object for every source format.

Directory layout a user can point ``--data DIR`` at (every file but the splits is optional)::

    DIR/
      train.txt[.gz] valid.txt[.gz] test.txt[.gz]   # labels: head<TAB>relation<TAB>tail, one triple a line
      # -- or, OpenKE id files --
      entity2id.txt relation2id.txt                 # first line: count; then "name id"
      train2id.txt valid2id.txt test2id.txt         # first line: count; then "head tail relation"
      entity2text.txt[.gz]                          # entity<TAB>name or "name, description"
      entity2description.txt[.gz]                   # entity<TAB>description (appended to the name)
      entity2wikidata.json[.gz]                     # {entity: {"label", "description"}} (FB15k-237)
      relation2text.txt[.gz]                        # relation<TAB>readable words
      images/<entity>/*.{jpg,jpeg,png,webp}         # a folder of images per entity ("/" in ids becomes "_")
      image_features.safetensors | image_features.npy   # (num_entities, F) rows by entity id;
                                                    # safetensors key "features", optional bool "mask"

Entity and relation ids are the OpenKE ids when given, otherwise the sorted labels (PyKEEN's
convention, so our ids equal a PyKEEN ``TriplesFactory``'s). Duplicate triples inside a split
(DB15K's valid split has 2,423) are counted and removed.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prune_compensate import PCError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
SPLITS = ("train", "valid", "test")


def _open_text(path: Path):  # noqa: ANN202 - a text handle
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_pairs(path: Path) -> dict[str, str]:
    pairs = {}
    with _open_text(path) as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) == 2:
                pairs[parts[0]] = parts[1]
    return pairs


@dataclass
class KGDataset:
    """Triples (``(n, 3)`` long tensors of head, relation, tail ids) with shared id maps and
    optional modalities. ``entity_text[i]``/``relation_text[r]`` are ``None`` where unknown."""

    name: str
    entities: list[str]
    relations: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    entity_text: list[str | None] = field(default_factory=list)
    relation_text: list[str | None] = field(default_factory=list)
    entity_images: dict[int, list[Path]] = field(default_factory=dict)
    image_features: torch.Tensor | None = None
    image_feature_mask: torch.Tensor | None = None
    duplicates_removed: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise PCError(f"unknown split {name!r}", f"use one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def all_triples(self) -> torch.Tensor:
        """Every known true triple (train + valid + test): the filter of filtered ranking."""
        return torch.cat([self.train, self.valid, self.test])

    def with_inverse(self, triples: torch.Tensor) -> torch.Tensor:
        """``(h, r, t)`` and ``(t, r + R, h)``: head prediction as tail prediction with r⁻¹."""
        inverse = torch.stack([triples[:, 2], triples[:, 1] + self.num_relations, triples[:, 0]], dim=1)
        return torch.cat([triples, inverse])

    def in_train(self, name: str) -> torch.Tensor:
        """``(n,)`` bool: which triples of split ``name`` are also training triples."""
        return _rows_in(self.split(name), self.train, self.num_entities, self.num_relations)

    def not_in_train(self, name: str) -> torch.Tensor:
        """The triples of split ``name`` that are not training triples ``(n', 3)``.

        Model selection runs on these: a valid triple that is also a training triple sits one
        hop from its query in the observed graph, while each training query hides its own edge,
        so such triples reward memorising the graph rather than predicting a missing fact
        (DB15K's valid split: 6,584 of 7,481 unique triples)."""
        return self.split(name)[~self.in_train(name)]

    def evaluation_triples(self, name: str) -> torch.Tensor:
        """What the recipes evaluate on: ``test`` as published (benchmarks compare on it),
        ``valid`` without its training triples (``not_in_train``), so models are selected on facts
        the graph does not already state; on splits without overlap both are the split itself."""
        return self.not_in_train(name) if name == "valid" else self.split(name)

    def relation_label(self, relation: int) -> str:
        """Readable relation text; ids ≥ R are inverse relations."""
        base = relation % self.num_relations
        text = (self.relation_text[base] if self.relation_text else None) or self.relations[base]
        return f"inverse of {text}" if relation >= self.num_relations else text

    def entity_label(self, entity: int) -> str:
        text = self.entity_text[entity] if self.entity_text else None
        return text or self.entities[entity]

    def summary(self) -> dict[str, Any]:
        categories = relation_categories(self.train, self.num_relations)
        by_category: dict[str, int] = {}
        for cat in categories:
            by_category[cat] = by_category.get(cat, 0) + 1
        test_by_category: dict[str, int] = {}
        for relation in self.test[:, 1].tolist():
            cat = categories[relation]
            test_by_category[cat] = test_by_category.get(cat, 0) + 1
        e, r = self.num_entities, self.num_relations
        also_in_train = {s: int(self.in_train(s).sum()) for s in ("valid", "test")}
        test_also_in_valid = int(_rows_in(self.test, self.valid, e, r).sum())
        with_features = 0
        if self.image_features is not None:
            mask = self.image_feature_mask
            with_features = int(mask.sum()) if mask is not None else self.num_entities
        return {
            "name": self.name,
            "source": self.source,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "splits": {s: int(self.split(s).shape[0]) for s in SPLITS},
            "duplicates_removed": dict(self.duplicates_removed),
            # evaluation triples that are also training triples (DB15K's valid split: 6,584 of 7,481)
            "also_in_train": also_in_train,
            "test_also_in_valid": test_also_in_valid,
            "relation_categories": dict(sorted(by_category.items())),
            "test_triples_by_category": dict(sorted(test_by_category.items())),
            "modalities": {
                "entity_text": sum(1 for t in self.entity_text if t),
                "relation_text": sum(1 for t in self.relation_text if t),
                "entities_with_images": len(self.entity_images),
                "images": sum(len(v) for v in self.entity_images.values()),
                "entities_with_image_features": with_features,
            },
        }


def _rows_in(triples: torch.Tensor, others: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """``(n,)`` bool: which rows of ``triples`` ``(n, 3)`` are rows of ``others`` ``(m, 3)``."""

    def key(t: torch.Tensor) -> torch.Tensor:
        return (t[:, 0] * num_relations + t[:, 1]) * num_entities + t[:, 2]

    return torch.isin(key(triples), key(others))


def relation_categories(train: torch.Tensor, num_relations: int) -> list[str]:
    """1-1 / 1-N / N-1 / N-N per relation (Bordes et al. 2013): tails per head and heads per tail
    averaged over the relation's training triples, each compared with 1.5."""
    categories = []
    for relation in range(num_relations):
        rows = train[train[:, 1] == relation]
        if rows.shape[0] == 0:
            categories.append("unseen")
            continue
        heads, tails = rows[:, 0], rows[:, 2]
        tails_per_head = rows.shape[0] / torch.unique(heads).numel()
        heads_per_tail = rows.shape[0] / torch.unique(tails).numel()
        many_tails, many_heads = tails_per_head >= 1.5, heads_per_tail >= 1.5
        categories.append(
            {(False, False): "1-1", (True, False): "1-N", (False, True): "N-1", (True, True): "N-N"}[
                (many_tails, many_heads)
            ]
        )
    return categories


def _dedupe(triples: torch.Tensor) -> tuple[torch.Tensor, int]:
    if triples.shape[0] == 0:
        return triples, 0
    unique, first = [], set()
    for row in triples.tolist():
        key = tuple(row)
        if key not in first:
            first.add(key)
            unique.append(row)
    return torch.tensor(unique, dtype=torch.long).view(-1, 3), triples.shape[0] - len(unique)


def _read_labeled_split(path: Path) -> list[tuple[str, str, str]]:
    triples = []
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise PCError(f"line {number} of {path} is not head<TAB>relation<TAB>tail", "fix the file")
            triples.append((parts[0], parts[1], parts[2]))
    return triples


def _read_openke_ids(path: Path) -> list[str]:
    with _open_text(path) as handle:
        count = int(handle.readline().strip())
        names: list[str | None] = [None] * count
        for line in handle:
            if line.strip():
                name, index = line.rstrip("\n").rsplit(None, 1)
                names[int(index)] = name
    if any(n is None for n in names):
        raise PCError(f"{path} does not list ids 0..{count - 1} contiguously", "fix the id file")
    return names  # type: ignore[return-value]


def _read_openke_split(path: Path) -> torch.Tensor:
    with _open_text(path) as handle:
        handle.readline()
        rows = [list(map(int, line.split())) for line in handle if line.strip()]
    hrt = torch.tensor(rows, dtype=torch.long).view(-1, 3)[:, [0, 2, 1]]  # OpenKE stores h t r
    return hrt


def _entity_text(root: Path, entities: list[str]) -> list[str | None]:
    names: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    if (path := _find(root, "entity2wikidata.json")) is not None:
        with _open_text(path) as handle:
            for key, entry in json.load(handle).items():
                if entry.get("label"):
                    names[key] = entry["label"]
                if entry.get("description"):
                    descriptions[key] = entry["description"]
    if (path := _find(root, "entity2text.txt")) is not None:
        for key, text in _read_pairs(path).items():
            names.setdefault(key, text)
    if (path := _find(root, "entity2description.txt")) is not None:
        descriptions.update(_read_pairs(path))
    texts: list[str | None] = []
    for key in entities:
        name, desc = names.get(key), descriptions.get(key)
        texts.append(f"{name}, {desc}" if name and desc else name or desc)
    return texts


def _images(root: Path, entities: list[str]) -> dict[int, list[Path]]:
    folder = root / "images"
    if not folder.is_dir():
        return {}
    found = {}
    for index, key in enumerate(entities):
        entity_dir = folder / key.strip("/").replace("/", "_")
        if entity_dir.is_dir():
            files = sorted(p for p in entity_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                found[index] = files
    return found


def _image_features(root: Path, num_entities: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if (root / "image_features.safetensors").is_file():
        from safetensors.torch import load_file

        data = load_file(str(root / "image_features.safetensors"))
        if "features" not in data:
            raise PCError(f"{root / 'image_features.safetensors'} has no tensor 'features'", "save it under that key")
        features, mask = data["features"], data.get("mask")
    elif (root / "image_features.npy").is_file():
        import numpy as np

        features, mask = torch.from_numpy(np.load(root / "image_features.npy", allow_pickle=False)), None
    else:
        return None, None
    if features.shape[0] != num_entities:
        raise PCError(
            f"image features have {features.shape[0]} rows but the dataset has {num_entities} entities",
            "store one row per entity id",
        )
    return features.float(), None if mask is None else mask.bool()


def load_kg(path: str | Path, name: str | None = None) -> KGDataset:
    """Load a dataset directory in either layout (see module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise PCError(f"dataset folder {root} does not exist", "pass a folder with train/valid/test files")
    splits: dict[str, torch.Tensor] = {}
    if (root / "train2id.txt").is_file():
        entities = _read_openke_ids(root / "entity2id.txt")
        relations = _read_openke_ids(root / "relation2id.txt")
        for split in SPLITS:
            splits[split] = _read_openke_split(root / f"{split}2id.txt")
        source = "openke"
    else:
        labeled = {}
        for split in SPLITS:
            file = _find(root, f"{split}.txt")
            if file is None:
                raise PCError(f"{root} has no {split}.txt (nor {split}2id.txt)", "see the dataset layout in the README")
            labeled[split] = _read_labeled_split(file)
        all_triples = [t for split in SPLITS for t in labeled[split]]
        entities = sorted({h for h, _, _ in all_triples} | {t for _, _, t in all_triples})
        relations = sorted({r for _, r, _ in all_triples})
        e_index = {e: i for i, e in enumerate(entities)}
        r_index = {r: i for i, r in enumerate(relations)}
        for split in SPLITS:
            rows = [(e_index[h], r_index[r], e_index[t]) for h, r, t in labeled[split]]
            splits[split] = torch.tensor(rows, dtype=torch.long).view(-1, 3)
        source = "labels"
    duplicates = {}
    for split in SPLITS:
        splits[split], duplicates[split] = _dedupe(splits[split])
    relation_text: list[str | None] = [None] * len(relations)
    if (file := _find(root, "relation2text.txt")) is not None:
        pairs = _read_pairs(file)
        relation_text = [pairs.get(r) for r in relations]
    features, mask = _image_features(root, len(entities))
    return KGDataset(
        name=name or root.name,
        entities=entities,
        relations=relations,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        entity_text=_entity_text(root, entities),
        relation_text=relation_text,
        entity_images=_images(root, entities),
        image_features=features,
        image_feature_mask=mask,
        duplicates_removed=duplicates,
        source=source,
    )


PYKEEN_BUILTINS = ("nations", "kinships", "umls")


def pykeen_dataset_dir(name: str) -> Path:
    """The folder of a small graph shipped inside the pykeen wheel (Nations, Kinships, UMLS)."""
    try:
        import pykeen.datasets
    except ImportError as err:
        raise PCError("pykeen is not installed", 'pip install -e ".[test]"') from err
    folder = Path(pykeen.datasets.__file__).parent / name
    if name not in PYKEEN_BUILTINS or not folder.is_dir():
        raise PCError(f"no built-in graph {name!r}", f"use one of {', '.join(PYKEEN_BUILTINS)} or a folder")
    return folder


def resolve_kg(spec: str | Path) -> KGDataset:
    """A folder path, or ``nations`` / ``kinships`` / ``umls`` (the graphs in pykeen's wheel)."""
    spec = str(spec)
    if spec.lower() in PYKEEN_BUILTINS and not Path(spec).exists():
        return load_kg(pykeen_dataset_dir(spec.lower()), name=spec.lower())
    return load_kg(spec)
