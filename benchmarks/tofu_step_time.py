"""Seconds per TOFU training step, split into context sampling, forward, and backward + Adam, on
DB15K, MKG-W and MKG-Y at the CPU configuration of ``tofu_runs.sh`` (SE 3 / GP 2 layers, batch
32, 16 nodes per hop, the unreached prior on), and the epoch time they imply.

Every timed step draws the same seeded training edges, so two versions of the recipe are timed on
the same work: time another checkout by putting its ``recipes`` folder first on the path, e.g.

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before/recipes python benchmarks/tofu_step_time.py --label before
    python benchmarks/tofu_step_time.py --label after

Each run adds its label's entry (with the commit of the code it imported) to
``benchmarks/results/tofu_step_time.json`` and prints a table of all entries.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import prune_compensate_recipes
from prune_compensate_recipes.tofu.config import load_config
from prune_compensate_recipes.tofu.run import build_model, make_tokenizer, prepare_graph

RESULTS = Path(__file__).resolve().parent / "results"
CPU = [
    "model.se_layers=3",
    "model.gp_layers=2",
    "train.batch_size=32",
    "structure.max_nodes_per_hop=16",
    "model.unreached_prior=true",
]
GRAPHS = {"DB15K": "tofu_db15k.yaml", "MKG-W": "tofu_mkgw.yaml", "MKG-Y": "tofu_mkgy.yaml"}


def _commit(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."], capture_output=True, text=True)
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"


def time_graph(config_name: str, steps: int, warmup: int) -> dict[str, float]:
    config = load_config(config_name, CPU)
    torch.manual_seed(0)
    data = prepare_graph(config.graphs[0], config, make_tokenizer(config))
    model = build_model(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    g, batch = data.graph, config.train.batch_size
    order = torch.randperm(g.num_edges, generator=torch.Generator().manual_seed(0))
    split = {"sample": 0.0, "forward": 0.0, "backward_and_step": 0.0}
    for step in range(warmup + steps):
        edges = order[step * batch : (step + 1) * batch]
        t0 = time.perf_counter()
        hidden = torch.stack([edges, g.partner(edges)], 1)
        ctx = data.sampler.sample(g.src[edges], g.rel[edges], list(hidden), step)
        t1 = time.perf_counter()
        masked = (torch.arange(edges.shape[0]).repeat_interleave(2), hidden.flatten())
        logits = model(g, data.tokens, g.src[edges], ctx, masked)
        loss = torch.nn.functional.cross_entropy(logits, g.dst[edges])
        t2 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t3 = time.perf_counter()
        if step >= warmup:
            split["sample"] += t1 - t0
            split["forward"] += t2 - t1
            split["backward_and_step"] += t3 - t2
    per_step = {k: v / steps for k, v in split.items()}
    seconds = sum(per_step.values())
    batches_per_epoch = -(-g.num_edges // batch)
    return {
        **{f"{k}_s": v for k, v in per_step.items()},
        "seconds_per_step": seconds,
        "batches_per_epoch": batches_per_epoch,
        "seconds_per_epoch": seconds * batches_per_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="name of this entry, e.g. before / after")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS), choices=list(GRAPHS))
    args = parser.parse_args()
    code = Path(prune_compensate_recipes.__file__).resolve().parent
    entry = {
        "command": "python " + " ".join(sys.argv),
        "code": str(code),
        "commit": _commit(code),
        "settings": CPU,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "graphs": {name: time_graph(GRAPHS[name], args.steps, args.warmup) for name in args.graphs},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "tofu_step_time.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"schema": 1, "entries": {}}
    doc["entries"][args.label] = entry
    path.write_text(json.dumps(doc, indent=2) + "\n")
    table = Table(title="TOFU training step (CPU configuration of tofu_runs.sh)")
    for column in ("entry", "commit", "graph", "sample s", "forward s", "backward+Adam s", "s/step", "s/epoch"):
        table.add_column(column, justify="left" if column in ("entry", "commit", "graph") else "right")
    for label, e in doc["entries"].items():
        for name, t in e["graphs"].items():
            table.add_row(
                label,
                e["commit"],
                name,
                f"{t['sample_s']:.3f}",
                f"{t['forward_s']:.3f}",
                f"{t['backward_and_step_s']:.3f}",
                f"{t['seconds_per_step']:.3f}",
                f"{t['seconds_per_epoch']:.0f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
