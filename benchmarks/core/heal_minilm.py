"""Heal on real MiniLM, K = 3: does distillation of the replacement maps beat the closed-form fit?

Protocol of ``benchmarks/core/prune_error.py`` (embedded calibration, 1,000 fitting / 300 held-out
samples, K = 3 in profile order), then ``--heal-steps`` with each objective, starting from lstsq
and (for comparison) from zero maps ("heal from none": plain distillation). Reported per row: the
held-out relative squared error of the final hidden states and its ratio to no compensation, the
held-out embedding cosine, the retrieval MRR retention of ``benchmarks/core/minilm_retrieval_sweep.py``
(same pairs), and the heal's cost (seconds, peak RSS, steps kept).

    python -m benchmarks.core.heal_minilm --data-dir DIR   # DIR holds FB15k-237/
    → benchmarks/core/results/heal_minilm.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from benchmarks.core.minilm_retrieval_sweep import entity_names, seen_entity_texts, wikidata_entries, write_pairs
from prune_compensate import (
    CalibrationConfig,
    CalibrationSample,
    EvalConfig,
    HealConfig,
    PruneConfig,
    evaluate,
    load_model,
    prune_,
    read_samples,
)
from tools.make_default_calibration import verbalised_triples

RESULTS = Path(__file__).resolve().parent / "results"


def write_select_pairs(data_dir: Path, calibration_text: str, n_task_texts: int, n: int, out: Path) -> int:
    """Up to ``n`` (name, description) pairs of entities the calibration names, neither of whose texts
    is among the first ``n_task_texts`` task texts of ``--calib mix`` (the same shuffle), as JSONL."""
    texts = seen_entity_texts(data_dir, calibration_text)
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    random.Random(0).shuffle(texts)
    used = set(texts[:n_task_texts])
    free = [(q, d) for q, d in pairs if q not in used and d not in used]
    random.Random(2).shuffle(free)
    lines = [json.dumps({"query": q, "document": d}, ensure_ascii=False) for q, d in free[:n]]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def extra_triples(data_dir: Path, pairs: Path, exclude: set[str], n: int) -> list[str]:
    """``n`` more long samples in the embedded set's form: verbalised FB15k-237 training triples, none of
    them in ``exclude`` (the embedded set) and none naming a scored query (its name or its Wikidata
    label), so the scored pairs and the held-out samples stay those of every other run."""
    root = data_dir / "FB15k-237"
    names, wikidata = entity_names(root), wikidata_entries(root)
    queries = {json.loads(line).get("query") for line in pairs.read_text("utf-8").splitlines()} - {None}
    scored_ids = {mid for mid, name in names.items() if name in queries}
    scored = queries | {(wikidata.get(m) or {}).get("label") or "" for m in scored_ids}
    scored.discard("")
    chosen: list[str] = []
    for head, tail, text in verbalised_triples(root):
        if len(chosen) == n:
            break
        if head in scored_ids or tail in scored_ids or text in exclude or text in chosen:
            continue
        if not any(name in text for name in scored):
            chosen.append(text)
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} triples name no scored entity; pass --extra-triples {len(chosen)}")
    return chosen


def options() -> argparse.ArgumentParser:
    """The script's options; ``results_table`` reads a run's settings as this parser parsed them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--k", type=int, default=3, help="attention layers dropped")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--variants", default="lstsq:hidden,lstsq:embedding,none:embedding", help="start:objective,...")
    parser.add_argument(
        "--calib",
        choices=("embedded", "task", "mix"),
        default="embedded",
        help="task: fit and heal on short texts (names and descriptions of the calibration's entities); "
        "mix: the 1,000 embedded fitting samples shuffled with --task-texts such texts, held-out still the "
        "300 embedded samples",
    )
    parser.add_argument("--task-texts", type=int, default=1000, help="task-shaped texts added by --calib mix")
    parser.add_argument(
        "--extra-triples",
        type=int,
        default=0,
        help="with --calib mix, this many more long fitting samples: verbalised FB15k-237 training triples "
        "outside the embedded set that name no scored entity",
    )
    parser.add_argument(
        "--held-out",
        choices=("own", "embedded"),
        default="own",
        help="embedded: with --calib task, fit on 1,000 task texts and hold out the 300 embedded samples "
        "(the error then compares with the embedded rows)",
    )
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--eval-every", type=int, default=25, help="held-out evaluation interval (steps)")
    parser.add_argument("--patience", type=int, default=4, help="evaluations without a gain before stopping")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant", help="heal learning rate")
    parser.add_argument("--train-norms", action="store_true", help="also train the norms of the healed blocks")
    parser.add_argument(
        "--select-pairs",
        type=int,
        default=0,
        help="keep the heal step with the best MRR on this many name -> description pairs of entities the "
        "calibration names (never scored queries; none of their texts among the --calib mix texts)",
    )
    parser.add_argument(
        "--select-distractors",
        action="store_true",
        help="rank the --select-pairs queries against the whole retrieval corpus (every scored pair's document "
        "as a distractor, never its query), as the scored queries are ranked",
    )
    parser.add_argument("--seed", type=int, default=HealConfig().seed, help="heal batch order (HealConfig.seed)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the model, fit, heal and retrieval)")
    return parser


def main() -> None:
    parser = options()
    args = parser.parse_args()
    if args.extra_triples and (args.calib != "mix" or args.extra_triples < 0):
        parser.error("--extra-triples takes a positive count and --calib mix")
    calibration = CalibrationConfig(n_samples=1300)
    samples = read_samples(calibration)
    pairs = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    calibration_text = "\n".join(s.text for s in samples[:1000])
    counts = write_pairs(args.data_dir, calibration_text, pairs)
    if args.calib == "task":  # same entities, task-shaped text; still disjoint from the scored queries
        texts = seen_entity_texts(args.data_dir, calibration_text)
        random.Random(0).shuffle(texts)
        task = [CalibrationSample(t, [], f"task:{i}") for i, t in enumerate(texts[:1300])]
        samples = task[:1000] + samples[1000:] if args.held_out == "embedded" else task
    elif args.calib == "mix":  # the same held-out samples as "embedded", so the error ratios compare
        texts = seen_entity_texts(args.data_dir, calibration_text)
        random.Random(0).shuffle(texts)
        task = [CalibrationSample(t, [], f"task:{i}") for i, t in enumerate(texts[: args.task_texts])]
        embedded = {s.text for s in read_samples(CalibrationConfig(n_samples=1500))}
        extra = extra_triples(args.data_dir, pairs, embedded, args.extra_triples) if args.extra_triples else []
        fitting = samples[:1000] + task + [CalibrationSample(t, [], f"triple:{i}") for i, t in enumerate(extra)]
        random.Random(1).shuffle(fitting)
        samples = fitting + samples[1000:]
    select_pairs = None
    if args.select_pairs:
        select_pairs = Path(tempfile.mkdtemp()) / "select_pairs.jsonl"
        written = write_select_pairs(args.data_dir, calibration_text, args.task_texts, args.select_pairs, select_pairs)
        counts["select_pairs"] = written
        if args.select_distractors:  # the scored corpus's documents, so both rankings run against the same corpus
            chosen = {json.loads(line)["document"] for line in select_pairs.read_text("utf-8").splitlines()}
            documents = [json.loads(line)["document"] for line in pairs.read_text("utf-8").splitlines()]
            extra = [d for d in dict.fromkeys(documents) if d not in chosen]
            with select_pairs.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps({"document": d}, ensure_ascii=False) + "\n" for d in extra)
            counts["select_distractors"] = len(extra)
    eval_config = EvalConfig(text=None, pairs=str(pairs), batch_size=64, max_length=128, show_progress=False)
    dense = {m.metric: m.pruned for m in evaluate(load_model(device=args.device), None, eval_config).metrics}
    rows = []
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    for init, objective in variants:
        heal = HealConfig(  # objective "-": no heal, the start itself is scored
            steps=0 if objective == "-" else args.steps,
            lr=args.lr,
            objective="auto" if objective == "-" else objective,
            eval_every=args.eval_every,
            patience=args.patience,
            batch_size=args.batch_size,
            train_norms=args.train_norms,
            select_pairs=str(select_pairs) if select_pairs else None,
            schedule=args.schedule,
            seed=args.seed,
        )
        config = PruneConfig(
            k=args.k,
            init=init,
            held_out=300 / len(samples),
            compare=("none", "lstsq"),
            calibration=calibration,
            heal=heal,
            show_progress=False,
        )
        loaded = load_model(device=args.device)
        started = time.perf_counter()
        result = prune_(loaded, config, samples)
        seconds = time.perf_counter() - started
        found = {m.metric: m.pruned for m in evaluate(loaded, None, eval_config).metrics}
        none = result.error["none"]["relative"]
        row = {
            "start": init,
            "objective": objective,
            "layers": result.pruned_layers,
            "relative": {name: err["relative"] for name, err in result.error.items()},
            "embedding_cosine": {name: err["embedding_cosine"] for name, err in result.error.items()},
            "heal_over_none": result.error["heal"]["relative"] / none if "heal" in result.error else None,
            "lstsq_over_none": result.error["lstsq"]["relative"] / none,
            "mrr_retention": found["mrr"] / dense["mrr"],
            "recall@1_retention": found["recall@1"] / dense["recall@1"],
            "heal": result.heal,
            "prune_seconds": round(seconds, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = RESULTS / f"heal_minilm{args.tag}.json"
    document = {
        "command": "python -m benchmarks.core.heal_minilm --data-dir DIR " + " ".join(sys.argv[3:]),
        "calibration": args.calib,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "seeds": {
            "calibration_draw": calibration.seed,
            "heal_batch_order": args.seed,
            "select_pairs_draw": 2,
        },
        "protocol": f"K={args.k}, {args.calib} calibration, {len(samples) - 300:,} fitting / 300 held-out "
        f"samples ({'embedded' if args.calib != 'task' or args.held_out == 'embedded' else 'task'}); heal "
        "early-stops on the last tenth of the fitting samples; retrieval as "
        "benchmarks/core/minilm_retrieval_sweep.py",
        "pairs": counts,
        "dense": dense,
        "rows": rows,
    }
    write_result(out, document, args)
    print(f"written {out}")


if __name__ == "__main__":
    main()
