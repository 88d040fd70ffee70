"""The exported computation, written out in plain torch, and the check that it is the model's.

``reference_logits`` runs a ``DecoderPlan`` the way the DeciLM modelling code and llama.cpp's
``deci`` graph do: pre-norm blocks, RMSNorm, RoPE (rotate-half layout, transformers' own), grouped
-query causal attention, SwiGLU; a ``linear`` layer adds ``RMSNorm(x) W``, a ``no_op`` layer adds
nothing. ``check_plan`` compares it with the pruned model's own logits on a few tokens before
anything is written: a family that passes the structural checks of ``plan`` but computes
something else (a scaled embedding, a ``1 + w`` norm) is refused instead of exported wrong.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import PCError
from .plan import SCOPE, DecoderPlan

CHECK_TOKENS = 12
# max |Δ logit| allowed, relative to the largest |logit|: float32 runs agree to ~1e-6, half
# precision to ~1e-2; a wrong computation misses by the order of the logits themselves
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-3}
HALF_TOLERANCE = 5e-2


def rope_factors(config: dict) -> torch.Tensor | None:
    """Per-frequency divisors of Llama 3's RoPE (``(head_dim / 2,)``; llama.cpp's ``rope_freqs``),
    or ``None`` for plain RoPE. Same formula as transformers' and llama.cpp's converter."""
    rope = config["rope_parameters"]
    if rope["rope_type"] != "llama3":
        return None
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    base = rope.get("rope_theta", 10000.0)
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freqs
    smooth = (old_context / wavelen - low) / (high - low)
    divisor = 1 / ((1 - smooth) / factor + smooth)
    divisor = torch.where(wavelen < old_context / high, torch.ones_like(freqs), divisor)
    return torch.where(wavelen > old_context / low, torch.full_like(freqs, factor), divisor).float()


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _attention(x: torch.Tensor, w: dict[str, torch.Tensor], config: dict, angles: torch.Tensor) -> torch.Tensor:
    """Causal grouped-query attention of ``x`` ``(T, D)`` → ``(T, D)``."""
    steps, heads, kv_heads = x.shape[0], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    q = (x @ w["q_proj"].float().T).view(steps, heads, head_dim)
    k = (x @ w["k_proj"].float().T).view(steps, kv_heads, head_dim)
    v = (x @ w["v_proj"].float().T).view(steps, kv_heads, head_dim)
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
    scores = scores.masked_fill(torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
    out = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(steps, heads * head_dim)
    return out @ w["o_proj"].float().T


def reference_logits(plan: DecoderPlan, ids: torch.Tensor, with_bias: bool = False) -> torch.Tensor:
    """Logits ``(T, vocab)`` of token ids ``(T,)`` under ``plan``, in float32. ``with_bias`` adds
    each map's bias (the pruned model's computation; no engine format adds it)."""
    config, t = plan.config, plan.tensors
    device = t["model.embed_tokens.weight"].device
    ids = ids.to(device)
    eps, heads = config["rms_norm_eps"], config["num_attention_heads"]
    head_dim = config["hidden_size"] // heads
    inv_freq = 1.0 / (
        config["rope_parameters"].get("rope_theta", 10000.0) ** (torch.arange(0, head_dim, 2, device=device) / head_dim)
    )
    factors = rope_factors(config)
    if factors is not None:
        inv_freq = inv_freq / factors.to(device)
    angles = torch.arange(len(ids), device=device)[:, None].float() * inv_freq[None, :].float()
    angles = torch.cat([angles, angles], dim=-1)
    h = t["model.embed_tokens.weight"][ids].float()
    for i, layer in enumerate(plan.layers):
        prefix = f"model.layers.{i}."
        if layer.attention == "attention":
            parts = {n: t[f"{prefix}self_attn.{n}.weight"] for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
            h = h + _attention(_rms(h, t[prefix + "input_layernorm.weight"], eps), parts, config, angles)
        elif layer.attention == "linear":
            update = _rms(h, t[prefix + "input_layernorm.weight"], eps) @ layer.map_weight.float()
            if with_bias and layer.map_bias is not None:
                update = update + layer.map_bias.float()
            h = h + update
        if layer.ffn:
            x = _rms(h, t[prefix + "post_attention_layernorm.weight"], eps)
            gate = nn.functional.silu(x @ t[prefix + "mlp.gate_proj.weight"].float().T)
            h = (
                h
                + (gate * (x @ t[prefix + "mlp.up_proj.weight"].float().T))
                @ t[prefix + "mlp.down_proj.weight"].float().T
            )
            if prefix + "mlp.down_proj.bias" in t:  # a merged map
                h = h + t[prefix + "mlp.down_proj.bias"].float()
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return (_rms(h, t["model.norm.weight"], eps) @ head.float().T).cpu()


def check_plan(plan: DecoderPlan, model: nn.Module) -> float:
    """Refuse ``plan`` unless it computes the model's logits on a few tokens; returns the
    largest |Δ logit| relative to the largest |logit|."""
    vocab = plan.config["vocab_size"]
    ids = (torch.arange(CHECK_TOKENS) * 7919 + 11) % vocab
    device = next(model.parameters()).device
    with torch.no_grad():
        got = model(input_ids=ids[None].to(device), use_cache=False).logits[0].float().cpu()
        want = reference_logits(plan, ids, with_bias=True)
    relative = float((got - want).abs().max() / want.abs().max().clamp_min(1e-6))
    dtype = next(model.parameters()).dtype
    if relative > TOLERANCE.get(dtype, HALF_TOLERANCE):
        raise PCError(
            f"{SCOPE}; this model passes the layout checks but computes something else (logits differ by "
            f"{relative:.2g} of their range from the Llama computation the formats run)",
            "keep it in the pc checkpoint",
        )
    return relative
