"""Why DB15K's valid MRR collapsed: a train-vs-valid trace of TOFU on DB15K.

Runs the CPU configuration of ``tofu_runs.sh`` (SE 3 / GP 2 layers, batch 32, 16 nodes per hop)
for a wall-clock budget and, at every validation, scores three fixed, seeded samples of
``--sample`` triples each, both directions:

* ``valid_not_in_train``: valid triples that are not training triples (what the recipe now
  selects on; DB15K has 897 of them);
* ``valid_also_in_train``: valid triples that are training triples too (6,584 of DB15K's 7,481
  unique valid triples): their answer is one observed edge away at evaluation;
* ``train``: training triples scored as a training query sees them, i.e. with the query's own
  edge (and its inverse) hidden from the context and the propagation.

For each it records the filtered MRR, and the share of answers the propagation reaches (an
unreached answer gets the shared ``UNREACHED`` score).

    python -m benchmarks.tofu.tofu_db15k_trace [--minutes 8] [--sample 300]
    → benchmarks/tofu/results/tofu_db15k_trace.json and .png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from benchmarks.common import write_result
from benchmarks.tofu.cpu_settings import overrides
from prune_compensate_recipes.config import CONFIG_DIR
from prune_compensate_recipes.mkgc.evaluate import evaluate_link_prediction
from prune_compensate_recipes.tofu.config import load_config
from prune_compensate_recipes.tofu.model import UNREACHED
from prune_compensate_recipes.tofu.run import build_model, make_tokenizer, prepare_graph, scorer, train_logits, train_on

RESULTS = Path(__file__).resolve().parent / "results"
CPU = overrides("trace")  # benchmarks/tofu/cpu.yaml


def _sample(triples: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    keep = torch.randperm(triples.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return triples[keep.sort().values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--sample", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [*CPU, f"train.max_minutes={args.minutes}", "out=runs/tofu_db15k_trace"]
    config = load_config(CONFIG_DIR / "tofu_db15k.yaml", overrides)
    device = torch.device("cpu")
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    data = prepare_graph("DB15K", config, make_tokenizer(config))
    ds = data.dataset
    overlap = ds.in_train("valid")
    sets = {
        "valid_not_in_train": _sample(ds.valid[~overlap], args.sample, 1),
        "valid_also_in_train": _sample(ds.valid[overlap], args.sample, 2),
    }
    train_edges = _sample(torch.arange(data.graph.num_edges), args.sample, 3)  # edges of the observed graph
    g = data.graph

    def reached_share(scores: torch.Tensor, targets: torch.Tensor) -> float:
        return float((scores[torch.arange(targets.shape[0]), targets] > UNREACHED).double().mean())

    def diagnose() -> dict[str, float]:
        out: dict[str, float] = {}
        score = scorer(model, data, device)
        for name, triples in sets.items():
            result = evaluate_link_prediction(
                score, triples, ds.all_triples(), ds.num_entities, ds.num_relations, batch_size=32, show_progress=False
            )
            out[f"{name}_mrr"] = result.metrics()["mrr"]
            tails = score.score_tails(triples[:, 0], triples[:, 1])
            out[f"{name}_tail_reached"] = reached_share(tails, triples[:, 2])
        # training queries as training sees them: own edge and its inverse hidden
        ranks, reached = [], []
        for chunk in train_edges.split(32):
            logits = train_logits(model, data, chunk, seed=0, device=device)
            target = g.dst[chunk]
            reached.append(logits[torch.arange(chunk.shape[0]), target] > UNREACHED)
            target_score = logits[torch.arange(chunk.shape[0]), target]
            better = (logits > target_score[:, None]).sum(1)
            tied = (logits == target_score[:, None]).sum(1) - 1
            ranks.append(1 + better + tied / 2)  # realistic rank, unfiltered
        out["train_hidden_edge_mrr_unfiltered"] = float((1.0 / torch.cat(ranks).double()).mean())
        out["train_hidden_edge_reached"] = float(torch.cat(reached).double().mean())
        print(json.dumps(out), flush=True)
        return out

    info = train_on(
        model,
        [data],
        config,
        epochs=config.train.epochs,
        lr=config.train.lr,
        max_minutes=config.train.max_minutes,
        max_steps=0,
        label="DB15K trace",
        device=device,
        show_progress=False,
        diagnose=diagnose,
    )
    results = {
        "command": "python -m benchmarks.tofu.tofu_db15k_trace " + " ".join(sys.argv[1:]),
        "config_overrides": CPU,
        "budget_minutes": args.minutes,
        "seed": config.train.seed,
        "sample_seeds": {"valid_not_in_train": 1, "valid_also_in_train": 2, "train": 3},
        "sample": args.sample,
        "valid_split": {"unique": int(ds.valid.shape[0]), "also_in_train": int(overlap.sum())},
        "training": {k: v for k, v in info.items() if k != "diagnostics"},
        "trace": info["diagnostics"],
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "tofu_db15k_trace.json"
    write_result(out, results, args)
    plot(results, RESULTS / "tofu_db15k_trace.png")
    print(f"written {out}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trace = results["trace"]
    steps = [row["step"] for row in trace]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (
        ("valid_not_in_train_mrr", "valid, not in train (filtered)"),
        ("valid_also_in_train_mrr", "valid, also in train (filtered)"),
        ("train_hidden_edge_mrr_unfiltered", "train, own edge hidden (raw)"),
    ):
        axes[0].plot(steps, [row[key] for row in trace], "o-", label=label)
    for key, label in (
        ("valid_not_in_train_tail_reached", "valid, not in train"),
        ("valid_also_in_train_tail_reached", "valid, also in train"),
        ("train_hidden_edge_reached", "train, own edge hidden"),
    ):
        axes[1].plot(steps, [row[key] for row in trace], "o-", label=label)
    axes[0].set_ylabel("MRR")
    axes[1].set_ylabel("share of answers reached by the propagation")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    fig.suptitle("TOFU on DB15K (CPU config): training vs the two kinds of valid triples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
