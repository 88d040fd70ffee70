"""Rebuild ``prune_compensate/data/default_calibration.jsonl`` from the staged FB15k-237 files.

Why: the embedded calibration set must work offline on a fresh machine, so it ships inside the
package. Each line verbalises one FB15k-237 training triple with the Wikidata labels and short
descriptions of both entities (MIT / CC0 sources, see ``../shared/data/README.md``), which is the
kind of text an MKGC model sees. Sampling is seeded, so the file is reproducible:

    python tools/make_default_calibration.py ../shared/data/FB15k-237 prune_compensate/data/default_calibration.jsonl
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path


def main(data_dir: str, out_path: str, n: int = 1500, seed: int = 0) -> None:
    root = Path(data_dir)
    wikidata = json.load(gzip.open(root / "entity2wikidata.json.gz", "rt", encoding="utf-8"))
    relation_text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (root / "relation2text.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    with gzip.open(root / "train.txt.gz", "rt", encoding="utf-8") as handle:
        triples = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    rng = random.Random(seed)
    rng.shuffle(triples)

    def describe(mid: str) -> str | None:
        entry = wikidata.get(mid)
        if not entry or not entry.get("label"):
            return None
        desc = entry.get("description") or ""
        return f"{entry['label']} ({desc})" if desc else entry["label"]

    lines = []
    for head, relation, tail in triples:
        h, t = describe(head), describe(tail)
        if h is None or t is None:
            continue
        lines.append({"text": f"{h}, {relation_text[relation]}: {t}."})
        if len(lines) == n:
            break
    Path(out_path).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
