"""Markdown rows for the README from committed metrics.json files (so README numbers are the JSONs').

python tools/results_table.py benchmarks/results/elmm_umls_*.json benchmarks/results/*_umls.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def budget(document: dict) -> str:
    training = document.get("training") or document.get("finetuning") or {}
    if "epochs_done" in training:  # a TOFU run (fine-tuning for a fine-tuned one)
        t = training
        return (
            f"{t['train_seconds'] / 60:.1f} min, {t['steps']} steps = {t['epochs_done']:.2f} epochs"
            f" ({t['stopped_by']}); {t['seconds_per_epoch']:.0f} s/epoch, peak RSS {t['peak_rss_mb'] / 1024:.1f} GiB,"
            f" {100 * t['unreachable_answer_fraction']:.0f} % answers out of reach"
        )
    if document.get("setting") == "zero-shot":
        return "none on this graph (zero-shot)"
    if "optimizer_steps" in training:  # an ELMM run
        return f"{training['seconds'] / 60:.0f} min, {training['optimizer_steps']} steps ({training['stopped_by']})"
    if "train_seconds" in training:  # a PyKEEN baseline
        return f"{training['train_seconds'] / 60:.0f} min, {training['epochs']} epochs"
    return ""


def main(paths: list[str]) -> None:
    print("| run | test MR | MRR | Hits@1 | Hits@3 | Hits@10 | valid MRR | training |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        test, valid = document["test"]["both"], (document.get("valid") or {}).get("both", {})
        cells = [f"{test['mr']:.1f}", *(f"{test[k]:.3f}" for k in ("mrr", "hits@1", "hits@3", "hits@10"))]
        valid_mrr = f"{valid['mrr']:.3f}" if valid else ""
        print(f"| {Path(path).stem} | {' | '.join(cells)} | {valid_mrr} | {budget(document)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
