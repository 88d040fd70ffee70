"""Rebuild the embedded evaluation sets of ``pc eval`` from the FB15k-237 files, disjoint from the
embedded calibration set (``prune_compensate/data/default_calibration.jsonl``):

* ``default_eval_text.jsonl``: 500 FB15k-237 *test* triples verbalised like the calibration lines
  (which are *training* triples), ``pc eval --text embedded:triples`` (the default text is prose:
  ``tools/make_default_prose.py``);
* ``default_eval_pairs.jsonl``: 1,000 (entity name → its Wikidata description) retrieval pairs
  for encoders, from entities whose name appears in no calibration line, each description unique.

Seeded, so the files are reproducible:

    python tools/make_default_eval.py --data-dir DIR   # DIR holds FB15k-237/
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "prune_compensate" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.data_dir / "FB15k-237"
    wikidata = json.load(gzip.open(root / "entity2wikidata.json.gz", "rt", encoding="utf-8"))
    relation_text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (root / "relation2text.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    calibration = (PACKAGE_DATA / "default_calibration.jsonl").read_text(encoding="utf-8")
    rng = random.Random(args.seed)

    def describe(mid: str) -> str | None:
        entry = wikidata.get(mid) or {}
        if not entry.get("label"):
            return None
        return f"{entry['label']} ({entry['description']})" if entry.get("description") else entry["label"]

    with gzip.open(root / "test.txt.gz", "rt", encoding="utf-8") as handle:
        triples = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    rng.shuffle(triples)
    texts = []
    for head, relation, tail in triples:
        h, t = describe(head), describe(tail)
        if h and t:
            texts.append({"text": f"{h}, {relation_text[relation]}: {t}."})
        if len(texts) == 500:
            break

    by_description: dict[str, list[str]] = {}
    for entry in wikidata.values():
        if entry.get("label") and entry.get("description"):
            by_description.setdefault(entry["description"], []).append(entry["label"])
    pairs = [
        {"query": labels[0], "document": description}
        for description, labels in sorted(by_description.items())
        if len(labels) == 1 and labels[0] not in calibration
    ]
    rng.shuffle(pairs)
    pairs = pairs[:1000]
    for name, rows in (("default_eval_text.jsonl", texts), ("default_eval_pairs.jsonl", pairs)):
        (PACKAGE_DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        print(f"{len(rows)} lines written to {PACKAGE_DATA / name}")


if __name__ == "__main__":
    main()
