"""Seconds per TOFU training step, split into context sampling, forward, and backward + Adam, on
DB15K, MKG-W and MKG-Y at the CPU configuration of ``tofu_runs.sh`` (SE 3 / GP 2 layers, batch
32, 16 nodes per hop, the unreached prior on), and the epoch time they imply.

Every timed step draws the same seeded training edges, so two versions of the recipe are timed on
the same work: time another checkout by putting its ``recipes`` folder first on the path, e.g.

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before/recipes python -m benchmarks.tofu.tofu_step_time --label before
    python -m benchmarks.tofu.tofu_step_time --label after

Each run adds its label's entry (with the commit of the code it imported) to
``benchmarks/tofu/results/tofu_step_time.json`` (or ``--results``) and prints a table of all entries.
``--device cuda`` times on a GPU (synchronised); ``--set key=value ...`` changes the config, e.g.
``--set model.se_layers=6 model.gp_layers=6`` for the paper's depth; a configuration that runs out
of memory is recorded as such.
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
from benchmarks.tofu.cpu_settings import overrides
from prune_compensate_recipes.tofu.config import load_config
from prune_compensate_recipes.tofu.run import build_model, make_tokenizer, prepare_graph

RESULTS = Path(__file__).resolve().parent / "results"
CPU = overrides("step_time")  # benchmarks/tofu/cpu.yaml
GRAPHS = {"DB15K": "tofu_db15k.yaml", "MKG-W": "tofu_mkgw.yaml", "MKG-Y": "tofu_mkgy.yaml"}


def _commit(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."], capture_output=True, text=True)
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"


def time_graph(
    config_name: str, steps: int, warmup: int, device: torch.device, overrides: list[str]
) -> dict[str, float | str]:
    config = load_config(config_name, [*CPU, *overrides])
    torch.manual_seed(0)
    data = prepare_graph(config.graphs[0], config, make_tokenizer(config), device)
    model = build_model(config).to(device).train()
    try:
        return _time_steps(model, data, config.train.batch_size, config.train.lr, steps, warmup, device)
    except torch.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0]}"}


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _time_steps(model, data, batch: int, lr: float, steps: int, warmup: int, device: torch.device) -> dict[str, float]:  # noqa: ANN001
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = data.graph
    order = torch.randperm(g.num_edges, generator=torch.Generator().manual_seed(0))
    split = {"sample": 0.0, "forward": 0.0, "backward_and_step": 0.0}
    for step in range(warmup + steps):
        edges = order[step * batch : (step + 1) * batch]
        t0 = _sync(device)
        hidden = torch.stack([edges, g.partner(edges)], 1)
        ctx = data.sampler.sample(g.src[edges], g.rel[edges], list(hidden), step).to(device)
        t1 = _sync(device)
        masked = (torch.arange(edges.shape[0]).repeat_interleave(2).to(device), hidden.flatten().to(device))
        logits = model(g, data.tokens, g.src[edges].to(device), ctx, masked)
        loss = torch.nn.functional.cross_entropy(logits, g.dst[edges].to(device))
        t2 = _sync(device)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t3 = _sync(device)
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--results", type=Path, default=RESULTS / "tofu_step_time.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    code = Path(prune_compensate_recipes.__file__).resolve().parent
    entry = {
        "command": "python " + " ".join(sys.argv),
        "code": str(code),
        "commit": _commit(code),
        "settings": [*CPU, *args.set],
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "graphs": {name: time_graph(GRAPHS[name], args.steps, args.warmup, device, args.set) for name in args.graphs},
    }
    path = args.results
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(path.read_text()) if path.is_file() else {"schema": 1, "entries": {}}
    doc["entries"][args.label] = entry
    path.write_text(json.dumps(doc, indent=2) + "\n")  # entries accumulate: each records its own settings
    table = Table(title="TOFU training step (CPU configuration of tofu_runs.sh)")
    for column in ("entry", "commit", "graph", "sample s", "forward s", "backward+Adam s", "s/step", "s/epoch"):
        table.add_column(column, justify="left" if column in ("entry", "commit", "graph") else "right")
    for label, e in doc["entries"].items():
        for name, t in e["graphs"].items():
            if "error" in t:
                table.add_row(label, e["commit"], name, t["error"][:40], "", "", "", "")
                continue
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
