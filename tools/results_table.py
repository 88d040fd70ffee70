"""Markdown tables from committed result files, so the numbers in the docs are the JSONs'.

    python tools/results_table.py benchmarks/elmm/results/elmm_umls_*.json   # rows for any metrics.json files
    python tools/results_table.py --blocks            # print every generated block of the docs
    python tools/results_table.py --write             # rewrite those blocks in README.md and benchmarks/README.md

A generated block sits between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``;
``tests/test_results_tables.py`` fails when a block differs from what this tool prints.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
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


ROOT = Path(__file__).resolve().parents[1]
# each area's committed result files (benchmarks/<area>/results)
CORE = ROOT / "benchmarks" / "core" / "results"
ELMM = ROOT / "benchmarks" / "elmm" / "results"
TOFU = ROOT / "benchmarks" / "tofu" / "results"
DOCS = (ROOT / "README.md", ROOT / "benchmarks" / "README.md")


def results_of(folder: Path, **match: object) -> list[dict]:
    """The result documents in ``folder`` whose ``run`` record (what the run was: kind, dataset,
    group, variant, seed, minutes; written by ``benchmarks.common.keep``) has every ``match`` field,
    in file-name order."""
    documents = _run_documents(folder, folder.stat().st_mtime_ns)
    return [doc for doc in documents if all(doc["run"].get(key) == value for key, value in match.items())]


@functools.lru_cache(maxsize=8)
def _run_documents(folder: Path, mtime_ns: int) -> tuple[dict, ...]:
    """Every document of ``folder`` with a ``run`` record, read once per state of the folder (a
    table asks for many subsets; a file added or removed changes the folder's mtime)."""
    documents = (json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json")))
    return tuple(doc for doc in documents if isinstance(doc.get("run"), dict))


def by_seed(documents: list[dict]) -> dict[int, dict]:
    return {document["run"]["seed"]: document for document in documents}


def metrics_rows(paths: list[Path], names: list[str] | None = None) -> list[str]:
    rows = [
        "| run | test MR | MRR | Hits@1 | Hits@3 | Hits@10 | valid MRR | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, path in enumerate(paths):
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        test, valid = document["test"]["both"], (document.get("valid") or {}).get("both", {})
        cells = [f"{test['mr']:.1f}", *(f"{test[k]:.3f}" for k in ("mrr", "hits@1", "hits@3", "hits@10"))]
        valid_mrr = f"{valid['mrr']:.3f}" if valid else ""
        name = names[index] if names else Path(path).stem
        rows.append(f"| {name} | {' | '.join(cells)} | {valid_mrr} | {budget(document)} |")
    return rows


def core_block() -> list[str]:
    """MiniLM, K = 3: held-out error (× none) and retrieval retention per init."""
    error = json.loads((CORE / "prune_error.json").read_text())["minilm"]["downstream"]
    sweep = json.loads((CORE / "minilm_retrieval_sweep.json").read_text())
    retention = {run["init"]: run["mrr_retention"] for run in sweep["runs"] if run["k"] == 3}

    def heal_rows(calibration: str) -> list[dict]:
        """K = 3 heal rows of one calibration, each with its run's settings (as the script parsed its
        options, recorded in the file): schedule, learning rate, norms, the mix's texts."""
        found = []
        for path in sorted(CORE.glob("heal_minilm*.json")):
            data = json.loads(path.read_text())
            settings = data["settings"]
            if settings["calib"] != calibration:
                continue
            setting = ", cosine" if settings["schedule"] == "cosine" else ""
            setting += f", lr {_exponent(settings['lr'])}"
            setting += ", norms too" if settings["train_norms"] else ""
            # the mix's task texts and more long samples (--extra-triples); None outside the mix
            mix = (settings["task_texts"] if calibration == "mix" else None, settings["extra_triples"])
            rows = [row for row in data["rows"] if len(row["layers"]) == 3 and "heal" in row["relative"]]
            # the run's settings without its seed and file name: the seeds of one run share this key
            run = json.dumps({k: v for k, v in settings.items() if k not in ("seed", "tag")}, sort_keys=True)
            found += [{**row, "setting": setting, "mix": mix, "run": run} for row in rows]
        return found

    rows = [
        "| MiniLM, K = 3 of 6 | held-out rel. error of the final states | × none | retrieval MRR retention |",
        "|---|---|---|---|",
    ]
    for init in ("none", "mean", "lstsq"):
        relative = error[init]["relative"]
        ratio = relative / error["none"]["relative"]
        rows.append(f"| {init} | {relative:.3f} | {ratio:.4f} | {retention[init]:.3f} |")
    # per start (and, from zero, per calibration and its number of task texts), the heal run with the
    # lowest held-out error, averaged over its seeds (so a lucky seed is never the one shown); the mix
    # adds task-like short texts (and, with --extra-triples, more long samples) to the fitting samples,
    # the held-out samples are the same
    groups = (
        ("lstsq", "embedded", (None, 0), ""),
        ("zero", "embedded", (None, 0), ""),
        ("zero", "mix", (750, 0), ", mix of 750 task texts"),
        ("zero", "mix", (2000, 1000), ", mix of 2,000 task texts and 1,000 more triples"),
    )
    for start, calibration, mix, label in groups:
        seeds: dict[str, list[dict]] = {}
        for row in heal_rows(calibration):
            if (row["start"], row["mix"]) == (start, mix):
                seeds.setdefault(row["run"], []).append(row)
        runs = list(seeds.values())
        if not runs:
            continue
        best = min(runs, key=lambda run: sum(row["relative"]["heal"] for row in run) / len(run))
        first = best[0]
        kept = f"kept {first['heal']['best_step']}" if len(best) == 1 else f"{len(best)} seeds, mean ± half-range"
        metrics = [(row["relative"]["heal"], row["heal_over_none"], row["mrr_retention"]) for row in best]
        cells = [_mean_spread([m[i] for m in metrics], digits) for i, digits in enumerate((3, 4, 3))]
        run = f"{first['objective']}{label}{first['setting']}, {first['heal']['steps_run']} steps, {kept}"
        rows.append(f"| {start} → heal ({run}) | {' | '.join(cells)} |")
    return rows


INIT_ORDER = {"none": 0, "mean": 1, "lstsq": 2, "merged": 3}


def _decoder_rows() -> list[dict]:
    """The rows of every ``decoder_sweep*.json`` (a sweep may be split over several runs)."""
    return [row for path in sorted(CORE.glob("decoder_sweep*.json")) for row in json.loads(path.read_text())["rows"]]


def _decoder_cells(row: dict) -> str:
    held, generation = row["held_out"], row["generation"]
    return (
        f"{held['perplexity_retention']:.3f} | {held['kl']:.3f} | {held['top1_agreement']:.3f} | "
        f"{generation['prefix_share']:.3f} | {generation['identical']:.2f}"
    )


def decoder_block() -> list[str]:
    """SmolLM2-135M by K: attention sub-layers and whole blocks at equal parameters, per init, on
    held-out prose from another source than the calibration text (``decoder_sweep*.json``)."""
    rows = [
        "| SmolLM2-135M, 30 layers | init | params removed | ppl retention | KL(dense ‖ pruned) | top-1 agreement "
        "| greedy prefix kept | greedy 32 identical |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        _decoder_rows(), key=lambda r: (r["k_attention_equivalent"], r["unit"] != "attention", INIT_ORDER[r["init"]])
    )
    for row in ordered:
        what = f"{row['k']} attention" if row["unit"] == "attention" else f"{row['k']} block"
        what += "s" if row["k"] > 1 else ""
        params = f"{row['parameters_removed'] / 1e6:.2f} M"
        k = row["k_attention_equivalent"]
        rows.append(f"| K = {k}: {what} | {row['init']} | {params} | {_decoder_cells(row)} |")
    return rows


def decoder_summary_block() -> list[str]:
    """The README's decoder table: one row per K, KL / top-1 / perplexity retention per init and
    for whole blocks at equal parameters (lstsq), on the held-out prose."""
    cell: dict[tuple[int, str, str], str] = {}
    for row in _decoder_rows():
        held = row["held_out"]
        text = f"{held['kl']:.3f} · {held['top1_agreement']:.3f} · {held['perplexity_retention']:.3f}"
        cell[(row["k_attention_equivalent"], row["unit"], row["init"])] = text
    columns = [("attention", "none"), ("attention", "mean"), ("attention", "lstsq"), ("block", "lstsq")]
    rows = [
        "| attention layers removed (of 30) | none | mean (Theorem 1) | lstsq | whole blocks, lstsq, same parameters |",
        "|---|---|---|---|---|",
    ]
    for k in sorted({key[0] for key in cell}):
        rows.append(f"| {k} | " + " | ".join(cell.get((k, *column), "—") for column in columns) + " |")
    return rows


def heal_block() -> list[str]:
    """SmolLM2-135M: the heal (KL distillation) beside the lstsq start it refines, in one run
    (``decoder_heal*.json``): the step kept on the heal's own validation samples, its cost, the
    validation prose and the held-out prose."""
    rows = [
        "| K | init | calibration samples | heal: steps kept / run, seconds, process peak RSS | valid KL | held-out KL "
        "| held-out top-1 | held-out ppl retention | greedy prefix kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(CORE.glob("decoder_heal*.json")):
        data = json.loads(path.read_text())
        for row in data["rows"]:
            heal = row.get("heal")
            cost = "—"
            if heal:
                rss = heal["peak_rss_mb"] / 1024
                cost = f"{heal['best_step']} / {heal['steps_run']}, {heal['seconds']:.0f} s, {rss:.1f} GB"
            held = row["held_out"]
            init = row["init"]
            if heal:
                settings = data["settings"]
                trained = (
                    ["maps"] + ["norms"] * bool(settings.get("heal_norms")) + ["MLPs"] * bool(settings.get("heal_mlps"))
                )
                init += f" ({', '.join(trained)})"
            rows.append(
                f"| {row['k']} | {init} | {data['settings']['n_samples']} | {cost} | {row['valid']['kl']:.3f} "
                f"| {held['kl']:.3f} | {held['top1_agreement']:.3f} | {held['perplexity_retention']:.3f} "
                f"| {row['generation']['prefix_share']:.3f} |"
            )
    return rows


def ranking_block() -> list[str]:
    """SmolLM2-135M, K = 8: the paper's cosine ranking against drop-one KL, on the validation prose
    (where a choice is made) and the held-out prose (``decoder_ranking.json``)."""
    data = json.loads((CORE / "decoder_ranking.json").read_text())
    rows = [
        "| ranking (layers dropped) | init | valid KL | valid top-1 | held-out ppl retention | held-out KL "
        "| held-out top-1 | greedy prefix kept | greedy 32 identical |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(data["rows"], key=lambda r: (r["ranking"] != "cosine", INIT_ORDER[r["init"]])):
        valid = row["valid"]
        layers = ", ".join(map(str, row["layers"]))
        cells = f"{valid['kl']:.3f} | {valid['top1_agreement']:.3f} | {_decoder_cells(row)}"
        rows.append(f"| {row['ranking']} ({layers}) | {row['init']} | {cells} |")
    return rows


def export_bias_block() -> list[str]:
    """SmolLM2: what the engines' bias-free map costs (``export_llamacpp.json``), held-out prose."""
    data = json.loads((CORE / "export_llamacpp.json").read_text())
    rows = ["| K | map | KL(dense ‖ pruned) | top-1 agreement | ppl retention |", "|---|---|---|---|---|"]
    for row in data["rows"]:
        held = row["held_out"]
        cells = f"{held['kl']:.3f} | {held['top1_agreement']:.3f} | {held['perplexity_retention']:.3f}"
        rows.append(f"| {row['k']} | {row['variant']} | {cells} |")
    return rows


def engine_equal_block() -> list[str]:
    """llama.cpp running the exported f32 GGUF against ``load_pruned`` on the same prompts."""
    data = json.loads((CORE / "export_llamacpp.json").read_text())
    rows = [
        "| K (layers) | prompts | max abs Δ logit (max abs logit) | top-1 on prompt tokens | identical greedy "
        "continuations | identical tokenisation |",
        "|---|---|---|---|---|---|",
    ]
    for k, run in sorted(data["engine"].items(), key=lambda item: int(item[0])):
        layers = ", ".join(map(str, run["layers"]))
        difference = f"{run['max_abs_logit_difference']:.3f} ({run['max_abs_logit']:.1f})"
        rows.append(
            f"| {k} ({layers}) | {run['prompts']} | {difference} | {run['top1_agreement_on_prompts']:.3f} | "
            f"{run['identical_greedy_generations']:.2f} | {run['identical_tokenisation']:.2f} |"
        )
    return rows


ENGINE_NAMES = {"dense": "dense", "linear": "linear maps", "no_op": "no attention (ceiling)"}


def engine_block() -> list[str]:
    """llama.cpp speed (tokens/s, medians) and KV cache of SmolLM2 q8_0 files (``engine_speed.json``)."""
    data = json.loads((CORE / "engine_speed.json").read_text())
    speed, kv = data["tokens_per_second_median"], data["kv_cache"]
    rows = [
        "| SmolLM2 q8_0 | prefill 512 | prefill 4k | decode at 4k | decode at 16k | × dense at 16k "
        "| ÷ ceiling at 16k | KV cache (16k ctx) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    dense = speed["dense"]["decode_at_16384"]
    for name, values in speed.items():
        k, _, kind = name.partition("-")
        label = "dense" if name == "dense" else f"K = {k[1:]}, {ENGINE_NAMES[kind]}"
        ceiling = speed.get(f"{k}-no_op", {}).get("decode_at_16384")
        versus = f"{values['decode_at_16384'] / ceiling:.2f}" if ceiling and kind != "no_op" else "—"
        rows.append(
            f"| {label} | {values['prefill_512']:.0f} | {values['prefill_4096']:.0f} | "
            f"{values['decode_at_4096']:.1f} | "
            f"{values['decode_at_16384']:.1f} | {values['decode_at_16384'] / dense:.2f} | {versus} | "
            f"{kv[name]['total_mib']:.0f} MiB |"
        )
    return rows


def mkgc_block() -> list[str]:
    """FB15k-237: the ELMM recipe beside the structural baselines (same evaluator)."""
    names = ["ELMM (MiniLM, K = 3)", "TransE (PyKEEN)", "RotatE (PyKEEN)"]
    files = ["elmm_FB15k-237_minilm_k3.json", "transe_FB15k-237.json", "rotate_FB15k-237.json"]
    return metrics_rows([ELMM / f for f in files], names)


def _exponent(value: float) -> str:
    """A learning rate as a command line writes it: 1e-3, 3e-4, 5e-1."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _mean_spread(values: list[float], digits: int = 3) -> str:
    """``mean ± half-range`` of a metric over seeds (the spread a difference has to exceed); the
    value alone for one seed."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def _test_metric(documents: list[dict], key: str) -> list[float]:
    """One test metric (both directions) of each result document, in order (one per seed)."""
    return [d["test"]["both"][key] for d in documents]


def _mean(values: list[float]) -> str:
    """The mean over seeds with no decimals (for MR, whose seed spread is not reported)."""
    return f"{sum(values) / len(values):.0f}"


def _cells(runs: tuple[list[dict], ...], key: str, summary: Callable[[list[float]], str]) -> str:
    """One table cell per method: ``summary`` of its test ``key`` over seeds, "—" where it did not run."""
    return " | ".join(summary(_test_metric(docs, key)) if docs else "—" for docs in runs)


def _versus(values: list[float], reference: list[float]) -> str:
    """The mean difference to ``reference`` over seeds, and whether every seed agrees on its sign."""
    delta = f"{sum(values) / len(values) - sum(reference) / len(reference):+.3f}"
    seeds = "both seeds" if len(values) == 2 else "every seed"
    if max(values) < min(reference):
        return f"{delta} ({seeds} lower)"
    if min(values) > max(reference):
        return f"{delta} ({seeds} higher)"
    return f"{delta} (within the seeds' spread)"


def tofu_block() -> list[str]:
    """TOFU transductive beside RotatE on the three MMKGs: same budget, full test split, seeds 0 and 1
    as mean ± half-range, MR as the mean (``benchmarks/tofu/tofu_transductive.sh``). Where several TOFU
    variants ran (``tofu_<graph>_full[_<tag>]_seed<S>.json``), the row is the one with the best mean
    valid MRR (the selection the runs made), named with its GP depth; the last column is the MRR the
    TOFU paper reports (with images, on GPUs), quoted."""
    paper = next(
        d["mrr"]
        for d in (json.loads(p.read_text()) for p in sorted(TOFU.glob("*.json")))
        if d.get("run", {}).get("kind") == "published transductive"
    )
    rows = [
        "| graph (budget, TOFU variant chosen on valid) | TOFU MRR | RotatE MRR | TOFU Hits@10 | RotatE Hits@10 "
        "| TOFU MR | RotatE MR | TOFU training | TOFU paper MRR (quoted) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset in ("DB15K", "MKG-W", "MKG-Y"):
        variants: dict[str, dict[int, dict]] = {}
        for document in results_of(TOFU, kind="tofu", group="transductive", dataset=dataset):
            variants.setdefault(document["run"]["variant"], {})[document["run"]["seed"]] = document
        pairs = [[seeds[0], seeds[1]] for seeds in variants.values() if 0 in seeds and 1 in seeds]
        tofu = max(pairs, key=lambda docs: sum(d["training"]["best_valid_mrr"] for d in docs) / len(docs))
        rotate_runs = by_seed(results_of(TOFU, kind="rotate", group="transductive", dataset=dataset))
        rotate = [rotate_runs[s] for s in (0, 1)]

        minutes = rotate[0]["budget"]["minutes_per_model"]
        model = tofu[0]["config"]["model"]
        depth = f"GP {model['gp_layers']}" + (
            f", ≤ {model['gp_max_new_nodes']} new/layer" if model["gp_max_new_nodes"] else ""
        )
        epochs = ", ".join(f"{d['training']['epochs_done']:.2f}" for d in tofu)
        rows.append(
            f"| {dataset} ({minutes:g} min, {depth}) | {_mean_spread(_test_metric(tofu, 'mrr'))} "
            f"| {_mean_spread(_test_metric(rotate, 'mrr'))} "
            f"| {_mean_spread(_test_metric(tofu, 'hits@10'))} | {_mean_spread(_test_metric(rotate, 'hits@10'))} "
            f"| {_mean(_test_metric(tofu, 'mr'))} | {_mean(_test_metric(rotate, 'mr'))} | {epochs} epochs "
            f"| {paper[dataset]:.3f} |"
        )
    return rows


def steptime_block() -> list[str]:
    """Seconds per TOFU training step before and after the batched propagation and sampler."""
    rows = [
        "| code | device | graph | settings | sample s | forward s | backward + Adam s | s/step | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    entries = [
        (label, entry)
        for name in ("tofu_step_time.json", "tofu_step_time_gpu.json")
        for label, entry in json.loads((TOFU / name).read_text())["entries"].items()
    ]
    # the settings every entry shares (the benchmark's CPU settings) go unsaid; each row shows the rest
    shared = set.intersection(*(set(entry["settings"]) for _, entry in entries))
    for label, entry in entries:
        extra = [s for s in entry["settings"] if s not in shared]
        for graph, t in entry["graphs"].items():
            if "error" in t:
                rows.append(
                    f"| {label} | {entry.get('device', 'cpu')} | {graph} | {' '.join(extra)} | {t['error']} |||||"
                )
                continue
            rows.append(
                f"| {label} | {entry.get('device', 'cpu')} | {graph} | {' '.join(extra) or 'CPU settings'} "
                f"| {t['sample_s']:.3f} | {t['forward_s']:.3f} | {t['backward_and_step_s']:.3f} "
                f"| {t['seconds_per_step']:.3f} | {t['seconds_per_epoch']:,.0f} |"
            )
    return rows


def zeroshot_block() -> list[str]:
    """TOFU zero-shot on the 12 GraIL inductive test graphs beside PPR and the quoted ULTRA-3g and
    TRIX figures: one column per pre-training regime (the ``label`` of its
    ``inductive_zero_shot*.json`` files), its seeds averaged; the last row is the 12-graph mean
    (± half the range over seeds)."""
    documents = [json.loads(path.read_text()) for path in sorted(TOFU.glob("*.json"))]
    measured = [d for d in documents if "splits" in d and "average_mrr" in d]
    measured.sort(
        key=lambda d: (bool(d.get("label")), d.get("label") or "", (d.get("pretraining") or {}).get("seed") or 0)
    )
    regimes: dict[str, list[dict]] = {}
    for document in measured:
        regimes.setdefault(document.get("label") or "GP 2, MKG-Y + fb237_v1, 6 min", []).append(document)
    published = next(d["mrr"] for d in documents if d.get("run", {}).get("kind") == "published zero-shot")
    first = next(iter(regimes.values()))[0]
    splits = list(first["splits"])
    heads = [f"TOFU: {label} ({len(docs)} seed{'s' if len(docs) > 1 else ''})" for label, docs in regimes.items()]
    rows = [
        "| test graph (unseen) | test triples | PPR | "
        + " | ".join(heads + [f"{m} (quoted)" for m in published])
        + " |",
        "|---" * (3 + len(regimes) + len(published)) + "|",
    ]
    for split in splits:
        cells = [_mean_spread([d["splits"][split]["tofu"]["mrr"] for d in docs]) for docs in regimes.values()]
        cells += [f"{published[m][split]:.3f}" for m in published]
        ppr = first["splits"][split]["ppr"]
        rows.append(f"| {split} | {ppr['test_triples']:,} | {ppr['mrr']:.3f} | " + " | ".join(cells) + " |")
    means = [f"**{_mean_spread([d['average_mrr']['tofu'] for d in docs])}**" for docs in regimes.values()]
    means += [f"**{sum(published[m][s] for s in splits) / len(splits):.3f}**" for m in published]
    rows.append(f"| **average MRR** | | **{first['average_mrr']['ppr']:.3f}** | " + " | ".join(means) + " |")
    return rows


ABLATION_ROWS = {
    "full": "full TOFU (SE 3 / GP 4, unreached prior)",
    "no_se": "w/o structural encoder",
    "no_structural_tokens": "w/o structural tokens",
    "no_text": "w/o text tokens",
    "transe_only": "TransE messages only",
    "distmult_only": "DistMult messages only",
    "rotate_only": "RotatE messages only",
    "no_prior": "w/o unreached prior (beyond the paper)",
    "gp2": "GP 2 layers instead of 4 (beyond the paper)",
}


def ablation_block() -> list[str]:
    """TOFU ablations on MKG-Y (``benchmarks/tofu/tofu_ablation.sh SEED MKG-Y``), seeds 0 and 1 as
    mean ± half-range, and whether the difference to the full model exceeds both spreads."""
    rows = [
        "| variant (MKG-Y, ≤ 1,000 steps, seeds 0 and 1) | test MRR | Hits@10 | MR | best valid MRR | MRR vs full |",
        "|---|---|---|---|---|---|",
    ]
    docs = {
        name: [
            by_seed(results_of(TOFU, kind="tofu", group="ablation", dataset="MKG-Y", variant=name))[s] for s in (0, 1)
        ]
        for name in ABLATION_ROWS
    }

    full = _test_metric(docs["full"], "mrr")
    for name, label in ABLATION_ROWS.items():
        mrr = _test_metric(docs[name], "mrr")
        verdict = "" if name == "full" else _versus(mrr, full)
        valid = sum(d["training"]["best_valid_mrr"] for d in docs[name]) / 2
        rows.append(
            f"| {label} | {_mean_spread(mrr)} | {_mean_spread(_test_metric(docs[name], 'hits@10'))} "
            f"| {_mean(_test_metric(docs[name], 'mr'))} | {valid:.3f} | {verdict} |"
        )
    return rows


def elmm_budget_block() -> list[str]:
    """ELMM beside the PyKEEN baselines at one wall-clock budget, each on one thread
    (``benchmarks/elmm/elmm_vs_rotate.sh``; TransE where ``BASELINES`` named it): per dataset and budget,
    every seed present as mean ± half-range, MR as the mean, "—" for a baseline not run at that budget.
    "RotatE part" is the valid MRR of ELMM's own RotatE stage alone (its step-0 validation on the same
    1,000 valid triples), what the text was added to."""
    rows = [
        "| dataset (budget, seeds) | ELMM MRR | RotatE MRR | TransE MRR | ELMM Hits@10 | RotatE Hits@10 "
        "| TransE Hits@10 | ELMM MR | RotatE MR | TransE MR | ELMM valid: RotatE part → selected "
        "| ELMM's RotatE stage; its training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for first in results_of(ELMM, kind="elmm", group="budget", variant="prior", seed=0):
        dataset, budget = first["run"]["dataset"], first["run"]["minutes"]
        minutes = f"{budget}min"
        same = dict(group="budget", dataset=dataset, minutes=budget)
        mine = by_seed(results_of(ELMM, kind="elmm", variant="prior", **same))
        theirs, others = (by_seed(results_of(ELMM, kind=kind, **same)) for kind in ("rotate", "transe"))
        elmm, rotate, transe = [], [], []
        for seed in range(10):
            if seed in mine and seed in theirs:
                elmm.append(mine[seed])
                rotate.append(theirs[seed])
                if seed in others:
                    transe.append(others[seed])
        if not elmm:
            continue

        runs = (elmm, rotate, transe)
        start = [d["training"]["history"][0]["valid_mrr"] for d in elmm]
        best = [d["training"]["best_valid_mrr"] for d in elmm]
        kge = elmm[0]["config"]["prompt"]["structure_minutes"]
        train = sum(d["training"]["seconds"] for d in elmm) / len(elmm) / 60
        steps = ", ".join(str(d["training"]["optimizer_steps"]) for d in elmm)
        rows.append(
            f"| {dataset} ({minutes.removesuffix('min')} min, {len(elmm)} seed{'s' if len(elmm) > 1 else ''}) "
            f"| {_cells(runs, 'mrr', _mean_spread)} | {_cells(runs, 'hits@10', _mean_spread)} "
            f"| {_cells(runs, 'mr', _mean)} "
            f"| {_mean_spread(start)} → {_mean_spread(best)} "
            f"| {kge:g} min; {train:.1f} min, {steps} steps |"
        )
    return rows


ELMM_ABLATION_ROWS = {
    "full": "full: RotatE stage + tokens, RotatE score, row head, softmax, K = 3 lstsq",
    "no_pruning": "w/o pruning (K = 0)",
    "no_linear": "w/o Linear (K = 3 dropped, no map)",
    "no_init": "w/o Init (zero map, trained)",
    "theorem1_mean": "Theorem 1 init (`mean`, the paper's) instead of lstsq",
    "k6": "K = 6 (every attention dropped)",
    "no_score": "w/o RotatE score under the head",
    "no_row_head": "free head row per entity instead of RotatE rows",
    "bce": "the paper's BCE instead of softmax",
}


def elmm_ablation_block() -> list[str]:
    """Leave-one-out ELMM ablations at a short fixed budget (``benchmarks/elmm/elmm_budget_ablation.sh``):
    per dataset and budget, the variants with both seeds, as mean ± half-range, on the fixed test
    sample the script ranks; the difference to "full" and whether every seed agrees on its sign."""
    rows = [
        "| variant (dataset, budget, seeds 0 and 1) | test MRR | Hits@10 | MR | valid MRR: step 0 → selected "
        "| steps | MRR vs full |",
        "|---|---|---|---|---|---|---|",
    ]
    for first in results_of(ELMM, kind="elmm", group="ablation", variant="full", seed=0):
        dataset, budget = first["run"]["dataset"], first["run"]["minutes"]
        minutes = f"{budget}min"
        docs = {}
        for name in ELMM_ABLATION_ROWS:
            seeds = by_seed(
                results_of(ELMM, kind="elmm", group="ablation", dataset=dataset, minutes=budget, variant=name)
            )
            if 0 in seeds and 1 in seeds:
                docs[name] = [seeds[0], seeds[1]]
        if "full" not in docs:
            continue
        full = _test_metric(docs["full"], "mrr")
        for name, documents in docs.items():
            mrr = _test_metric(documents, "mrr")
            start = [d["training"]["history"][0]["valid_mrr"] for d in documents]
            best = [d["training"]["best_valid_mrr"] for d in documents]
            triples = documents[0]["evaluated"]["test_triples"]
            steps = ", ".join(str(d["training"]["optimizer_steps"]) for d in documents)
            rows.append(
                f"| {ELMM_ABLATION_ROWS[name]} ({dataset}, {minutes.removesuffix('min')} min, {triples} test triples) "
                f"| {_mean_spread(mrr)} | {_mean_spread(_test_metric(documents, 'hits@10'))} "
                f"| {_mean(_test_metric(documents, 'mr'))} "
                f"| {_mean_spread(start)} → {_mean_spread(best)} | {steps} "
                f"| {'' if name == 'full' else _versus(mrr, full)} |"
            )
    return rows


BLOCKS = {
    "decodersummary": decoder_summary_block,
    "decoder": decoder_block,
    "ranking": ranking_block,
    "decoderheal": heal_block,
    "exportbias": export_bias_block,
    "engineequal": engine_equal_block,
    "engine": engine_block,
    "core": core_block,
    "elmmbudget": elmm_budget_block,
    "elmmablation": elmm_ablation_block,
    "mkgc": mkgc_block,
    "tofu": tofu_block,
    "zeroshot": zeroshot_block,
    "steptime": steptime_block,
    "tofuablation": ablation_block,
}


def block_text(name: str) -> str:
    return "\n".join(BLOCKS[name]()) + "\n"


def rewrite(text: str) -> str:
    """``text`` with every generated block replaced by what the tool prints now."""
    for name in BLOCKS:
        start, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        while start in text:
            head, _, rest = text.partition(start)
            _, _, tail = rest.partition(end)
            text = head + "\x00" + tail
            text = text.replace("\x00", f"{start}\n{block_text(name)}{end}", 1)
            break
    return text


def main(argv: list[str]) -> None:
    if argv == ["--blocks"]:
        for name in BLOCKS:
            print(f"<!-- results:{name} -->\n{block_text(name)}<!-- /results:{name} -->")
        return
    if argv == ["--write"]:
        for doc in DOCS:
            doc.write_text(rewrite(doc.read_text(encoding="utf-8")), encoding="utf-8")
        return
    print("\n".join(metrics_rows([Path(p) for p in argv])))


if __name__ == "__main__":
    main(sys.argv[1:])
