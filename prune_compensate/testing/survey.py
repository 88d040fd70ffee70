"""Run every image-text-to-text family transformers registers through profile → prune → reload →
forward → generate, and say for each what happened (the family table of the docs).

Families with a hand-built tiny model in ``FAMILIES`` take the image path with their hand-set
processor. Every other registered family is built tiny from its own default config (sizes shrunk
by ``shrink_config``), first with its real processor class on an image
(``processor_build.build_with_processor``) and, where that fails, on text alone with MiniLM's
WordPiece tokenizer: that proves the decoder is found, pruned, saved, reloaded and generates, but
not that its processor's image inputs work. Each row records which path it took and why the image
path was not, so the table never claims more than was run.
"""

from __future__ import annotations

import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .processor_build import build_with_processor, family_processor, sub_configs
from .tiny_models import FAMILIES, Family, wordpiece

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

# Fields that every published checkpoint of the family carries but transformers' default config
# lacks, although the model's forward reads them: Qwen's Omni thinkers compute their multimodal
# rotary positions from ``vision_start_token_id`` (set in the thinker_config of Qwen2.5-Omni and
# Qwen3-Omni checkpoints), absent from ``Qwen*OmniThinkerConfig()``.
# Gemma 4's default config has no vision tower (``vision_config=None``); its checkpoints carry one,
# the default ``Gemma4VisionConfig`` shape (given as a dict, the config builds it, then it is shrunk).
CHECKPOINT_FIELDS: dict[str, dict[str, Any]] = {
    "qwen2_5_omni_thinker": {"vision_start_token_id": 151652},
    "qwen3_omni_moe_thinker": {"vision_start_token_id": 151652},
    "gemma4": {"vision_config": {}},
    "gemma4_unified": {"vision_config": {}},
}

# Vision tower sizes a tiny run needs smaller than the default config's: image tokens grow with the
# square of the tile side, and Mllama's 448 px tiles (1,024 patches each, read by every
# cross-attention layer) kept its tiny run at over 4 minutes. GOT-OCR 2's processor writes 256
# image tokens per image whatever its size, so its SAM tower must see 1,024 px (4,096 patches): it
# attends within windows only, no layer over all 4,096 patches (its survey run took over 120 s).
# Kosmos-2.5's processor class fixes 4,096 patches per image too (a class-level ``max_patches`` no
# saved file changes), and its tower's eager attention over them costs in proportion to its heads:
# one head (its survey run: 255 s with four).
VISION_SIZES: dict[str, dict[str, Any]] = {
    "mllama": {"image_size": 112},
    "got_ocr2": {"global_attn_indexes": []},
    "kosmos-2.5": {"num_attention_heads": 1},
}

# Model types registered for image-text-to-text with a text-only class, and the family whose class
# their published image-text checkpoints use, with them as its ``text_config``: Mistral 4 is
# registered with ``Mistral4ForCausalLM`` (no image argument); Mistral Small 4 checkpoints are
# ``Mistral3ForConditionalGeneration`` (a Pixtral tower and projector) around a Mistral 4 text model.
# The survey runs such a family's image path as that class's text model.
PUBLISHED_AS_TEXT_MODEL_OF: dict[str, str] = {"mistral4": "mistral3"}

# Model types whose hand-built tiny model (in FAMILIES) takes the image path.
HAND_BUILT: dict[str, str] = {
    "blip-2": "blip2",
    "instructblip": "instructblip",
    "kosmos-2": "kosmos2",
    "florence2": "florence2",
    "aya_vision": "aya_vision",
    **{family.name: family.name for family in FAMILIES},
}

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Marie Curie won the Nobel Prize in Physics and later in Chemistry.",
    "A knowledge graph stores facts as triples of head, relation and tail.",
    "The Amazon river flows through Peru, Colombia and Brazil to the Atlantic.",
]


def registered_families() -> dict[str, str]:
    """``model_type → model class name`` of every image-text-to-text family transformers registers
    (and of its older vision-to-sequence mapping, where this version still has one)."""
    from transformers.models.auto import modeling_auto

    names: dict[str, str] = {}
    for mapping in ("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"):
        names.update(getattr(modeling_auto, mapping, {}))
    return dict(sorted(names.items()))


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


@dataclass
class SurveyRow:
    """One family's outcome. ``status``: ``supported``; ``refused`` (our one-line error, the reason);
    ``not built`` (its default config does not build tiny offline); ``error`` (a traceback at
    ``stage``, raised in ``raised_in``: ``transformers`` — often a forward that needs image inputs
    the text path has not — or ``prune_compensate``, a bug of ours). ``path``: ``images`` (the
    family's real processor and an image) or ``text`` (WordPiece tokenizer, text prompts only);
    ``built``: ``by hand`` (``FAMILIES``) or ``from config`` (its default config, shrunk);
    ``images_reason``: why a family built from config took the text path, or, for one run on images
    as another family's text model (``PUBLISHED_AS_TEXT_MODEL_OF``), that class."""

    model_type: str
    model_class: str
    status: str
    path: str
    stage: str = ""
    reason: str = ""
    raised_in: str = ""
    decoder: str = ""
    seconds: float = 0.0
    built: str = ""
    images_reason: str = ""


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def alarm(*_: object) -> None:
        raise _Timeout(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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
    published checkpoints carry (``CHECKPOINT_FIELDS``): what both survey builders start from."""
    from transformers import AutoConfig

    config = shrink_config(AutoConfig.for_model(model_type, **CHECKPOINT_FIELDS.get(model_type, {})))
    for sub in sub_configs(config):
        if "vision" in type(sub).__name__.lower():
            for key, value in VISION_SIZES.get(model_type, {}).items():
                if hasattr(sub, key):  # a field of that tower, not of one beside it
                    setattr(sub, key, value)
    return config


def build_from_config(model_type: str, class_name: str, out: Path) -> Path:
    """A tiny random model of ``model_type`` from its default config, saved with a WordPiece tokenizer."""
    import transformers
    from transformers import AutoConfig

    config = tiny_config(model_type)
    tokenizer = wordpiece()
    fit_vocabulary(config, len(tokenizer))
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # A tiny config that does not survive its own save and reload (a validator refuses it, or a size
    # derived at init comes out different) is a failure to build, not a failure of loading.
    again = getattr(transformers, class_name)(AutoConfig.from_pretrained(out))
    built = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    changed = [name for name, t in again.state_dict().items() if built.get(name, tuple(t.shape)) != tuple(t.shape)]
    if changed:
        raise ValueError(f"the tiny config does not survive a save and reload: {changed[0]} changes shape")
    return out


def _flow(model_dir: Path, images: list[str], work: Path, step: Callable[[str], None]) -> str:
    from ..calibration.samples import CalibrationSample
    from ..checkpoint.reload import load_pruned
    from ..checkpoint.save import save_pruned
    from ..model.load import load_model
    from ..model.locate import find_decoder
    from ..pruning.config import PruneConfig
    from ..pruning.prune import prune_

    step("load")
    loaded = load_model(model_dir)
    step("locate")
    decoder = find_decoder(loaded.model).blocks_path
    samples = [CalibrationSample(f"{TEXTS[i % 4]} ({i})", images, f"s{i}") for i in range(8)]
    step("prune")
    result = prune_(loaded, PruneConfig(k=1, held_out=0.25, show_progress=False), samples)
    step("save")
    out = save_pruned(loaded.model, loaded.processor, work / "pruned", result.to_manifest())
    step("reload")
    reloaded = load_pruned(out)
    from ..calibration.forward import fit_encoder_to, move_inputs
    from ..calibration.samples import BatchEncoder

    encoder = BatchEncoder(reloaded.processor, 32)
    fit_encoder_to(encoder, reloaded.model, find_decoder(reloaded.model))
    inputs = move_inputs(encoder(samples[:2]), reloaded.model)
    step("forward")
    with torch.no_grad():
        reloaded.model(**inputs)
    step("generate")
    inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    reloaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    return decoder


def survey_family(model_type: str, class_name: str, images: list[str], time_limit: int = 120) -> SurveyRow:
    """Run one family through the flow and say what happened: a hand-built family on its images; any
    other first with its real processor class on an image (``build_with_processor``) and, where
    that fails, on text alone, the image path's failure kept in ``images_reason``. A family whose
    registered class takes no image runs on images as another family's text model where its published
    checkpoints are one (``PUBLISHED_AS_TEXT_MODEL_OF``)."""
    hand: Family | None = next((f for f in FAMILIES if f.name == HAND_BUILT.get(model_type)), None)
    start = time.perf_counter()
    if hand is not None:
        hand_images = images if hand.vision else []
        row = _attempt(model_type, class_name, "images", "by hand", hand.build, hand_images, time_limit)
    else:
        row = None
        reason = f"no processor class is registered for {model_type}"
        if not takes_images(class_name):  # registered as image-text-to-text, yet a text-only class
            reason = f"{class_name} takes no image input (its forward has no pixel, image or patch argument)"
            wrapper = PUBLISHED_AS_TEXT_MODEL_OF.get(model_type)
            if wrapper is not None:
                wrapper_class = registered_families()[wrapper]
                row = _attempt(
                    model_type,
                    class_name,
                    "images",
                    "from config",
                    lambda out: build_with_processor(wrapper, wrapper_class, out, text_model_type=model_type),
                    images[:1],
                    time_limit,
                )
                row.images_reason = f"run as the text model of {wrapper_class}, the class of its published checkpoints"
                reason += f"; as the text model of {wrapper_class}, at {row.stage}: {row.reason}"
        elif family_processor(model_type, class_name) is not None:
            row = _attempt(
                model_type,
                class_name,
                "images",
                "from config",
                _generic(model_type, class_name, True),
                images[:1],
                time_limit,
            )
            reason = f"at {row.stage}: {row.reason}"
        if row is None or row.status != "supported":
            row = _attempt(
                model_type, class_name, "text", "from config", _generic(model_type, class_name, False), [], time_limit
            )
            row.images_reason = reason
    row.seconds = round(time.perf_counter() - start, 1)
    return row


def takes_images(class_name: str) -> bool:
    """Whether the model class's forward has an image argument (``pixel_values``, ``image_*``,
    ``*patches``, ``vision_*``). Mistral 4 is registered for image-text-to-text with a causal-LM
    class that has none, so no processor could give it an image."""
    import inspect

    import transformers

    params = inspect.signature(getattr(transformers, class_name).forward).parameters
    return any(word in name for name in params for word in ("pixel", "image", "patches", "vision"))


def _generic(model_type: str, class_name: str, with_processor: bool) -> Callable[[Path], Path]:
    if with_processor:
        return lambda out: build_with_processor(model_type, class_name, out)
    return lambda out: build_from_config(model_type, class_name, out)


def _attempt(
    model_type: str,
    class_name: str,
    path: str,
    built: str,
    build: Callable[[Path], Path],
    images: list[str],
    time_limit: int,
) -> SurveyRow:
    """One try of the flow on a freshly built model; every outcome is a row."""
    from ..errors import PCError

    row = SurveyRow(model_type, class_name, "supported", path, built=built)
    stage = {"now": "build"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        try:
            with _time_limit(time_limit):
                model_dir = build(work / "model")
                row.decoder = _flow(model_dir, images, work, lambda s: stage.update(now=s))
        except PCError as err:
            row.status, row.reason = "refused", str(err).splitlines()[0]
        except Exception as err:  # noqa: BLE001 — every outcome is a row of the table
            row.reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:240]
            if stage["now"] == "build":
                row.status = "not built"
            else:
                row.status = "error"
                row.raised_in = _where(err)
        row.stage = "" if row.status == "supported" else stage["now"]
        row.reason = row.reason.replace(str(work / "model"), "MODEL").replace(str(work), "WORK")
    return row


def _where(err: BaseException) -> str:
    """Which package raised ``err``: the innermost frame that is ours or transformers'."""
    tb = err.__traceback__
    found = "other"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "prune_compensate" in name and "testing" not in name:
            found = "prune_compensate"
        elif "transformers" in name:
            found = "transformers"
        tb = tb.tb_next
    return found


def survey(images: list[str], only: list[str] | None = None, time_limit: int = 120) -> list[SurveyRow]:
    """Every registered family (or those named in ``only``), one row each."""
    rows = []
    for model_type, class_name in registered_families().items():
        if only and model_type not in only:
            continue
        rows.append(survey_family(model_type, class_name, images, time_limit))
    return rows


def rows_to_json(rows: list[SurveyRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
