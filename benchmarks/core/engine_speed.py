"""Speed and KV-cache memory of pruned SmolLM2 in llama.cpp, beside the dense model and the same
layers with no attention at all (``no_op``, the ceiling for removing them).

    python -m benchmarks.core.engine_speed --work /tmp/pc-export \\
        --models dense k8-linear k8-no_op k15-linear k15-no_op --repeats 3 \\
        --out benchmarks/core/results/engine_speed.json

Reads the q8_0 GGUF files ``export_llamacpp`` leaves in ``--work`` (all written by ``pc export``'s
own call, architecture ``deci``, the dense model too, so every file runs the same graph code). All
models are loaded at once with a context of the longest length, ``--threads`` threads, flash
attention on or off (``--flash-attn``); the text is the embedded evaluation prose, tokenised by
llama.cpp. Per repeat, in an order rotated and reversed between repeats:

* prefill tokens/s of the first 512 and 4,096 tokens (from an empty cache);
* decode tokens/s of ``--decode-tokens`` tokens, one at a time, after 4,096 tokens;

then each model's cache is filled to 16,384 tokens once (timed: prefill at 16k, one run), and per
repeat, rotated again, decode tokens/s after those 16,384 (the cache cut back to 16,384 each time).
Medians over repeats. KV bytes are llama.cpp's own report of the cache it allocated for the context
(``--kv-only``: only that, e.g. with ``--flash-attn off``, where llama.cpp pads every layer's value
cache to the widest layer, pruned layers included).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from prune_compensate.eval.data import read_texts

PROSE = Path(__file__).resolve().parents[2] / "prune_compensate" / "data" / "default_eval_prose.jsonl"
KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB.*K \(\w+\):\s*([\d.]+) MiB, V \(\w+\):\s*([\d.]+) MiB")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["dense", "k8-linear", "k8-no_op", "k15-linear", "k15-no_op"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--long", type=int, default=16384, help="0: no long-context part")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flash-attn", choices=["on", "off"], default="on")
    parser.add_argument("--kv-only", action="store_true", help="only load the models and record their KV cache")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def load(path: Path, args: argparse.Namespace) -> tuple[Any, dict[str, float]]:
    """The model, and llama.cpp's KV-cache report (MiB) for its context, read from its log."""
    from llama_cpp import Llama

    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        llm = Llama(
            str(path),
            n_ctx=max(args.long, *args.prefill) + args.decode_tokens + 16,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            flash_attn=args.flash_attn == "on",
            verbose=True,
        )
    match = KV_LINE.search(log.getvalue())
    kv = {"total_mib": float(match[1]), "k_mib": float(match[2]), "v_mib": float(match[3])} if match else {}
    llm.verbose = False
    return llm, kv


def timed(llm: Any, tokens: list[int], one_by_one: bool = False) -> float:
    """Tokens per second of evaluating ``tokens`` after what the cache holds."""
    started = time.perf_counter()
    if one_by_one:
        for token in tokens:
            llm.eval([token])
    else:
        llm.eval(tokens)
    return len(tokens) / (time.perf_counter() - started)


def orders(names: list[str], repeats: int) -> list[list[str]]:
    out = []
    for r in range(repeats):
        rotated = names[r % len(names) :] + names[: r % len(names)]
        out.append(rotated[::-1] if r % 2 else rotated)
    return out


def main() -> None:
    args = parse_args()
    models, kv = {}, {}
    for name in args.models:
        models[name], kv[name] = load(args.work / f"{name}-q8_0.gguf", args)
    if args.kv_only:
        write_result(args.out, {"engine": "llama-cpp-python, CPU", "kv_cache": kv}, args)
        return
    text = "\n\n".join(read_texts(str(PROSE)))
    tokens = models[args.models[0]].tokenize(text.encode(), add_bos=False)
    need = max(args.long, *args.prefill) + args.decode_tokens
    if len(tokens) < need:
        raise SystemExit(f"the prose has {len(tokens)} tokens, fewer than {need}")
    runs: dict[str, dict[str, list[float]]] = {name: {} for name in args.models}
    started = time.perf_counter()
    for order in orders(args.models, args.repeats):
        for name in order:
            llm = models[name]
            for length in args.prefill:
                llm.reset()
                runs[name].setdefault(f"prefill_{length}", []).append(timed(llm, tokens[:length]))
            context = max(args.prefill)
            runs[name].setdefault(f"decode_at_{context}", []).append(
                timed(llm, tokens[context : context + args.decode_tokens], one_by_one=True)
            )
        print(f"short runs: {time.perf_counter() - started:.0f} s", flush=True)
    for name in args.models if args.long else []:
        models[name].reset()
        runs[name][f"prefill_{args.long}"] = [timed(models[name], tokens[: args.long])]
        print(f"{name}: filled {args.long} tokens at {runs[name][f'prefill_{args.long}'][0]:.1f} tok/s", flush=True)
    for order in orders(args.models, args.repeats) if args.long else []:
        for name in order:
            llm = models[name]
            llm.n_tokens = args.long  # the next eval drops what the last decode added
            runs[name].setdefault(f"decode_at_{args.long}", []).append(
                timed(llm, tokens[args.long : args.long + args.decode_tokens], one_by_one=True)
            )
    medians = {name: {key: statistics.median(values) for key, values in runs[name].items()} for name in args.models}
    document = {
        "engine": "llama-cpp-python (llama.cpp vendored in it), CPU",
        "context": max(args.long, *args.prefill) + args.decode_tokens + 16,
        "tokens_per_second_median": medians,
        "runs": runs,
        "kv_cache": kv,
        "seconds": time.perf_counter() - started,
    }
    for name in args.models:
        print(name, {k: round(v, 1) for k, v in medians[name].items()}, kv[name], flush=True)
    write_result(args.out, document, args)


if __name__ == "__main__":
    main()
