"""Zero-shot link prediction on the 12 GraIL inductive test graphs, beside personalised PageRank.

For each of FB15k-237, WN18RR and NELL-995 v1–v4, the ``_ind`` graph is the unseen test graph:
its training triples are the observed graph, its test triples are ranked against all of its
entities (filtered, both directions, realistic ranks; the evaluator of every recipe).

* **PPR** (training-free, ``mkgc.ppr.PPRScorer``, teleport 0.15): computed here on every split.
* **TOFU zero-shot**: the ``metrics_<split>_zero-shot.json`` files a ``pc run tofu`` run with these
  12 targets wrote into ``--tofu DIR`` (see ``tofu_runs.sh zeroshot``), read back, not re-run; with
  the number of each split's test triples (by label) that are training triples of a pre-training
  graph, which a clean zero-shot number needs to be 0.

    python -m benchmarks.tofu.inductive_zero_shot [--tofu runs/tofu_zero_shot] [--label TEXT] [--out FILE]
    → benchmarks/tofu/results/inductive_zero_shot.json or FILE (and a rich table)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from prune_compensate_recipes.mkgc.evaluate import evaluate_link_prediction, package_versions
from prune_compensate_recipes.mkgc.ppr import PPRScorer
from prune_compensate_recipes.mkgc.staged import resolve_dataset
from prune_compensate_recipes.tofu.config import load_config

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = [f"{kg}_v{v}_ind" for kg in ("fb237", "WN18RR", "nell") for v in (1, 2, 3, 4)]


def ppr_row(split: str, teleport: float) -> dict:
    data, _ = resolve_dataset(f"inductive/{split}")
    started = time.perf_counter()
    result = evaluate_link_prediction(
        PPRScorer(data, teleport=teleport),
        data.test,
        data.all_triples(),
        data.num_entities,
        data.num_relations,
        batch_size=64,
        show_progress=False,
    )
    both = result.metrics()
    return {
        "entities": data.num_entities,
        "observed_triples": int(data.train.shape[0]),
        "test_triples": int(data.test.shape[0]),
        "mrr": both["mrr"],
        "hits@10": both["hits@10"],
        "mr": both["mr"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def labelled(spec: str, split: str) -> set[tuple[str, str, str]]:
    data, _ = resolve_dataset(spec)
    return {(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.split(split).tolist()}


def pretraining_overlap(tofu_dir: Path) -> dict[str, int]:
    """Per split: test triples (by label) that are training triples of a pre-training graph, i.e.
    facts the zero-shot model was trained on (must be 0 for a clean zero-shot number)."""
    config = load_config(tofu_dir / "checkpoint" / "config.yaml")
    seen: set[tuple[str, str, str]] = set()
    for graph in config.graphs:
        seen |= labelled(graph, "train")
    return {split: len(labelled(f"inductive/{split}", "test") & seen) for split in SPLITS}


def pretraining_record(tofu_dir: Path) -> dict:
    """What produced the checkpoint: its command, seed, budget and training summary (as the run
    recorded them) and the SHA-256 of its weights, so a table row names the exact checkpoint."""
    documents = json.loads((tofu_dir / "metrics.json").read_text(encoding="utf-8"))
    first = documents[0] if isinstance(documents, list) else documents
    weights = tofu_dir / "checkpoint" / "tofu.safetensors"
    summary = {k: v for k, v in (first.get("pretraining") or {}).items() if k != "history"}
    return {
        "command": first.get("command"),
        "seed": (first.get("config") or {}).get("train", {}).get("seed"),
        "max_minutes": (first.get("config") or {}).get("train", {}).get("max_minutes"),
        "summary": summary,
        "checkpoint_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tofu", type=Path, default=None, help="out dir of a TOFU run with the 12 targets")
    parser.add_argument("--teleport", type=float, default=0.15)
    parser.add_argument("--label", default="", help="what the TOFU run was, for the tables (e.g. its settings)")
    parser.add_argument("--out", type=Path, default=RESULTS / "inductive_zero_shot.json")
    args = parser.parse_args()
    rows = {}
    overlap = pretraining_overlap(args.tofu) if args.tofu is not None else {}
    for split in SPLITS:
        rows[split] = {"ppr": ppr_row(split, args.teleport)}
        if args.tofu is not None:
            path = args.tofu / f"metrics_inductive_{split}_zero-shot.json"
            if not path.is_file():
                path = args.tofu / f"metrics_{split}_zero-shot.json"
            if path.is_file():
                both = json.loads(path.read_text(encoding="utf-8"))["test"]["both"]
                rows[split]["tofu"] = {"mrr": both["mrr"], "hits@10": both["hits@10"], "mr": both["mr"], "n": both["n"]}
                rows[split]["tofu"]["test_triples_seen_in_pretraining"] = overlap[split]
        print(split, json.dumps(rows[split]), flush=True)
    average = {
        method: sum(r[method]["mrr"] for r in rows.values()) / len(rows)
        for method in ("ppr", "tofu")
        if all(method in r for r in rows.values())
    }
    table = Table(title="Zero-shot on the GraIL inductive test graphs (filtered MRR, both directions)")
    table.add_column("split")
    table.add_column("PPR", justify="right")
    table.add_column("TOFU zero-shot", justify="right")
    for split, row in rows.items():
        tofu = f"{row['tofu']['mrr']:.3f}" if "tofu" in row else "—"
        table.add_row(split, f"{row['ppr']['mrr']:.3f}", tofu)
    table.add_row("average", f"{average['ppr']:.3f}", f"{average['tofu']:.3f}" if "tofu" in average else "—")
    Console().print(table)
    document = {
        "command": "python -m benchmarks.tofu.inductive_zero_shot " + " ".join(sys.argv[1:]),
        "ppr": {"teleport": args.teleport, "graph": "training triples of the _ind graph, both directions"},
        "tofu_run": str(args.tofu) if args.tofu else None,
        "label": args.label,
        "pretraining": pretraining_record(args.tofu) if args.tofu else None,
        "tofu_pretraining_graphs": load_config(args.tofu / "checkpoint" / "config.yaml").graphs if args.tofu else None,
        "splits": rows,
        "average_mrr": average,
        "versions": package_versions(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
    }
    write_result(args.out, document, args)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
