"""Rebuild ``prune_compensate/data/default_calibration.jsonl`` from the staged FB15k-237 files.

Why: the embedded calibration set must work offline on a fresh machine, so it ships inside the
package. Each line verbalises one FB15k-237 training triple with the Wikidata labels and short
descriptions of both entities (MIT / CC0 sources, see ``../shared/data/README.md``), which is the
kind of text an MKGC model sees. Sampling is seeded, so the file is reproducible:

    python tools/make_default_calibration.py ../shared/data/FB15k-237 prune_compensate/data/default_calibration.jsonl
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path


def verbalised_triples(data_dir: str | Path, seed: int = 0) -> Iterator[tuple[str, str, str]]:
    """``(head id, tail id, text)`` for each FB15k-237 training triple whose entities both have a
    Wikidata label, in a seeded order: the text is the head's label (description), the relation, the
    tail's label (description)."""
    root = Path(data_dir)
    wikidata = json.load(gzip.open(root / "entity2wikidata.json.gz", "rt", encoding="utf-8"))
    relation_text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (root / "relation2text.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    with gzip.open(root / "train.txt.gz", "rt", encoding="utf-8") as handle:
        triples = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    random.Random(seed).shuffle(triples)

    def describe(mid: str) -> str | None:
        entry = wikidata.get(mid)
        if not entry or not entry.get("label"):
            return None
        desc = entry.get("description") or ""
        return f"{entry['label']} ({desc})" if desc else entry["label"]

    for head, relation, tail in triples:
        h, t = describe(head), describe(tail)
        if h is not None and t is not None:
            yield head, tail, f"{h}, {relation_text[relation]}: {t}."


def main(data_dir: str, out_path: str, n: int = 1500, seed: int = 0) -> None:
    lines = [{"text": text} for _, _, text in itertools.islice(verbalised_triples(data_dir, seed), n)]
    Path(out_path).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
