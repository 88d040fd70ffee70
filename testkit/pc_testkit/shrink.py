"""A family's default config shrunk to a tiny one: every size field set small wherever it occurs,
per-layer lists and indices kept consistent, widths that follow another config followed, the
vocabulary fitted to the survey tokenizer, and the fields its published checkpoints carry.

What both survey builders (``survey.build_from_config`` and ``processor_build.build_with_processor``)
start from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .families import overrides

# Config fields set to tiny values wherever they occur (top level and every sub-config).
TINY_SIZES: dict[str, int] = {
    **dict.fromkeys(["hidden_size", "d_model", "n_embd", "embed_dim", "dim", "width", "text_hidden_size"], 64),
    **dict.fromkeys(["out_hidden_size", "projection_dim", "vision_output_dim"], 64),
    **dict.fromkeys(["intermediate_size", "ffn_dim", "d_ff", "n_inner", "encoder_ffn_dim", "decoder_ffn_dim"], 128),
    "mlp_dim": 128,  # SAM towers' MLP width (3,072 in their default configs)
    "latent_query_num": 64,  # Kosmos-2.5's resampler queries, one image placeholder each (2,048 by default)
    **dict.fromkeys(["num_hidden_layers", "num_layers", "n_layer", "n_layers", "depth", "num_global_layers"], 2),
    **dict.fromkeys(["decoder_layers", "encoder_layers"], 2),
    **dict.fromkeys(["num_attention_heads", "n_head", "n_heads", "num_heads"], 4),
    **dict.fromkeys(["encoder_attention_heads", "decoder_attention_heads"], 4),
    "num_key_value_heads": 2,
    "encoder_hidden_size": 64,
    **dict.fromkeys(["head_dim", "d_kv"], 16),  # d_kv: T5-style stacks (Pix2Struct, UDOP)
    **dict.fromkeys(["moe_intermediate_size", "shared_expert_intermediate_size"], 32),
    **dict.fromkeys(["n_routed_experts", "num_experts", "num_local_experts"], 4),
    "num_experts_per_tok": 2,
    **dict.fromkeys(["kv_lora_rank", "q_lora_rank"], 16),
    **dict.fromkeys(["qk_rope_head_dim", "qk_nope_head_dim"], 8),
    "v_head_dim": 16,
}


def sub_configs(config: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """``config`` and every sub-config, once each."""
    from transformers import PretrainedConfig

    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    yield config
    for value in list(vars(config).values()):
        if isinstance(value, PretrainedConfig):
            yield from sub_configs(value, seen)


def _mrope_section(config: Any, rope: dict) -> list[int]:
    """Multimodal rotary sections (time, height, width) summing to half the rotary width of a
    16-wide head: Ernie 4.5-VL stacks the first two, so they are equal; GLM-4V rotates half the head
    (``partial_rotary_factor``), so its sections sum to 4, not 8."""
    factor = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
    total = int(TINY_SIZES["head_dim"] * factor) // 2
    side = total // 3 + (total % 3 == 2)
    return [side, side, total - 2 * side]


def _shrink_per_layer_lists(config: Any, layers: int | None) -> None:
    """Per-layer lists (``layer_types``, ``mlp_layer_types``, ``no_rope_layers``, ``kv_source_layers``,
    …) at one shared length with two layers of each kind, so a hybrid stack keeps two attention
    layers (one may be pruned) and the config's own validators (one entry per layer) pass."""
    lists = {
        key: value
        for key, value in vars(config).items()
        if isinstance(value, list)
        and value
        and (
            key.endswith("layer_types")
            or key == "layers_block_type"
            or (layers is not None and layers > 2 and len(value) == layers)
        )
    }
    if not lists:
        return
    # Layer-index lists (``kv_source_layers`` [0, 1, …]) are not kinds: counted as such they kept
    # Mistral Large 4 at 144 layers, and its tiny run at 4 minutes.
    kinds = [len(dict.fromkeys(map(str, v))) for v in lists.values() if v != list(range(len(v)))]
    length = TINY_SIZES["num_hidden_layers"] * max(kinds or [1])
    for key, value in lists.items():
        if value == list(range(len(value))):  # layer indices (a layer that reads its own KV)
            setattr(config, key, list(range(length)))
        else:
            kinds = list(dict.fromkeys(value))
            setattr(config, key, [kinds[i % len(kinds)] for i in range(length)])
    if hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = length


def _shrink_stage_lists(config: Any, original: dict[str, Any]) -> None:
    """A hierarchical tower's per-stage tuples (``depths``, ``hidden_sizes``, ``patch_sizes``: Muse
    Spark's audio encoder, four stages counted by ``num_hidden_layers``) cut to its first tiny-count
    stages, each stage ``depths`` deep at most the tiny depth: the config checks one entry per stage."""
    stages, depths = original.get("num_hidden_layers"), original.get("depths")
    if not isinstance(stages, int) or not isinstance(depths, (list, tuple)) or len(depths) != stages:
        return
    keep = min(stages, TINY_SIZES["num_hidden_layers"])
    for key, value in original.items():
        if isinstance(value, (list, tuple)) and len(value) == stages and all(type(v) is int for v in value):
            setattr(config, key, type(value)(value[:keep]))
    config.depths = type(depths)(min(d, TINY_SIZES["num_hidden_layers"]) for d in depths[:keep])
    config.num_hidden_layers = keep


def _clamp_layer_indices(config: Any) -> None:
    """Layer indices into a stack of the full depth (ViP-LLaVA's ``vision_feature_layer`` (-2, -5,
    -8, -11, 6), Mllama's ``intermediate_layers_indices`` [3, 7, 15, 23, 30], the SAM tower's
    ``global_attn_indexes`` (2, 5, 8, 11)) clamped into the tiny stack (``-layers … layers - 1``,
    valid whether or not the embeddings count as hidden state 0), keeping their number: the
    projector's input width counts them."""
    layers = TINY_SIZES["num_hidden_layers"]

    def clamp(index: int) -> int:
        return max(-layers, min(index, layers - 1))

    for key in (
        "vision_feature_layer",
        "vision_feature_layers",
        "intermediate_layers_indices",
        "global_attn_indexes",
    ):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            setattr(config, key, clamp(value))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            setattr(config, key, type(value)(clamp(v) for v in value))


def shrink_config(config: Any) -> Any:
    """Set every size field in ``config`` and its sub-configs to ``TINY_SIZES`` (in place; 0 means
    "none" and stays: GLM-5's sparse-attention layers have no rotary part), keeping
    the relations the model's code relies on: per-layer lists one entry per layer, key/value heads
    equal to query heads where they were (multi-head latent attention), an MLA head width equal to
    its rotary part where it was, rotary sections that fit the tiny head, and a ``*_hidden_size``
    field outside ``TINY_SIZES`` that equalled a sub-config's ``hidden_size`` still equal to it."""
    overrides = {id(sub): _take_per_layer_overrides(sub) for sub in sub_configs(config)}
    widths = [(sub, getattr(sub, "hidden_size", None)) for sub in sub_configs(config)]
    originals = {id(sub): dict(vars(sub)) for sub in sub_configs(config)}
    for sub in sub_configs(config):
        _shrink_one(sub)
        _put_per_layer_overrides(sub, overrides[id(sub)], originals[id(sub)])
    for sub in sub_configs(config):
        _follow_widths(sub, widths, originals[id(sub)])
    return config


def _take_per_layer_overrides(config: Any) -> dict[int, dict[str, Any]]:
    """A heterogeneous config's per-layer overrides (``per_layer_config``), removed from it so that
    its shared fields can be read and shrunk: Gemma 4's full-attention layers 5, 11, … 29 have
    ``head_dim`` 512 (256 elsewhere); dots3's text layers their own head counts and ranks."""
    spec = vars(config).get("_heterogeneity_spec")
    if spec is None:
        return {}
    found = {int(i): dict(fields) for i, fields in spec.per_layer_overrides.items()}
    config.per_layer_config = None
    return found


def _put_per_layer_overrides(config: Any, overrides: dict[int, dict[str, Any]], original: dict[str, Any]) -> None:
    """The overrides back on the tiny stack: each on the tiny layers of its layer's type (``layer_types``;
    else on the layer at the same relative depth), a size scaled as its shared field was (Gemma 4's
    full-attention ``head_dim`` 512 → 32 beside a shared 16), so the tiny stack stays heterogeneous."""
    if not overrides:
        return
    old_types, new_types = original.get("layer_types"), getattr(config, "layer_types", None)
    old_layers, new_layers = original.get("num_hidden_layers") or 1, config.num_hidden_layers
    placed: dict[int, dict[str, Any]] = {}
    for index, fields in sorted(overrides.items()):
        scaled = {}
        for key, value in fields.items():
            before, after = original.get(key), vars(config).get(key)
            sizes = all(type(v) is int and v > 0 for v in (value, before, after))
            scaled[key] = max(1, value * after // before) if sizes else value
            rope = original.get("qk_rope_head_dim")
            if key == "qk_nope_head_dim" and isinstance(rope, int) and value + rope == original.get("head_dim"):
                scaled[key] = config.head_dim - config.qk_rope_head_dim  # dots3's sliding layers: 192 + 64 = 256
        if old_types and new_types and index < len(old_types):
            targets = [i for i, kind in enumerate(new_types) if kind == old_types[index]]
        else:
            targets = [min(index * new_layers // old_layers, new_layers - 1)]
        for target in targets:
            placed.setdefault(target, {}).update(scaled)
    config.per_layer_config = placed


# Width fields that may name another config's hidden size (dots3's vision adapter: ``adapter_in_dim``
# 1536, its tower's width, and ``adapter_out_dim`` 5120, the text model's; its config checks both).
WIDTH_SUFFIXES = ("hidden_size", "_in_dim", "_out_dim", "_input_size")


def _follow_widths(config: Any, widths: list[tuple[Any, Any]], original: dict[str, Any]) -> None:
    """Widths that named a config's hidden size (another's, or its own: dots3's ``adapter_in_dim``)
    follow it when it shrinks: a projector width outside ``TINY_SIZES`` equal to it (Kimi K2.5's
    ``projection_hidden_size`` 1152, its MoonViT tower's width), and any ``*hidden_size`` equal to
    it times a tower's merged patches (Muse Glimmer's ``out_hidden_size`` 6144 = 1536 × 2², the
    width after its pixel shuffle; MiniMax-M3-VL's ``merged_hidden_size`` 24,576 = its text width
    6144 × its tower's 2²)."""
    merges = {getattr(s, "merge_size", None) or getattr(s, "spatial_merge_size", None) for s, _ in widths}
    merges = {m for m in merges if isinstance(m, int) and m > 1}
    for key, value in list(vars(config).items()):
        is_ints = isinstance(value, (list, tuple)) and value and all(type(v) is int for v in value)
        if key.endswith("channels") and is_ints:
            _follow_channels(config, key, value, widths)
            continue
        if not key.endswith(WIDTH_SUFFIXES) or not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            continue
        if key == "patch_embed_hidden_size":  # a flattened patch's pixels (16 × 16 × 3), set by the image processor
            continue
        before = original.get(key, value)
        for sub, width in widths:
            if not isinstance(width, int):
                continue
            if key not in TINY_SIZES and before == width:
                setattr(config, key, sub.hidden_size)
                break
            merge = next((m for m in sorted(merges) if before == width * m**2), None)
            if merge is not None:  # the text width times the tower's merge (MiniMax-M3-VL's merged_hidden_size)
                setattr(config, key, sub.hidden_size * merge**2)
                break


def _follow_channels(config: Any, key: str, channels: Any, widths: list[tuple[Any, Any]]) -> None:
    """A list of channel widths that ends at another config's hidden size scales with it:
    Unlimited-OCR's SAM tower downsamples to ``downsample_channels`` [512, 1024], the width of the
    CLIP tower whose features it is concatenated with, so the tiny one is (32, 64) for a 64-wide tower."""
    for sub, width in widths:
        if sub is not config and isinstance(width, int) and channels[-1] == width and sub.hidden_size != width:
            setattr(config, key, type(channels)(max(1, c * sub.hidden_size // width) for c in channels))
            return


def _shrink_one(config: Any) -> None:
    """``shrink_config`` for the fields of one (sub-)config."""
    if isinstance(getattr(config, "architecture", None), str) and hasattr(config, "model_args"):
        return  # a timm tower (FastVLM, Gemma 3n): timm's architecture sets its sizes, not these fields
    original = dict(vars(config))
    for key, value in list(vars(config).items()):
        if key in TINY_SIZES and isinstance(value, int) and not isinstance(value, bool) and value > 0:
            setattr(config, key, TINY_SIZES[key])
        elif key == "rope_parameters" and isinstance(value, dict) and "vision" not in type(config).__name__.lower():
            setattr(config, key, {**value, "mrope_section": _mrope_section(config, value)})
    _shrink_stage_lists(config, original)
    _shrink_per_layer_lists(config, original.get("num_hidden_layers"))
    _clamp_layer_indices(config)
    if original.get("num_key_value_heads") is not None and original.get("num_key_value_heads") == original.get(
        "num_attention_heads"
    ):
        config.num_key_value_heads = config.num_attention_heads
    if original.get("qk_rope_head_dim") is not None and original.get("head_dim") == original["qk_rope_head_dim"]:
        config.head_dim = config.qk_rope_head_dim
    if isinstance(original.get("cross_attention_layers"), list) and original["cross_attention_layers"]:
        # Mllama's text stack interleaves cross-attention layers (the only way the image reaches the
        # text): keep the tiny self-attention layers and add one cross-attention layer after them.
        config.num_hidden_layers = TINY_SIZES["num_hidden_layers"] + 1
        config.cross_attention_layers = [TINY_SIZES["num_hidden_layers"]]
    indices = original.get("intermediate_layers_indices")
    if indices and original.get("vision_output_dim") == original.get("hidden_size", 0) * (len(indices) + 1):
        config.vision_output_dim = config.hidden_size * (len(indices) + 1)  # Mllama: last + intermediate states
    if original.get("num_kv_shared_layers") and isinstance(getattr(config, "num_hidden_layers", None), int):
        # Gemma 3n's last layers reuse the caches of earlier layers of their type; the tiny stack
        # (each kind twice, in turn) shares its second half, whose kinds its first half computes.
        config.num_kv_shared_layers = config.num_hidden_layers // 2
    ratio, hidden = original.get("mlp_ratio"), original.get("hidden_size")
    if (
        isinstance(ratio, (int, float))
        and isinstance(hidden, int)
        and original.get("intermediate_size") == int(hidden * ratio)
    ):
        config.intermediate_size = int(config.hidden_size * ratio)  # Step 3.7's tower derives it so at every load
    # A window the default config leaves unset: where a layer slides, and in Step 3.7, whose text
    # model builds a sliding-window mask on every forward whether or not a layer slides (its
    # checkpoints set one; ``num_sliding_attention_heads`` marks its sliding-layer settings).
    slides = "sliding_attention" in str(getattr(config, "layer_types", "")) or "num_sliding_attention_heads" in vars(
        config
    )
    if getattr(config, "sliding_window", 0) is None and slides:
        config.sliding_window = 8


# Config fields tied to the size of the vocabulary in ways ``fit_vocabulary`` does not follow (Gemma
# 3n's per-layer input vocabulary, offsets into a shared one): a config with any of them keeps its
# published vocabulary, only grown to the tokenizer's.
VOCABULARY_COUPLED = ("vocab_size_per_layer_input", "vocab_offset", "unpadded_vocab_size", "ngram_vocab_size_base")


def _names_token(field: str) -> bool:
    return field.endswith(("_token_id", "_token_ids", "_token_index", "_id"))


def fit_vocabulary(config: Any, size: int) -> None:
    """Size every ``vocab_size`` in ``config`` and its sub-configs to the survey tokenizer's ``size``
    (in place). A default config with a small vocabulary (Qwen3-Omni's thinker: 3,584) would index
    past its embedding on the tokenizer's ids; a published one (Qwen's 151,936, Gemma's 262,208)
    made a tiny model's logits, ``(tokens, vocab)``, the bulk of its run: LLaVA-OneVision spent
    110 of its 120 s of pruning in the held-out error's softmaxes over 151,936 entries.

    Token ids the config names past ``size`` (a Qwen ``eos_token_id`` of 151,645) move to fresh
    ids right after the tokenizer's, one per distinct id: inside the embedding, and still never
    written by the tokenizer, as before (``build_with_processor`` calls this after it has set the ids
    its processor writes, all inside ``size``). A config with a ``VOCABULARY_COUPLED`` field is only
    grown."""
    subs = list(sub_configs(config))
    shrink = not any(field in vars(sub) for sub in subs for field in VOCABULARY_COUPLED)
    named = sorted(
        {
            value
            for sub in subs
            for field, values in vars(sub).items()
            if _names_token(field)
            for value in (values if isinstance(values, (list, tuple)) else [values])
            if isinstance(value, int) and not isinstance(value, bool) and value >= size
        }
    )
    fresh = {old: size + i for i, old in enumerate(named)} if shrink else {}
    target = size + len(fresh)
    for sub in subs:
        value = getattr(sub, "vocab_size", None)
        if "vocab_size" in vars(sub) and isinstance(value, int) and 0 < value and (value < target or shrink):
            sub.vocab_size = target
        for field, values in list(vars(sub).items()):
            if not _names_token(field) or not fresh:
                continue
            if isinstance(values, int) and not isinstance(values, bool):
                setattr(sub, field, fresh.get(values, values))
            elif isinstance(values, (list, tuple)) and all(isinstance(v, int) for v in values):
                setattr(sub, field, type(values)(fresh.get(v, v) for v in values))


def tiny_config(model_type: str) -> Any:
    """The default config of ``model_type``, shrunk (``shrink_config``), with the fields its
    published checkpoints carry (its ``families.FamilyOverrides``): what both survey builders start from."""
    from transformers import AutoConfig

    config = shrink_config(AutoConfig.for_model(model_type, **overrides(model_type).checkpoint_fields))
    for sub in sub_configs(config):
        if "vision" in type(sub).__name__.lower():
            for key, value in overrides(model_type).vision_sizes.items():
                if hasattr(sub, key):  # a field of that tower, not of one beside it
                    setattr(sub, key, value)
    return config
