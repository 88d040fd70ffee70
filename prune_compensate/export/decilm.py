"""Write (and read back) a ``DecoderPlan`` as a heterogeneous Nemotron-NAS ("DeciLM") folder.

The layout of NVIDIA's Puzzletron / Llama-3.1-Nemotron-51B checkpoints: a Llama ``config.json``
plus ``block_configs``, one per layer, whose ``attention`` is a normal attention
(``n_heads_in_group`` = heads per KV head), ``replace_with_linear`` (the weight
``model.layers.N.self_attn.linear_attn.weight``, ``(out, in)`` like ``nn.Linear``, applied to the
layer's ``input_layernorm`` output) or ``no_op`` (no attention and no ``input_layernorm``), and
whose ``ffn`` gives the MLP width as ``ffn_mult`` (``None``: no MLP). llama.cpp's converter
(``DeciModel``), NVIDIA's remote modelling code and MLX-LM read this layout; MLX-LM names the map
``self_attn.linear.weight``, vLLM builds ``no_op`` layers only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import PCError
from .plan import DecoderPlan, LayerPlan

ARCHITECTURE = "DeciLMForCausalLM"
MODEL_TYPE = "nemotron-nas"
LINEAR_KEY = "self_attn.linear_attn.weight"
WEIGHTS = "model.safetensors"


def intermediate_size(ffn_mult: float, hidden: int) -> int:
    """DeciLM's MLP width from ``ffn_mult``: ``2·mult·D/3`` rounded up to a multiple of 256."""
    size = int(2 * ffn_mult * hidden / 3)
    return size if size % 256 == 0 else size + 256 - size % 256


def ffn_mult(config: dict[str, Any]) -> float:
    """The ``ffn_mult`` that gives back the model's MLP width, refused when none does."""
    hidden, width = config["hidden_size"], config["intermediate_size"]
    mult = round(1.5 * width / hidden, 6)
    if intermediate_size(mult, hidden) != width:
        raise PCError(
            f"DeciLM stores the MLP width as ffn_mult, rounded up to a multiple of 256, and this model's "
            f"width {width} is not one",
            "use --format gguf, which stores the width itself",
        )
    return mult


def _block_config(layer: LayerPlan, config: dict[str, Any], mult: float) -> dict[str, Any]:
    group = config["num_attention_heads"] // config["num_key_value_heads"]
    attention = {
        "n_heads_in_group": group if layer.attention == "attention" else None,
        "no_op": layer.attention == "no_op",
        "replace_with_linear": layer.attention == "linear",
        "sparsify": None,
    }
    ffn = {"ffn_mult": mult if layer.ffn else None, "no_op": not layer.ffn, "replace_with_linear": False}
    ffn["sparsify"] = None
    return {"attention": attention, "ffn": ffn}


def decilm_config(plan: DecoderPlan, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` of the folder: the Llama fields plus one ``block_configs`` entry per layer."""
    config = plan.config
    mult = ffn_mult(config)
    rope = dict(config["rope_parameters"])
    scaling = None if rope.get("rope_type") == "default" else {k: v for k, v in rope.items() if k != "rope_theta"}
    fields = {k: v for k, v in config.items() if k != "rope_parameters"}
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        **fields,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rope_theta": rope.get("rope_theta", 10000.0),
        "rope_scaling": scaling,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "block_configs": [_block_config(layer, config, mult) for layer in plan.layers],
    }


def check_decilm(plan: DecoderPlan) -> None:
    """What DeciLM cannot hold that GGUF can, refused before the check: its MLP width as one
    ``ffn_mult``, and MLP biases (one ``mlp_bias`` for every projection of every layer, so the
    bias of a merged map has no place)."""
    ffn_mult(plan.config)
    merged = plan.merged_layers()
    if merged:
        raise PCError(
            f"layer {merged[0] - 1}'s MLP holds a merged map with a bias, and DeciLM has no per-layer MLP bias",
            "export with --format gguf (llama.cpp adds ffn_down.bias)",
        )


def decilm_tensors(plan: DecoderPlan) -> dict[str, torch.Tensor]:
    """The folder's weights: the plan's kept tensors plus each linear map as ``linear_attn``."""
    tensors = {name: tensor.contiguous() for name, tensor in plan.tensors.items()}
    dtype = plan.tensors["model.embed_tokens.weight"].dtype
    for i, layer in enumerate(plan.layers):
        if layer.attention == "linear":
            tensors[f"model.layers.{i}.{LINEAR_KEY}"] = layer.map_weight.T.to(dtype).contiguous()
    return tensors


def write_decilm(plan: DecoderPlan, folder: Path) -> None:
    """``config.json`` and ``model.safetensors`` into ``folder`` (the caller makes it atomic and
    adds the tokenizer)."""
    from safetensors.torch import save_file

    tensors = decilm_tensors(plan)
    config = decilm_config(plan, tensors["model.embed_tokens.weight"].dtype)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.cpu() for k, v in tensors.items()}, str(folder / WEIGHTS), metadata={"format": "pt"})


def read_decilm(folder: str | Path) -> DecoderPlan:
    """A DeciLM folder (ours or another tool's, one safetensors file) back as a ``DecoderPlan``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        blocks = config["block_configs"]
        tensors = load_file(str(folder / WEIGHTS))
    except (OSError, KeyError, ValueError) as err:
        raise PCError(f"{folder} is not a DeciLM folder ({err})", "point at a folder pc export wrote") from err
    mults = {block["ffn"].get("ffn_mult") for block in blocks} - {None}
    if len(mults) > 1:
        raise PCError(f"{folder} has MLPs of several widths (ffn_mult {sorted(mults)})", "read a uniform-MLP folder")
    layers = []
    for i, block in enumerate(blocks):
        attention = block["attention"]
        kind = "linear" if attention.get("replace_with_linear") else "no_op" if attention.get("no_op") else "attention"
        weight = tensors.pop(f"model.layers.{i}.{LINEAR_KEY}").T if kind == "linear" else None
        layers.append(LayerPlan(kind, ffn=block["ffn"].get("ffn_mult") is not None, map_weight=weight))
    rope = {**(config.get("rope_scaling") or {"rope_type": "default"}), "rope_theta": config.get("rope_theta", 10000.0)}
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    plan_config = {k: config[k] for k in keys}
    plan_config.update(
        num_key_value_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        rms_norm_eps=config["rms_norm_eps"],
        max_position_embeddings=config["max_position_embeddings"],
        rope_parameters=rope,
        tie_word_embeddings=config.get("tie_word_embeddings", False),
    )
    return DecoderPlan(plan_config, layers, tensors)
