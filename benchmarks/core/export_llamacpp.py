"""A pruned SmolLM2 served by llama.cpp: what leaving the map's bias out costs, and whether the
engine computes what ``load_pruned`` computes.

    python -m benchmarks.core.export_llamacpp --k 8 15 --n-samples 64 --held-out-tokens 12288 \\
        --work /tmp/pc-export --out benchmarks/core/results/export_llamacpp.json

For each K, the K top layers of the paper's cosine ranking (as ``pc prune`` takes them) are pruned
in fresh copies of the dense model, scored as in ``decoder_sweep`` (held-out PEP prose: perplexity
retention, KL(dense ‖ pruned), top-1 agreement):

* ``none``: attention removed, no map (``no_op`` in the engine);
* ``lstsq``: the default fit, ``x W + b``, in Python;
* ``lstsq, bias dropped``: the same maps with ``b`` left out (``pc export --drop-bias``);
* ``lstsq --no-bias``: ``W`` fitted without a bias (what ``pc export`` writes by default).

The ``--no-bias`` model is saved as a ``pc`` checkpoint, reloaded and exported with ``pc export``'s
own call (``export_model``) as an f32 GGUF, the tokenizer copied from the package's GGUF. llama.cpp
(llama-cpp-python) then runs the prompts (the opening words of held-out paragraphs): its logits on
each prompt against ``load_pruned``'s, llama.cpp's own tokenisation against transformers', and
greedy generation of ``--new-tokens`` tokens, prompt by prompt, in both. q8_0 files of the dense
model, each pruned model and its ``no_op`` twin are left in ``--work`` for ``engine_speed``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import write_result
from benchmarks.core.decoder_sweep import DATA, DenseReference, prompts, token_ids
from pc_testkit import smollm2
from prune_compensate import (
    CalibrationConfig,
    ExportConfig,
    PruneConfig,
    export_,
    export_model,
    load_model,
    load_pruned,
    prune_,
    read_samples,
    save_pruned,
)
from prune_compensate.pruning.profile import ProfileConfig, profile


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 15])
    parser.add_argument("--calib", default="embedded:prose")
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--calib-max-length", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--held-out-tokens", type=int, default=12288)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="where checkpoints and GGUF files go")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def greedy_one(model: torch.nn.Module, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation of one unpadded prompt (transformers)."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return out[0, len(ids) :].tolist()


def engine_run(llm: Any, ids: list[int], new_tokens: int) -> tuple[np.ndarray, list[int]]:
    """llama.cpp's logits on the prompt ``(T, vocab)`` and its greedy continuation."""
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    generated = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(token)
        llm.eval([token])
    return logits, generated


def compare_engine(gguf: Path, model: torch.nn.Module, tokenizer: Any, texts: list[str], args: Any) -> dict:
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=1024, logits_all=True, verbose=False, n_threads=args.threads, seed=0)
    diffs, scales, top1, same_generation, same_tokens = [], [], [], [], []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        same_tokens.append(llm.tokenize(text.encode(), add_bos=False, special=False) == ids)
        engine_logits, engine_tokens = engine_run(llm, ids, args.new_tokens)
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
        diffs.append(float(np.abs(engine_logits - logits).max()))
        scales.append(float(np.abs(logits).max()))
        top1.append(float((engine_logits.argmax(-1) == logits.argmax(-1)).mean()))
        same_generation.append(engine_tokens == greedy_one(model, ids, args.new_tokens))
    llm.close()
    return {
        "prompts": len(texts),
        "max_abs_logit_difference": max(diffs),
        "max_abs_logit": max(scales),
        "median_abs_logit_difference": float(np.median(diffs)),
        "top1_agreement_on_prompts": float(np.mean(top1)),
        "identical_greedy_generations": float(np.mean(same_generation)),
        "identical_tokenisation": float(np.mean(same_tokens)),
    }


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    dense = load_model(smollm2.float32_folder())
    tokenizer, vocab = dense.tokenizer, str(smollm2.gguf_path())
    started = time.perf_counter()
    held_out = DenseReference(
        dense.model, token_ids(tokenizer, DATA / "pep_prose.jsonl", args.held_out_tokens), args.max_length
    )
    texts = prompts(DATA / "pep_prose.jsonl", args.prompts)
    calibration = CalibrationConfig(args.calib, args.n_samples, args.calib_max_length)
    samples = read_samples(calibration)
    ranked = profile(dense, ProfileConfig(k=0, calibration=calibration), samples)
    document: dict[str, Any] = {"model": "SmolLM2-135M-Instruct", "ranking": ranked.ranking, "rows": [], "engine": {}}
    speed_files = {"dense": str(args.work / "dense-q8_0.gguf")}
    export_(dense, ExportConfig(speed_files["dense"], outtype="q8_0", vocab_from=vocab, overwrite=True))

    def pruned(layers: list[int], init: str, bias: bool) -> Any:
        copy_ = dataclasses.replace(dense, model=copy.deepcopy(dense.model))
        config = PruneConfig(layers=layers, init=init, bias=bias, compare=(), calibration=calibration)
        prune_(copy_, dataclasses.replace(config, show_progress=False), samples)
        return copy_

    def score(name: str, k: int, model: torch.nn.Module) -> None:
        row = {"k": k, "variant": name, "held_out": held_out.score(model)}
        document["rows"].append(row)
        h = row["held_out"]
        line = f"ppl-ret {h['perplexity_retention']:.3f} KL {h['kl']:.3f} top1 {h['top1_agreement']:.3f}"
        print(f"K={k:2d} {name:22s} {line}", flush=True)
        write_result(args.out, document, args)

    for k in args.k:
        layers = sorted(ranked.ranking[:k])
        none = pruned(layers, "none", True)
        score("none", k, none.model)
        with_bias = pruned(layers, "lstsq", True)
        score("lstsq", k, with_bias.model)
        for module in with_bias.model.modules():
            if getattr(module, "replaces_attention", False) and getattr(module, "bias", None) is not None:
                module.bias.data.zero_()
        score("lstsq, bias dropped", k, with_bias.model)
        del with_bias
        no_bias = pruned(layers, "lstsq", False)
        score("lstsq --no-bias", k, no_bias.model)
        checkpoint = args.work / f"k{k}-lstsq-nobias"
        save_pruned(no_bias.model, no_bias.processor, checkpoint, {"k": k, "init": "lstsq"}, overwrite=True)
        f32 = args.work / f"k{k}-lstsq-nobias-f32.gguf"
        result = export_model(str(checkpoint), ExportConfig(f32, outtype="f32", vocab_from=vocab, overwrite=True))
        reloaded = load_pruned(checkpoint).model
        engine = compare_engine(f32, reloaded, tokenizer, texts, args)
        record = {**result.to_dict(), "out": f32.name, "vocab": Path(vocab).name}  # file names, not this run's paths
        document["engine"][str(k)] = {"layers": layers, "export": record, **engine}
        print(f"K={k} llama.cpp vs load_pruned: {engine}", flush=True)
        for name, model in (("linear", no_bias), ("no_op", none)):
            speed_files[f"k{k}-{name}"] = str(args.work / f"k{k}-{name}-q8_0.gguf")
            export_(model, ExportConfig(speed_files[f"k{k}-{name}"], outtype="q8_0", vocab_from=vocab, overwrite=True))
        write_result(args.out, document, args)
    document["speed_files"] = {name: Path(path).name for name, path in speed_files.items()}
    document["seconds"] = time.perf_counter() - started
    write_result(args.out, document, args)


if __name__ == "__main__":
    main()
