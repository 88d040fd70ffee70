"""Where an ELMM training step spends its time: building the prompts and targets, the forward
pass, the loss, backward and AdamW, timed per step (queries per second), and torch.profiler's
top operators; one entry per configuration variant, all in one process on the same queries.

    python -m benchmarks.elmm.elmm_step_time [--variants base span16 ...] [--steps 10] [--out FILE]
    → benchmarks/elmm/results/elmm_step_time.json (or FILE)

The config is ``elmm_minilm_fb15k237`` (real MiniLM, K = 3, batch 64) with ``prune.calibration_samples``
lowered to 200: the fit's quality does not change what a step costs, only which 3 layers go.
Variants: ``base``; ``span16`` (entity text 16 tokens instead of 32); ``unpruned`` (K = 0, the
backbone's full cost); ``bf16`` (bf16 autocast of the forward pass); ``bf16_nodropout`` (and no
dropout in the backbone or LoRA); ``bf16_nodropout_prior`` (and the RotatE score, the row head and
the softmax loss of ``benchmarks/elmm/elmm_vs_rotate.sh``; its RotatE trains for 3 s, which does not
change a step's cost).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from prune_compensate_recipes.elmm.config import load_config
from prune_compensate_recipes.elmm.run import build_run
from prune_compensate_recipes.elmm.train import LOSSES, TrainQueries

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "base": [],
    "span16": ["prompt.entity_tokens=16"],
    "unpruned": ["prune.k=0"],
    "bf16": ["train.mixed_precision=bf16"],
    "bf16_nodropout": ["train.mixed_precision=bf16", "backbone.dropout=0", "lora.dropout=0"],
    # the FB15k-237 comparison's configuration: + RotatE score and row head, softmax loss
    "bf16_nodropout_prior": [
        "train.mixed_precision=bf16",
        "backbone.dropout=0",
        "lora.dropout=0",
        "prompt.structure_tokens=true",
        "prompt.structure_from=rotate",
        "prompt.structure_minutes=0.05",
        "prompt.structure_score=true",
        "prompt.head_from_structure=true",
        "train.loss=softmax",
    ],
}


def time_variant(overrides: list[str], steps: int, warmup: int) -> dict:
    config = load_config("elmm_minilm_fb15k237.yaml", ["prune.calibration_samples=200", *overrides])
    run = build_run(config, show_progress=False)
    dataset = run.dataset
    queries = TrainQueries.from_triples(dataset.with_inverse(dataset.train), dataset.num_relations)
    order = torch.randperm(len(queries), generator=torch.Generator().manual_seed(0))
    batch = config.train.batch_size
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr)
    precision = torch.bfloat16 if config.train.mixed_precision == "bf16" else None
    run.model.train()
    split = {"inputs": 0.0, "forward": 0.0, "backward_and_step": 0.0}

    def step(index: torch.Tensor, timed: bool) -> None:
        t0 = time.perf_counter()
        entities, relations = queries.keys[index, 0], queries.keys[index, 1]
        inputs = run.inputs(entities, relations)
        positives = queries.targets(index, dataset.num_entities)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=precision or torch.bfloat16, enabled=precision is not None):
            logits = run.model(*inputs)
        loss = LOSSES[config.train.loss](logits.float(), positives, entities)
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        if timed:
            split["inputs"] += t1 - t0
            split["forward"] += t2 - t1
            split["backward_and_step"] += t3 - t2

    for i in range(warmup + steps):
        step(order[i * batch : (i + 1) * batch], timed=i >= warmup)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(warmup + steps, warmup + steps + 2):
            step(order[i * batch : (i + 1) * batch], timed=False)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    per_step = {k: v / steps for k, v in split.items()}
    seconds = sum(per_step.values())
    return {
        "overrides": overrides,
        **{f"{k}_s": v for k, v in per_step.items()},
        "seconds_per_step": seconds,
        "queries_per_second": batch / seconds,
        "train_queries": len(queries),
        "seconds_per_epoch": seconds * len(queries) / batch,
        "profiler_top_ops": [
            {"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count} for e in events
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "elmm_step_time.json", help="result file")
    args = parser.parse_args()
    entries = {name: time_variant(VARIANTS[name], args.steps, args.warmup) for name in args.variants}
    doc = {
        "schema": 1,
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "steps": args.steps,
        "variants": entries,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, doc, args)
    table = Table(title="ELMM training step, FB15k-237, MiniLM (batch 64)")
    for column in ("variant", "inputs s", "forward s", "backward+AdamW s", "queries/s", "h/epoch", "top op"):
        table.add_column(column, justify="left" if column in ("variant", "top op") else "right")
    for name, e in entries.items():
        top = e["profiler_top_ops"][0]
        table.add_row(
            name,
            f"{e['inputs_s']:.3f}",
            f"{e['forward_s']:.3f}",
            f"{e['backward_and_step_s']:.3f}",
            f"{e['queries_per_second']:.1f}",
            f"{e['seconds_per_epoch'] / 3600:.2f}",
            f"{top['op']} ({100 * top['self_cpu_share']:.0f} %)",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
