"""ELMM inference time per query, pruned against unpruned, at the batch size evaluation uses.

The paper's efficiency claim is that pruning attention makes MKGC inference cheaper. This builds
the ELMM of the same-budget comparisons (``elmm_vs_rotate.sh``: real MiniLM, RotatE structure
tokens, the RotatE score under the head, the row head; ``--precision`` bf16 autocast or float32) once
per K (0 = unpruned, 3 = the recipe, 6 = every attention dropped), all in one process, and times
the forward pass of the same test queries at batch 1 and at the evaluation's batch size (128).

Rounds interleave the variants (K = 0, 3, 6, 0, 3, 6, …), so drift in the machine's speed lands on
all of them; a variant's figure is the median over its rounds of the round's seconds per query.
Each forward is also split in two by hooks on the backbone's text model: the transformer, and
what is not the transformer (the structure tokens, the head over all entities and the KGE score
of every entity), which pruning cannot touch. The model's weights do not change what a forward
costs, so the KGE rows train for a few seconds and the maps fit on 200 prompts.

    python -m benchmarks.elmm.elmm_inference_time [--datasets FB15k-237 WN18] [--ks 0 3 6]
        [--batch-sizes 1 128] [--queries 512] [--rounds 5] [--threads 1]
    → benchmarks/elmm/results/elmm_inference_time.json
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks.common import write_result
from prune_compensate_recipes.elmm.config import load_config
from prune_compensate_recipes.elmm.run import ElmmRun, build_run

RESULTS = Path(__file__).resolve().parent / "results"
# the same-budget comparison's ELMM (benchmarks/elmm/elmm_prior_config.sh), minus what only training reads
COMPARISON = [
    "prompt.structure_tokens=true",
    "prompt.structure_from=rotate",
    "prompt.structure_minutes=0.05",
    "prompt.structure_score=true",
    "prompt.head_from_structure=true",
    "prune.calibration_samples=200",
]


@contextlib.contextmanager
def backbone_clock(run: ElmmRun) -> Iterator[list[float]]:
    """Seconds spent inside the backbone's text model, one entry per forward; hooks always removed."""
    spent: list[float] = []
    started: list[float] = []
    module = run.model.text_model
    pre = module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    post = module.register_forward_hook(lambda *_: spent.append(time.perf_counter() - started.pop()))
    try:
        yield spent
    finally:
        pre.remove()
        post.remove()


def time_batches(run: ElmmRun, batches: list[tuple], precision: torch.dtype | None) -> dict[str, float]:
    """One pass over prepared ``batches`` of (inputs, size) → seconds per query, total and backbone."""
    total, backbone, queries = 0.0, 0.0, 0
    with torch.no_grad(), backbone_clock(run) as spent:
        for inputs, size in batches:
            with torch.autocast("cpu", dtype=precision or torch.bfloat16, enabled=precision is not None):
                start = time.perf_counter()
                run.model(*inputs)
                total += time.perf_counter() - start
            queries += size
        backbone = sum(spent)
    return {"s_per_query": total / queries, "backbone_s_per_query": backbone / queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["FB15k-237", "WN18"])
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 3, 6])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 128])
    parser.add_argument("--queries", type=int, default=512, help="test queries timed per batch size")
    parser.add_argument("--batch1-queries", type=int, default=64, help="queries timed at batch 1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["bf16", "float32"], default="bf16")
    parser.add_argument("--out", type=Path, default=RESULTS / "elmm_inference_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = torch.bfloat16 if args.precision == "bf16" else None
    rows = []
    for dataset in args.datasets:
        runs = {}
        for k in args.ks:
            config = load_config(
                "elmm_minilm_fb15k237.yaml",
                [f"data={dataset}", f"prune.k={k}", *COMPARISON, f"out=runs/elmm_inference_time/{dataset}"],
            )
            runs[k] = build_run(config, show_progress=False)
            runs[k].model.eval()
        test = runs[args.ks[0]].dataset.test
        for batch_size in args.batch_sizes:
            n = args.batch1_queries if batch_size == 1 else args.queries
            entities, relations = test[:n, 0], test[:n, 1]
            prepared = {
                k: [
                    (run.inputs(e, r), int(e.shape[0]))
                    for e, r in zip(entities.split(batch_size), relations.split(batch_size), strict=True)
                ]
                for k, run in runs.items()
            }
            for k, run in runs.items():  # warm-up
                time_batches(run, prepared[k][:2], precision)
            rounds: dict[int, list[dict[str, float]]] = {k: [] for k in runs}
            with Progress(transient=True) as progress:
                task = progress.add_task(f"{dataset} batch {batch_size}", total=args.rounds * len(runs))
                for _ in range(args.rounds):
                    for k, run in runs.items():
                        rounds[k].append(time_batches(run, prepared[k], precision))
                        progress.advance(task)
            for k in runs:
                seconds = statistics.median(r["s_per_query"] for r in rounds[k])
                backbone = statistics.median(r["backbone_s_per_query"] for r in rounds[k])
                rows.append(
                    {
                        "dataset": dataset,
                        "entities": runs[k].dataset.num_entities,
                        "k": k,
                        "batch_size": batch_size,
                        "queries": n,
                        "ms_per_query": 1e3 * seconds,
                        "backbone_ms_per_query": 1e3 * backbone,
                        "rest_ms_per_query": 1e3 * (seconds - backbone),
                        "rounds_ms_per_query": [1e3 * r["s_per_query"] for r in rounds[k]],
                    }
                )
        for row in rows:
            if row["dataset"] == dataset:
                base = next(
                    r for r in rows if r["dataset"] == dataset and r["k"] == 0 and r["batch_size"] == row["batch_size"]
                )
                row["speedup_vs_unpruned"] = base["ms_per_query"] / row["ms_per_query"]
                row["backbone_speedup_vs_unpruned"] = base["backbone_ms_per_query"] / row["backbone_ms_per_query"]
    table = Table(title=f"ELMM inference per query ({args.precision}, {args.threads} thread(s))")
    for column in ("dataset", "K", "batch", "ms/query", "backbone ms", "rest ms", "× vs K = 0", "backbone ×"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["dataset"],
            str(r["k"]),
            str(r["batch_size"]),
            f"{r['ms_per_query']:.2f}",
            f"{r['backbone_ms_per_query']:.2f}",
            f"{r['rest_ms_per_query']:.2f}",
            f"{r['speedup_vs_unpruned']:.2f}",
            f"{r['backbone_speedup_vs_unpruned']:.2f}",
        )
    Console().print(table)
    document = {
        "rows": rows,
        "config": {"base": "elmm_minilm_fb15k237.yaml", "overrides": COMPARISON},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
    }
    write_result(args.out, document, args)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
