"""The ELMM ablation table on UMLS (CPU, real MiniLM): one switch per run, same config and seed.

    python -m benchmarks.elmm.elmm_ablation [--variants full no_pruning ...] [--seed 0] [--threads 1]

Writes ``benchmarks/elmm/results/elmm_umls_<variant>.json`` (each run's metrics.json) and prints a
table. The image-view / MVTC switches need images, which UMLS does not have on this machine: they
are exercised by the tests with real image files and a tiny random LLaVA, not measured here.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.common import results_dir, write_result
from prune_compensate_recipes.config import CONFIG_DIR
from prune_compensate_recipes.elmm.config import load_config
from prune_compensate_recipes.elmm.run import run_elmm
from prune_compensate_recipes.mkgc.evaluate import metrics_table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = CONFIG_DIR / "elmm_minilm_umls.yaml"
VARIANTS = {
    "full": [],
    "no_pruning": ["ablation.no_pruning=true"],
    "no_linear": ["ablation.no_linear=true"],
    "no_init": ["ablation.no_init=true"],
    "theorem1_mean": ["prune.init=mean"],  # the paper's own init; "full" fits lstsq
    "frozen_compensation": ["prune.trainable=false"],
    "k6": ["prune.k=6"],
    "plain_head": ["ablation.plain_head=true"],
    "no_structure_tokens": ["prompt.structure_tokens=false"],
    # beyond the paper: structure tokens from a PyKEEN RotatE trained for 1 minute first, beside a
    # rerun of the full config (tokens learned from zero) in the same session
    "learned_structure": [],
    "rotate_structure": ["prompt.structure_from=rotate", "prompt.structure_minutes=1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0, help="train.seed; results of seed N > 0 get a _seedN suffix")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    for name in args.variants:
        suffix = f"_seed{args.seed}" if args.seed else ""
        out = Path(args.out) / f"{name}{suffix}"
        shutil.rmtree(out, ignore_errors=True)
        overrides = [*VARIANTS[name], f"out={out}", f"train.seed={args.seed}"]
        command = f"python -m benchmarks.elmm.elmm_ablation --variants {name} --seed {args.seed}"
        started = time.perf_counter()
        document = run_elmm(load_config(CONFIG, overrides), show_progress=False, command=command)
        document["wall_seconds"] = time.perf_counter() - started
        document["threads"] = torch.get_num_threads()
        write_result(results_dir("elmm") / f"elmm_umls_{name}{suffix}.json", document, args)
        rows[name] = document
        print(name, round(document["wall_seconds"]), document["test"]["both"]["mrr"], flush=True)
    Console().print(metrics_table(rows, title="ELMM ablations on UMLS (filtered, realistic ranks)"))


if __name__ == "__main__":
    main()
