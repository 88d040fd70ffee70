"""How much of each GraIL inductive test graph a pre-training regime has already seen.

A zero-shot number is only as clean as the pre-training is disjoint from the evaluated graph. For
each of the 12 ``_ind`` test graphs and each pre-training regime this counts, measured on the
staged files rather than assumed:

* **entities**: the test graph's entities that occur in a pre-training graph. Identifiers are
  compared in one namespace, Freebase mids, where a cross-link exists: FB15k-237 and the GraIL fb237
  graphs use mids; MKG-Y (YAGO) maps to mids through ``mmkb/YAGO15K_SameAsLink.txt``, DB15K (DBpedia)
  through ``mmkb/DB15K_SameAsLink.txt``, MKG-W (Wikidata) through
  ``FB15k-237/entity2wikidata.json.gz``; WN18RR and its GraIL graphs share synset offsets. NELL
  has no cross-link, so a NELL graph can only overlap another NELL graph.
* **test triples**: the test graph's test triples (by label) that are triples of a pre-training
  graph, counted twice: in its training split (what the model was trained on) and in any of its
  splits (what the graph holds). Only graphs whose relations share the test graph's vocabulary
  (FB15k-237 with fb237, WN18RR with WN18RR) can hold one.

Regimes: this project's two zero-shot checkpoints (MKG-Y + the fb237 v1 training graph; MKG-Y
alone) and ULTRA-3g's pre-training graphs (FB15k-237, WN18RR and CoDEx-M; CoDEx-M is not staged
here, so its share is not counted).

    python -m benchmarks.tofu.zero_shot_overlap → benchmarks/tofu/results/zero_shot_overlap.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from prune_compensate_recipes.mkgc.data import KGDataset
from prune_compensate_recipes.mkgc.staged import dataset_folder, resolve_dataset

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = [f"{kg}_v{v}_ind" for kg in ("fb237", "WN18RR", "nell") for v in (1, 2, 3, 4)]
REGIMES = {
    "MKG-Y + fb237_v1 (ours)": ["MKG-Y", "inductive/fb237_v1"],
    "MKG-Y (ours)": ["MKG-Y"],
    "FB15k-237 + WN18RR (ULTRA-3g)": ["FB15k-237", "WN18RR"],
}


def _same_as(path: Path) -> dict[str, str]:
    """``/m/mid <SameAs> <uri> .`` lines → {uri: mid}."""
    links = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            links[parts[2].strip("<>")] = parts[0]
    return links


def canonical_entities(name: str, data: KGDataset, root: Path) -> list[str | None]:
    """Each entity of ``name`` as a Freebase mid, a WordNet offset or a NELL concept (None: no link)."""
    if name == "MKG-Y":
        links = _same_as(root / "mmkb" / "YAGO15K_SameAsLink.txt")
        return [links.get(f"http://yago-knowledge.org/resource/{e}") for e in data.entities]
    if name == "DB15K":
        links = _same_as(root / "mmkb" / "DB15K_SameAsLink.txt")
        return [links.get(e.strip("<>")) for e in data.entities]
    if name == "MKG-W":
        with gzip.open(root / "FB15k-237" / "entity2wikidata.json.gz", "rt", encoding="utf-8") as handle:
            by_q = {v["wikidata_id"]: mid for mid, v in json.load(handle).items() if v.get("wikidata_id")}
        return [by_q.get(e.rsplit("/", 1)[-1]) for e in data.entities]
    return list(data.entities)


def graph_sets(name: str, root: Path) -> dict[str, set]:
    data, _ = resolve_dataset(name)
    ids = canonical_entities(name, data, root)
    labelled = {
        split: {(ids[h], data.relations[r], ids[t]) for h, r, t in data.split(split).tolist()}
        for split in ("train", "valid", "test")
    }
    return {
        "entities": {e for e in ids if e is not None},
        "linked": {"entities": len(ids), "with_identifier": sum(e is not None for e in ids)},
        "train": labelled["train"],
        "any": labelled["train"] | labelled["valid"] | labelled["test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args()
    folder = dataset_folder("FB15k-237")
    if folder is None:
        raise SystemExit("the staged datasets are not found: run from a checkout with shared/data beside it")
    root = folder.parent
    graphs = {g: graph_sets(g, root) for regime in REGIMES.values() for g in regime}
    rows: dict[str, dict] = {}
    for split in SPLITS:
        data, _ = resolve_dataset(f"inductive/{split}")
        entities = set(data.entities)
        test = {(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.test.tolist()}
        rows[split] = {"entities": len(entities), "test_triples": len(test), "regimes": {}}
        for regime, names in REGIMES.items():
            seen = set().union(*(graphs[g]["entities"] for g in names))
            train = set().union(*(graphs[g]["train"] for g in names))
            anywhere = set().union(*(graphs[g]["any"] for g in names))
            rows[split]["regimes"][regime] = {
                "entities_seen": len(entities & seen),
                "test_triples_in_pretraining_train": len(test & train),
                "test_triples_in_pretraining_graphs": len(test & anywhere),
            }
    table = Table(title="GraIL test graphs: share of entities seen · test triples in pre-training train / any split")
    table.add_column("test graph")
    table.add_column("test triples", justify="right")
    for regime in REGIMES:
        table.add_column(regime, justify="right")
    for split, row in rows.items():
        cells = []
        for regime in REGIMES:
            r = row["regimes"][regime]
            cells.append(
                f"{r['entities_seen'] / row['entities']:.0%} · "
                f"{r['test_triples_in_pretraining_train']}/{r['test_triples_in_pretraining_graphs']}"
            )
        table.add_row(split, str(row["test_triples"]), *cells)
    Console().print(table)
    document = {
        "regimes": REGIMES,
        "links": {g: graphs[g]["linked"] for g in graphs},
        "splits": rows,
        "note": "test triples: in the pre-training graphs' training splits / in any of their splits",
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "zero_shot_overlap.json"
    write_result(out, document, args)
    print(f"written {out}")


if __name__ == "__main__":
    main()
