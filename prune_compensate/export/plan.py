"""What a pruned Llama-family decoder becomes in an engine's layout, read from the model by structure.

An engine format (NVIDIA's heterogeneous Nemotron-NAS / "DeciLM" checkpoints, llama.cpp's GGUF
architecture ``deci``) describes each decoder layer by what its attention is:

* ``attention``: the original self-attention, with its own number of KV heads;
* ``linear``: ``replace_with_linear``, the residual gets ``RMSNorm(x) · Wᵀ`` (one ``D × D`` map on
  the layer's input norm), which is exactly a ``LinearCompensation`` fitted on the attention input;
* ``no_op``: the attention is gone (``pc prune --init none``, or ``--init merged``, whose map is
  folded into the MLP below: that layer's down-projection then has a bias, llama.cpp's optional
  ``ffn_down.bias``);

and each layer keeps its SwiGLU MLP, except a block pruned whole with ``--init none``, which is the
identity (``ffn: false``, llama.cpp's dummy layer). ``plan_decoder`` reads that per-layer list off
a loaded model, and refuses, in one line and before anything is written, what the formats cannot
hold; ``verify.check_plan`` then runs the plan against the model itself, so a family that looks
like Llama but computes something else is refused too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import PCError
from ..pruning.compensation import BlockCompensation, LinearCompensation, MergedProjection

ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PARTS = ("gate_proj", "up_proj", "down_proj")
BLOCK_PARTS = {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"}
ROPE_TYPES = ("default", "llama3")
SCOPE = "pc export writes Llama-family causal LMs (Llama, Mistral, SmolLM and the like)"


@dataclass
class LayerPlan:
    """One decoder layer. ``map_weight`` ``(D, D)`` in ``x @ W`` orientation (``linear`` only);
    ``map_bias`` ``(D,)`` is kept only so the check can compare with the model: no format adds it."""

    attention: str  # "attention" | "linear" | "no_op"
    ffn: bool = True
    map_weight: torch.Tensor | None = None
    map_bias: torch.Tensor | None = None


@dataclass
class DecoderPlan:
    """A pruned decoder as the formats see it. ``tensors``: the kept weights under their
    transformers Llama names (``model.layers.3.mlp.up_proj.weight``), ``(out, in)`` like
    ``nn.Linear``; ``config``: the Llama hyper-parameters the formats need."""

    config: dict[str, Any]
    layers: list[LayerPlan]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def count(self, attention: str) -> int:
        return sum(layer.attention == attention for layer in self.layers)

    def merged_layers(self) -> list[int]:
        """The layers whose map is merged into the MLP below (``--init merged``): those whose
        previous layer's down-projection carries a bias."""
        return [i + 1 for i in range(len(self.layers)) if f"model.layers.{i}.mlp.down_proj.bias" in self.tensors]


def _llama_config(config: Any) -> dict[str, Any]:
    """The hyper-parameters of a Llama-family text config, refused when the formats lack a field
    for one (attention or MLP biases, sliding windows, a head size other than D / heads)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads, kv_heads = text.num_attention_heads, getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    hidden = text.hidden_size
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    rope = dict(getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {})
    if "rope_theta" not in rope and getattr(text, "rope_theta", None) is not None:
        rope["rope_theta"] = text.rope_theta
    rope.setdefault("rope_type", rope.get("type", "default"))
    window = (getattr(text, "sliding_window", None) or 0) if getattr(text, "use_sliding_window", True) else 0
    problems = [
        (getattr(text, "hidden_act", "silu") != "silu", f"its MLP activation is {getattr(text, 'hidden_act', None)}"),
        (getattr(text, "attention_bias", False), "its attention projections have biases"),
        (getattr(text, "mlp_bias", False), "its MLP projections have biases"),
        (head_dim * heads != hidden, f"its head size {head_dim} is not hidden / heads"),
        (heads % kv_heads != 0, "its KV heads do not divide its heads"),
        (rope["rope_type"] not in ROPE_TYPES, f"its RoPE type is {rope['rope_type']}"),
        (0 < window < text.max_position_embeddings, f"it attends within a sliding window of {window} tokens"),
    ]
    for refused, why in problems:
        if refused:
            raise PCError(f"{SCOPE}, and this model cannot be written as one: {why}", "keep it in the pc checkpoint")
    return {
        "vocab_size": text.vocab_size,
        "hidden_size": hidden,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": text.rms_norm_eps,
        "max_position_embeddings": text.max_position_embeddings,
        "rope_parameters": rope,
        "bos_token_id": getattr(text, "bos_token_id", None),
        "eos_token_id": getattr(text, "eos_token_id", None),
    }


def _parts(module: nn.Module, names: tuple[str, ...], where: str) -> dict[str, torch.Tensor]:
    found = {}
    for name in names:
        part = getattr(module, name, None)
        if not isinstance(part, nn.Linear) or part.bias is not None:
            raise PCError(f"{SCOPE}; {where} has no bias-free nn.Linear {name!r}", "keep it in the pc checkpoint")
        found[name] = part.weight.detach()
    return found


def _norm_weight(block: nn.Module, name: str, where: str) -> torch.Tensor:
    norm = getattr(block, name, None)
    weight = getattr(norm, "weight", None)
    extra = [n for n, _ in norm.named_parameters() if n != "weight"] if norm is not None else []
    if weight is None or extra:
        raise PCError(f"{SCOPE}; {where}.{name} is not an RMSNorm with one weight", "keep it in the pc checkpoint")
    return weight.detach()


def _layer(block: nn.Module, index: int, drop_bias: bool, tensors: dict[str, torch.Tensor]) -> LayerPlan:
    """One block's plan, its kept weights added to ``tensors``."""
    where = f"model.layers.{index}"
    if isinstance(block, BlockCompensation):
        if block.kind != "none":
            raise PCError(
                f"layer {index} is a whole block replaced by a linear map, which no engine format holds",
                "prune with --unit attention, or with --unit block --init none (an identity block)",
            )
        return LayerPlan("no_op", ffn=False)
    extra = {name for name, _ in block.named_children()} - BLOCK_PARTS
    if extra:
        raise PCError(f"{SCOPE}; {where} also has {sorted(extra)}", "keep it in the pc checkpoint")
    core = block.self_attn
    plan = LayerPlan("attention")
    if isinstance(core, LinearCompensation):
        if core.kind == "none":
            plan = LayerPlan("no_op")
        else:
            bias = core.bias.detach() if core.bias is not None else None
            if bias is not None and bool(bias.any()) and not drop_bias:
                raise PCError(
                    f"the map of layer {index} has a bias, which no engine format adds (llama.cpp loads "
                    "attn_output.bias on this path but never adds it)",
                    "prune with --no-bias (W fitted without one: as good on SmolLM2), or export with "
                    "--drop-bias (a fitted map without its bias can be far worse than no map)",
                )
            plan = LayerPlan("linear", map_weight=core.dense_weight().detach(), map_bias=bias)
    else:
        for name, weight in _parts(core, ATTENTION_PARTS, f"{where}.self_attn").items():
            tensors[f"{where}.self_attn.{name}.weight"] = weight
        if any(p.ndim for n, p in core.named_parameters() if n.split(".")[0] not in ATTENTION_PARTS):
            raise PCError(f"{SCOPE}; {where}.self_attn has more than q/k/v/o", "keep it in the pc checkpoint")
    if plan.attention != "no_op":
        tensors[f"{where}.input_layernorm.weight"] = _norm_weight(block, "input_layernorm", where)
    down = getattr(block.mlp, "down_proj", None)
    parts = MLP_PARTS[:2] if isinstance(down, MergedProjection) else MLP_PARTS
    for name, weight in _parts(block.mlp, parts, f"{where}.mlp").items():
        tensors[f"{where}.mlp.{name}.weight"] = weight
    if isinstance(down, MergedProjection):  # the map of layer index + 1, merged (x @ W orientation)
        tensors[f"{where}.mlp.down_proj.weight"] = down.weight.detach().T
        assert down.bias is not None
        tensors[f"{where}.mlp.down_proj.bias"] = down.bias.detach()
    tensors[f"{where}.post_attention_layernorm.weight"] = _norm_weight(block, "post_attention_layernorm", where)
    return plan


def plan_decoder(model: nn.Module, drop_bias: bool = False) -> DecoderPlan:
    """The engine view of a pruned causal LM whose blocks sit at ``model.layers`` (transformers'
    Llama layout), refused in one line where a format cannot hold it (see module doc)."""
    inner = getattr(model, "model", None)
    blocks = getattr(inner, "layers", None)
    head = getattr(model, "lm_head", None)
    if not isinstance(blocks, nn.ModuleList) or not isinstance(head, nn.Linear):
        raise PCError(
            f"{SCOPE}: a causal LM with its blocks at model.layers and an lm_head; "
            f"{type(model).__name__} is not laid out that way (a VLM's text decoder is not exported yet)",
            "keep it in the pc checkpoint",
        )
    config = _llama_config(model.config)
    tensors: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": inner.embed_tokens.weight.detach(),
        "model.norm.weight": _norm_weight(inner, "norm", "model"),
    }
    config["tie_word_embeddings"] = head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
    if not config["tie_word_embeddings"]:
        tensors["lm_head.weight"] = head.weight.detach()
    layers = [_layer(block, i, drop_bias, tensors) for i, block in enumerate(blocks)]
    if all(layer.attention != "attention" for layer in layers):
        raise PCError("every attention layer of this model is pruned", "keep at least one attention layer")
    return DecoderPlan(config, layers, tensors)
