"""Prefill / decode latency and KV-cache memory: original vs pruned, on a random-weight Llama of a
realistic size (weights do not matter for speed), in one run.

    python -m benchmarks.core.prune_speed                 # Qwen2-1.5B-sized decoder, K = L/4 and L/2 (slow: ~15 min)
    python -m benchmarks.core.prune_speed --quick         # a small decoder, to check the script

For each K it times three models built from the same weights: the original; ``pruned`` (the K
attention cores replaced by ``LinearCompensation``: a D×D map plus bias, what ``pc prune`` ships);
``deleted`` (the same cores replaced by a module that returns zeros: attention deleted outright, the
ceiling of this design). It also reports the FLOP-count ratio original/pruned for each setting.
Results go to ``benchmarks/core/results/prune_speed[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import write_result
from prune_compensate import LinearCompensation, find_decoder
from prune_compensate.pruning.swap import CoreSwap

SIZES = {
    # Qwen2-1.5B's language model shape (vocab cut to 32k: the LM head is not what pruning changes)
    "qwen2-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=32000,
    ),
    "quick": dict(
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=1000,
    ),
}


def build(size: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def replacements(model: torch.nn.Module, layers: list[int], kind: str) -> dict[int, LinearCompensation]:
    """``linear``: a D×D map + bias (what ``pc prune`` ships); ``none``: attention deleted outright."""
    d = model.config.hidden_size
    return {i: LinearCompensation(d, d, kind=kind, bias=kind != "none", output_arity=2, layer_idx=i) for i in layers}


def time_prefill(model: torch.nn.Module, tokens: int, repeats: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (1, tokens))
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def time_decode(model: torch.nn.Module, context: int, new_tokens: int) -> tuple[float, int]:
    """Seconds per generated token after a ``context``-token prompt, and the cache's bytes."""
    ids = torch.randint(0, model.config.vocab_size, (1, context))
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)  # warm-up step
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1:].argmax(-1)
        seconds = (time.perf_counter() - start) / new_tokens
    kv_bytes = sum(
        layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
        for layer in cache.layers
        if getattr(layer, "keys", None) is not None
    )
    return seconds, kv_bytes


def flops_per_token(config: object, tokens: int, pruned: int) -> tuple[float, float]:
    """Multiply-adds ×2 per token of the decoder stack at sequence length ``tokens`` (prefill,
    causal: average context tokens/2), original vs with ``pruned`` attentions replaced by D×D."""
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = d // config.num_attention_heads * config.num_key_value_heads
    attention = 2 * (d * d * 2 + d * kv * 2) + 2 * 2 * d * tokens / 2
    mlp = 2 * 3 * d * f
    compensation = 2 * d * d
    original = layers * (attention + mlp)
    return original, original - pruned * (attention - compensation)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = "quick" if args.quick else "qwen2-1.5b"
    model = build(size)
    n_layers = model.config.num_hidden_layers
    prefill_lengths = (128, 512) if args.quick else (512, 2048)
    context, new_tokens = 256, 32
    base = {f"prefill_{t}": time_prefill(model, t, args.repeats) for t in prefill_lengths}
    base["decode_s_per_token"], base["kv_bytes"] = time_decode(model, context, new_tokens)
    print("original", base, flush=True)
    results = {"original": base, "settings": {}}
    for k in (n_layers // 4, n_layers // 2):
        layers = list(range(n_layers - k, n_layers))
        setting = {}
        swap = CoreSwap(model, find_decoder(model), layers)
        for kind, name in (("linear", "pruned"), ("none", "deleted")):
            swap.install(replacements(model, layers, kind))
            row = {f"prefill_{t}": time_prefill(model, t, args.repeats) for t in prefill_lengths}
            row["decode_s_per_token"], row["kv_bytes"] = time_decode(model, context, new_tokens)
            swap.restore()
            setting[name] = row
            print(k, name, row, flush=True)
        speedups = {}
        for metric in [f"prefill_{t}" for t in prefill_lengths] + ["decode_s_per_token"]:
            pruned_speedup = base[metric] / setting["pruned"][metric]
            deleted_speedup = base[metric] / setting["deleted"][metric]
            tokens = context if metric.startswith("decode") else int(metric.split("_")[1])
            original_flops, pruned_flops = flops_per_token(model.config, tokens, k)
            speedups[metric] = {
                "pruned": pruned_speedup,
                "deleted": deleted_speedup,
                "pruned_share_of_deleted": pruned_speedup / deleted_speedup,
                "flop_ratio": original_flops / pruned_flops,
            }
        setting["speedup"] = speedups
        setting["kv_ratio"] = setting["pruned"]["kv_bytes"] / base["kv_bytes"]
        results["settings"][f"k={k}"] = setting
    results["meta"] = {
        "command": "python -m benchmarks.core.prune_speed" + (" --quick" if args.quick else ""),
        "model": {"size": size, **SIZES[size]},
        "dtype": "float32",
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor()}",
        "torch": torch.__version__,
        "decode_context": context,
        "decode_new_tokens": new_tokens,
    }
    out = Path(__file__).resolve().parent / "results" / f"prune_speed{'_quick' if args.quick else ''}.json"
    write_result(out, results, args)
    print(json.dumps(results["settings"], indent=1))


if __name__ == "__main__":
    main()
