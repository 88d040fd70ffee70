"""Write a ``DecoderPlan`` as a GGUF file of llama.cpp's architecture ``deci`` (with the ``gguf``
package that llama.cpp itself publishes; no converter script).

Per layer, llama.cpp's ``deci`` graph reads the attention's shape from two arrays:
``head_count[i] > 0, head_count_kv[i] > 0`` is normal attention, ``head_count[i] > 0,
head_count_kv[i] == 0`` the linear replacement (``x + attn_output · attn_norm(x)``, no KV cache),
``head_count[i] == 0`` no attention, and ``feed_forward_length[i] == 0`` no MLP. A ``no_op``
layer carries no ``attn_norm`` (llama.cpp counts tensors and refuses extra ones). Query and key
rows are permuted from transformers' rotate-half RoPE layout to llama.cpp's interleaved one, as
llama.cpp's converter does. Norms stay float32 in every ``outtype``, as in the converter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import PCError
from .plan import DecoderPlan
from .verify import rope_factors
from .vocab import NO_VOCAB, Vocab, require_gguf

OUTTYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32


def _permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q/k projection ``(heads·head_dim, D)`` from rotate-half to interleaved pairs."""
    out_dim = weight.shape[0]
    return weight.reshape(heads, 2, out_dim // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _add(writer, name: str, tensor: torch.Tensor, outtype: str) -> None:  # noqa: ANN001 (gguf.GGUFWriter, lazily imported)
    import gguf

    data = tensor.detach().float().cpu().numpy()
    if data.ndim == 1 or outtype == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif outtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        quant = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _tensors(plan: DecoderPlan) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, tensor) in llama.cpp's names and orientation."""
    t, config = plan.tensors, plan.config
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    out = [("token_embd.weight", t["model.embed_tokens.weight"]), ("output_norm.weight", t["model.norm.weight"])]
    if "lm_head.weight" in t:
        out.append(("output.weight", t["lm_head.weight"]))
    factors = rope_factors(config)
    if factors is not None:
        out.append(("rope_freqs.weight", factors))
    for i, layer in enumerate(plan.layers):
        hf, blk = f"model.layers.{i}.", f"blk.{i}."
        if layer.attention != "no_op":
            out.append((blk + "attn_norm.weight", t[hf + "input_layernorm.weight"]))
        if layer.attention == "linear":
            out.append((blk + "attn_output.weight", layer.map_weight.T))  # (out, in): nn.Linear's layout
        elif layer.attention == "attention":
            out += [
                (blk + "attn_q.weight", _permute(t[hf + "self_attn.q_proj.weight"], heads)),
                (blk + "attn_k.weight", _permute(t[hf + "self_attn.k_proj.weight"], kv_heads)),
                (blk + "attn_v.weight", t[hf + "self_attn.v_proj.weight"]),
                (blk + "attn_output.weight", t[hf + "self_attn.o_proj.weight"]),
            ]
        if layer.ffn:
            out += [
                (blk + "ffn_norm.weight", t[hf + "post_attention_layernorm.weight"]),
                (blk + "ffn_gate.weight", t[hf + "mlp.gate_proj.weight"]),
                (blk + "ffn_up.weight", t[hf + "mlp.up_proj.weight"]),
                (blk + "ffn_down.weight", t[hf + "mlp.down_proj.weight"]),
            ]
            if hf + "mlp.down_proj.bias" in t:  # a merged map (llama.cpp adds it when present)
                out.append((blk + "ffn_down.bias", t[hf + "mlp.down_proj.bias"]))
    return out


def check_gguf(plan: DecoderPlan, vocab: Vocab) -> None:
    """What a GGUF of ``plan`` could not hold or llama.cpp could not load, refused in one line."""
    require_gguf()
    config = plan.config
    if vocab.size is not None and vocab.size != config["vocab_size"]:
        raise PCError(
            f"the tokenizer in {vocab.source} has {vocab.size} tokens and the model {config['vocab_size']}",
            "pass --vocab-from a GGUF of the same base model",
        )
    if plan.layers[0].attention == "no_op":  # tests/test_export_llamacpp.py shows llama.cpp refusing it
        raise PCError(
            "layer 0 has no attention, and llama.cpp cannot load a deci model whose layer 0 has none",
            "prune with --layers that keep layer 0's attention (or fit it a map: --init lstsq)",
        )


def write_gguf(plan: DecoderPlan, vocab: Vocab, path: Path, outtype: str = "f16", name: str = "pruned") -> None:
    """Write ``plan`` to ``path`` (the caller checks it with ``check_gguf`` and makes it atomic)."""
    import gguf

    config = plan.config
    heads, kv_heads, hidden = config["num_attention_heads"], config["num_key_value_heads"], config["hidden_size"]
    writer = gguf.GGUFWriter(str(path), "deci")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(len(plan.layers))
    writer.add_feed_forward_length([config["intermediate_size"] if layer.ffn else 0 for layer in plan.layers])
    writer.add_head_count([0 if layer.attention == "no_op" else heads for layer in plan.layers])
    writer.add_head_count_kv([kv_heads if layer.attention == "attention" else 0 for layer in plan.layers])
    writer.add_rope_freq_base(float(config["rope_parameters"].get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_key_length(hidden // heads)
    writer.add_value_length(hidden // heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(config["vocab_size"])
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_type.get(outtype, gguf.LlamaFileType.MOSTLY_Q8_0))
    if vocab.source == NO_VOCAB:
        writer.add_tokenizer_model("none")
    for key, value, kind, element in vocab.fields:
        writer.add_key_value(key, value, kind, sub_type=element)
    for tensor_name, tensor in _tensors(plan):
        _add(writer, tensor_name, tensor, outtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
