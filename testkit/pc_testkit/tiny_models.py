"""Tiny random-initialised models of every supported family, each saved with a working processor.

Every builder returns a directory that ``pc profile DIR`` (and ``load_model``) take exactly as a
user's checkpoint. Sizes: hidden 64, 2 text layers, 2 vision layers, MiniLM's WordPiece vocabulary
(30,522 + the family's special tokens). Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HIDDEN = 64
LAYERS = 2
HEADS = 4

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ IMAGE }}"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
)


def minilm_vocab() -> Path:
    from prune_compensate.model.load import default_model_path

    return default_model_path() / "vocab.txt"


def wordpiece(
    extra: dict[str, str] | None = None, tokens: list[str] | None = None, words: list[str] | None = None
) -> Any:
    """MiniLM's real WordPiece vocabulary (30,522 tokens) as a decoder tokenizer: it prepends the
    BOS token ``[CLS]`` and appends nothing, as Llama-style tokenizers do (BERT's ``[SEP]`` at the
    end would make lm-eval's context/continuation split wrong), plus the family's special tokens
    (``extra`` become named attributes such as ``tokenizer.image_token``).

    ``words``: tokens a processor looks up as plain vocabulary entries, not added tokens (Fuyu's
    ``|SPEAKER|``). Such a processor expects a sentencepiece tokenizer: its words are pieces of the
    text, and a ``▁`` piece starts every text, which Fuyu's processor strips from each image's
    placeholder ids. With ``words``, the tokenizer does the same: the words and ``▁`` join the
    vocabulary, a ``▁`` is prepended to every text, the words are never split, and case is kept."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import BertTokenizerFast, PreTrainedTokenizerFast

    extra = extra or {}
    backend = BertTokenizerFast(vocab=str(minilm_vocab()))._tokenizer
    if words:
        import re

        from tokenizers.models import WordPiece

        words = ["▁", *words]
        vocab = backend.get_vocab()
        vocab.update({w: len(vocab) + i for i, w in enumerate(w for w in words if w not in vocab)})
        backend.model = WordPiece(vocab, unk_token="[UNK]")
        backend.normalizer = normalizers.Sequence(
            [normalizers.BertNormalizer(lowercase=False), normalizers.Prepend("▁")]
        )
        pieces = "|".join(re.escape(w) for w in words) + r"|\w+|[^\w\s]"
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pieces), behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
        )
    backend.post_processor = TemplateProcessing(single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", 101)])
    # decoders take no token_type_ids; passed at construction so the saved tokenizer keeps it
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        extra_special_tokens=extra,
        model_input_names=["input_ids", "attention_mask"],
        padding_side="left",  # batched generation continues every row from its last real token
    )
    new = list(dict.fromkeys(list(extra.values()) + (tokens or [])))
    tok.add_special_tokens({"additional_special_tokens": new})
    return tok


def text_config(model_type: str, vocab: int, **extra: Any) -> dict[str, Any]:
    base = dict(
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
    )
    base.update(extra)
    return base


def _save(model: torch.nn.Module, processor: Any, out: Path) -> Path:
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _init(model_class: Any, config: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_class(config).eval()


def build_llama(out: Path, layers: int = LAYERS, **extra: Any) -> Path:
    """A random tiny Llama; ``extra`` overrides config fields (``intermediate_size``, ...)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = wordpiece()
    config = LlamaConfig(**text_config("llama", len(tok), num_hidden_layers=layers, **extra))
    return _save(_init(LlamaForCausalLM, config), tok, out)


def tiny_vision(image_size: int = 28, patch: int = 14, **extra: Any) -> dict[str, Any]:
    """The vision tower every hand-built family shares: width 32, 2 layers, 2 heads, one 28 px
    image in 2 × 2 patches; ``extra`` adds the family's own keys (``model_type``, ``head_dim``)."""
    return dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        **extra,
    )


def clip_vision(image_size: int = 28, patch: int = 14) -> dict[str, Any]:
    return tiny_vision(image_size, patch, model_type="clip_vision_model", projection_dim=32)


def build_llava(out: Path) -> Path:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = wordpiece({"image_token": "<image>"})
    config = LlavaConfig(
        text_config=text_config("llama", len(tok)),
        vision_config=clip_vision(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        images,
        tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template("<image>"),
    )
    return _save(_init(LlavaForConditionalGeneration, config), processor, out)


def template(image: str) -> str:
    return CHAT_TEMPLATE.replace("{{ IMAGE }}", image)


def build_llava_next(out: Path) -> Path:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = wordpiece({"image_token": "<image>"})
    config = LlavaNextConfig(
        text_config=text_config("llama", len(tok)),
        vision_config=clip_vision(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=[[28, 28]],
        vision_feature_layer=-1,
    )
    images = LlavaNextImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=[[28, 28]]
    )
    processor = LlavaNextProcessor(
        images,
        tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template("<image>"),
    )
    return _save(_init(LlavaNextForConditionalGeneration, config), processor, out)


QWEN_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_video() -> Any:
    from transformers import Qwen2VLVideoProcessor

    return Qwen2VLVideoProcessor()


def _qwen_ids(tok: Any) -> dict[str, int]:
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in QWEN_TOKENS.items()}
    return dict(
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
    )


def _qwen_text(model_type: str, tok: Any, **extra: Any) -> dict[str, Any]:
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    return text_config(model_type, len(tok), rope_parameters=rope, **extra)


def build_qwen2_vl(out: Path) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor

    tok = wordpiece(QWEN_TOKENS)
    config = Qwen2VLConfig(
        text_config=_qwen_text("qwen2_vl_text", tok),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=14),
        **_qwen_ids(tok),
    )
    images = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2)
    processor = Qwen2VLProcessor(images, tok, video_processor=_qwen_video(), chat_template=template(QWEN_IMAGE))
    return _save(_init(Qwen2VLForConditionalGeneration, config), processor, out)


def build_qwen2_5_vl(out: Path) -> Path:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    tok = wordpiece(QWEN_TOKENS)
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text("qwen2_5_vl_text", tok),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            out_hidden_size=HIDDEN,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        **_qwen_ids(tok),
    )
    images = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2)
    processor = Qwen2_5_VLProcessor(images, tok, video_processor=_qwen_video(), chat_template=template(QWEN_IMAGE))
    return _save(_init(Qwen2_5_VLForConditionalGeneration, config), processor, out)


def build_qwen3_vl(out: Path) -> Path:
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tok = wordpiece(QWEN_TOKENS)
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True, "rope_theta": 10000.0}
    config = Qwen3VLConfig(
        text_config=text_config("qwen3_vl_text", len(tok), rope_parameters=rope),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            out_hidden_size=HIDDEN,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            num_position_embeddings=16,
            deepstack_visual_indexes=[1],
        ),
        **_qwen_ids(tok),
    )
    images = Qwen2VLImageProcessor(min_pixels=64 * 64, max_pixels=64 * 64, patch_size=16, merge_size=2)
    processor = Qwen3VLProcessor(images, tok, video_processor=_qwen_video(), chat_template=template(QWEN_IMAGE))
    return _save(_init(Qwen3VLForConditionalGeneration, config), processor, out)


def siglip_vision(image_size: int = 28, patch: int = 14) -> dict[str, Any]:
    return tiny_vision(image_size, patch, model_type="siglip_vision_model")


IDEFICS_TOKENS = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}


def _idefics(out: Path, smol: bool) -> Path:
    import transformers as tf

    prefix = "SmolVLM" if smol else "Idefics3"
    tok = wordpiece(IDEFICS_TOKENS)
    config = getattr(tf, f"{prefix}Config")(
        text_config=text_config("llama", len(tok)),
        vision_config=tiny_vision(),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    images = getattr(tf, f"{prefix}ImageProcessor")(
        size={"longest_edge": 28}, max_image_size={"longest_edge": 28}, do_image_splitting=False
    )
    kwargs: dict[str, Any] = {}
    if smol:
        kwargs["video_processor"] = tf.SmolVLMVideoProcessor()
    processor = getattr(tf, f"{prefix}Processor")(
        image_processor=images, tokenizer=tok, image_seq_len=1, chat_template=template("<image>"), **kwargs
    )
    model_class = getattr(tf, f"{prefix}ForConditionalGeneration")
    return _save(_init(model_class, config), processor, out)


def build_idefics3(out: Path) -> Path:
    return _idefics(out, smol=False)


def build_smolvlm(out: Path) -> Path:
    return _idefics(out, smol=True)


def build_paligemma(out: Path) -> Path:
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tok = wordpiece({"image_token": "<image>"})
    config = PaliGemmaConfig(
        text_config=text_config("gemma", len(tok)),
        vision_config=dict(siglip_vision(), projection_dim=HIDDEN),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        projection_dim=HIDDEN,
    )
    images = SiglipImageProcessor(size={"height": 28, "width": 28})
    images.image_seq_length = 4
    processor = PaliGemmaProcessor(images, tok)
    return _save(_init(PaliGemmaForConditionalGeneration, config), processor, out)


GEMMA3_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


def build_gemma3(out: Path) -> Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    tok = wordpiece(GEMMA3_TOKENS)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in GEMMA3_TOKENS.items()}
    config = Gemma3Config(
        text_config=text_config("gemma3_text", len(tok), sliding_window=8, query_pre_attn_scalar=16),
        vision_config=siglip_vision(),
        mm_tokens_per_image=4,
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
        image_token_index=ids["image_token"],
    )
    images = Gemma3ImageProcessor(size={"height": 28, "width": 28})
    processor = Gemma3Processor(images, tok, image_seq_length=4, chat_template=template("<start_of_image>"))
    return _save(_init(Gemma3ForConditionalGeneration, config), processor, out)


def build_mistral3(out: Path) -> Path:
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor

    tokens = {"image_token": "[IMG]", "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}
    tok = wordpiece(tokens)
    config = Mistral3Config(
        text_config=text_config("mistral", len(tok)),
        vision_config=tiny_vision(model_type="pixtral", head_dim=16),
        spatial_merge_size=2,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        vision_feature_layer=-1,
    )
    images = PixtralImageProcessor(size={"longest_edge": 28}, patch_size=14)
    processor = PixtralProcessor(
        images, tok, patch_size=14, spatial_merge_size=2, chat_template=template("[IMG]"), **tokens
    )
    return _save(_init(Mistral3ForConditionalGeneration, config), processor, out)


def build_internvl(out: Path) -> Path:
    import transformers as tf

    tokens = {
        "context_image_token": "<IMG_CONTEXT>",
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "video_token": "<video>",
    }
    tok = wordpiece(tokens)
    config = tf.InternVLConfig(
        text_config=text_config("qwen2", len(tok)),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[28, 28],
            patch_size=[14, 14],
        ),
        downsample_ratio=0.5,
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
    )
    images = tf.GotOcr2ImageProcessor(size={"height": 28, "width": 28}, crop_to_patches=False)
    processor = tf.InternVLProcessor(
        images,
        tok,
        video_processor=tf.InternVLVideoProcessor(),
        image_seq_length=1,
        chat_template=template("<IMG_CONTEXT>"),
    )
    return _save(_init(tf.InternVLForConditionalGeneration, config), processor, out)


def build_llama4(out: Path) -> Path:
    import transformers as tf

    tokens = {
        "image_token": "<|image|>",
        "patch_token": "<|patch|>",
        "start_of_img_token": "<|image_start|>",
        "end_of_img_token": "<|image_end|>",
        "tile_token": "<|tile_x_separator|>",
        "tile_global_token": "<|tile_y_separator|>",
    }
    tok = wordpiece(tokens)
    text = text_config(
        "llama4_text",
        len(tok),
        intermediate_size_mlp=2 * HIDDEN,
        num_local_experts=1,
        interleave_moe_layer_step=1,
        attention_chunk_size=64,
        no_rope_layers=[1, 1],
    )
    config = tf.Llama4Config(
        text_config=text,
        # pixel shuffle (ratio 0.5) turns 32 channels into 128 = intermediate_size, the adapter's input
        vision_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            vision_output_dim=32,
            projector_input_dim=32,
            projector_output_dim=32,
            pixel_shuffle_ratio=0.5,
        ),
        image_token_index=tok.convert_tokens_to_ids("<|patch|>"),
    )
    images = tf.Llama4ImageProcessor(size={"height": 28, "width": 28}, max_patches=1)
    processor = tf.Llama4Processor(
        images, tok, patch_size=14, pixel_shuffle_ratio=0.5, chat_template=template("<|image|>")
    )
    return _save(_init(tf.Llama4ForConditionalGeneration, config), processor, out)


def _blip(out: Path, instruct: bool) -> Path:
    import transformers as tf

    tok = wordpiece()  # the processor adds its own image token (an ``AddedToken``) to the tokenizer
    images = tf.BlipImageProcessor(size={"height": 28, "width": 28})
    if instruct:
        processor = tf.InstructBlipProcessor(images, tok, wordpiece(), num_query_tokens=4)
    else:
        processor = tf.Blip2Processor(images, tok, num_query_tokens=4)
    prefix = "InstructBlip" if instruct else "Blip2"
    config = getattr(tf, f"{prefix}Config")(
        vision_config=tiny_vision(),
        qformer_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=32,
            vocab_size=len(tok),
        ),
        text_config=text_config("llama", len(tok)),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    return _save(_init(getattr(tf, f"{prefix}ForConditionalGeneration"), config), processor, out)


def build_blip2(out: Path) -> Path:
    return _blip(out, instruct=False)


def build_instructblip(out: Path) -> Path:
    return _blip(out, instruct=True)


def build_florence2(out: Path) -> Path:
    """An encoder–decoder (BART text model): the processor inserts the image tokens itself."""
    import transformers as tf

    tok = wordpiece({"image_token": "<image>"})
    bart = dict(
        model_type="bart",
        vocab_size=len(tok),
        d_model=HIDDEN,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=2 * HIDDEN,
        decoder_ffn_dim=2 * HIDDEN,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
        decoder_start_token_id=101,
        forced_eos_token_id=None,  # BART's default forces token 2 at max length
    )
    vision = dict(
        embed_dim=[16, 32],
        num_heads=[1, 2],
        num_groups=[1, 2],
        depths=[1, 1],
        patch_size=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[3, 1],
        patch_prenorm=[False, True],
        projection_dim=HIDDEN,
        window_size=2,
        max_temporal_embeddings=4,
        max_position_embeddings=16,
    )
    config = tf.Florence2Config(
        text_config=bart, vision_config=vision, image_token_id=tok.convert_tokens_to_ids("<image>")
    )
    images = tf.CLIPImageProcessor(
        size={"height": 28, "width": 28}, crop_size={"height": 28, "width": 28}, do_center_crop=False
    )
    images.image_seq_length = 17  # 28 px → 7×7 → 4×4 patches, plus one pooled token
    processor = tf.Florence2Processor(images, tok, num_additional_image_tokens=0)
    return _save(_init(tf.Florence2ForConditionalGeneration, config), processor, out)


def build_kosmos2(out: Path) -> Path:
    """The processor wraps every prompt in its own ``<image>…</image>`` span of 64 latent tokens."""
    import transformers as tf

    images = tf.CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = tf.Kosmos2Processor(images, wordpiece(), num_patch_index_tokens=4)
    config = tf.Kosmos2Config(
        text_config=dict(
            vocab_size=len(processor.tokenizer),
            embed_dim=HIDDEN,
            layers=LAYERS,
            attention_heads=HEADS,
            ffn_dim=2 * HIDDEN,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=101,
            eos_token_id=102,
        ),
        vision_config=tiny_vision(),
        latent_query_num=64,
    )
    return _save(_init(tf.Kosmos2ForConditionalGeneration, config), processor, out)


def build_aya_vision(out: Path) -> Path:
    """Cohere 2 text blocks: attention and MLP run in parallel on one normed input."""
    import transformers as tf

    extra = ["<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL"]
    tok = wordpiece({"image_token": "<image>"}, extra)
    images = tf.GotOcr2ImageProcessor(size={"height": 28, "width": 28}, crop_to_patches=False)
    processor = tf.AyaVisionProcessor(
        images, tok, patch_size=14, img_size=28, downsample_factor=1, chat_template=template("<image>")
    )
    text = text_config("cohere2", len(tok), sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    config = tf.AyaVisionConfig(
        text_config=text,
        vision_config=siglip_vision(),
        downsample_factor=1,
        image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
        vision_feature_layer=-1,
    )
    return _save(_init(tf.AyaVisionForConditionalGeneration, config), processor, out)


def build_persimmon(out: Path) -> Path:
    """Fuyu's text decoder: one fused ``query_key_value`` projection per attention."""
    from transformers import PersimmonConfig, PersimmonForCausalLM

    tok = wordpiece()
    text = text_config("persimmon", len(tok))
    del text["num_key_value_heads"]  # Persimmon has no grouped-query attention: every head is cached
    config = PersimmonConfig(**text)
    return _save(_init(PersimmonForCausalLM, config), tok, out)


def build_lfm2(out: Path) -> Path:
    """A hybrid stack (LFM 2): blocks 0 and 2 mix tokens by short convolutions, 1 and 3 by attention."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    tok = wordpiece()
    text = text_config("lfm2", len(tok), num_hidden_layers=4)
    del text["model_type"]
    config = Lfm2Config(
        **text, layer_types=["conv", "full_attention", "conv", "full_attention"], block_auto_adjust_ff_dim=False
    )
    return _save(_init(Lfm2ForCausalLM, config), tok, out)


def build_gpt_neox(out: Path) -> Path:
    """GPT-NeoX with parallel residual: attention reads ``input_layernorm(x)``, the MLP reads a
    second norm of the same ``x``; one fused ``query_key_value`` projection."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = wordpiece()
    text = text_config("gpt_neox", len(tok))
    for key in ("model_type", "num_key_value_heads", "head_dim"):
        del text[key]
    config = GPTNeoXConfig(**text, use_parallel_residual=True, rotary_pct=0.5)
    return _save(_init(GPTNeoXForCausalLM, config), tok, out)


@dataclass
class Family:
    """One row of the family table: how to build it, and whether it has a vision tower."""

    name: str
    build: Callable[[Path], Path]
    vision: bool = True
    extra_inputs: list[str] = field(default_factory=list)
    # How the residual after attention is recomputed by hand from the block's own modules:
    # "add" x + attn(x); "post_norm_add" x + post_attention_layernorm(attn(x)) (Gemma 2/3);
    # "norm_of_add" self_attn_layer_norm(x + attn(x)) (BART's post-norm); "parallel" x + attn(x)
    # where the block never materialises it (attention and MLP read the same input: Cohere).
    residual: str = "add"
    expected_site: str = "post_attention_layernorm"
    blocks_path: str = "model.language_model.layers"
    seq2seq: bool = False  # an encoder–decoder: the decoder stack is pruned, fed the text teacher-forced
    # Kosmos-2 counts positions past left padding with a cache but not without one (a transformers
    # inconsistency, pruned or not), so its generate check runs on an unpadded single row
    batched_generate: bool = True


FAMILIES: list[Family] = [
    Family("llama", build_llama, vision=False, blocks_path="model.layers"),
    Family("llava", build_llava),
    Family("llava_next", build_llava_next),
    Family("qwen2_vl", build_qwen2_vl, extra_inputs=["mm_token_type_ids"]),
    Family("qwen2_5_vl", build_qwen2_5_vl, extra_inputs=["mm_token_type_ids"]),
    Family("qwen3_vl", build_qwen3_vl, extra_inputs=["mm_token_type_ids"]),
    # Idefics3/SmolVLM keep their decoder under `text_model`
    Family("idefics3", build_idefics3, blocks_path="model.text_model.layers"),
    Family("smolvlm", build_smolvlm, blocks_path="model.text_model.layers"),
    Family("paligemma", build_paligemma),
    # Gemma 3 normalises the attention output before the residual add
    Family("gemma3", build_gemma3, residual="post_norm_add", expected_site="pre_feedforward_layernorm"),
    Family("mistral3", build_mistral3),
    Family("internvl", build_internvl),
    # Llama 4: no `model.` wrapper around the text decoder, MLP named `feed_forward`
    Family("llama4", build_llama4, blocks_path="language_model.model.layers"),
    # BLIP-2 / InstructBLIP: the processor's image token is an AddedToken and it inserts it itself;
    # the output class has neither hidden_states nor last_hidden_state (final state read by a hook)
    Family("blip2", build_blip2, blocks_path="language_model.model.layers"),
    Family("instructblip", build_instructblip, blocks_path="language_model.model.layers"),
    # Florence-2: an encoder–decoder whose two stacks sit beside one shared embedding; the decoder
    # (cross-attention, KV cache) is pruned; BART blocks are post-norm
    Family(
        "florence2",
        build_florence2,
        blocks_path="model.language_model.decoder.layers",
        residual="norm_of_add",
        expected_site="self_attn_layer_norm",
        seq2seq=True,
    ),
    # Kosmos-2: the processor adds its own image span; text blocks under `text_model.model`
    Family(
        "kosmos2",
        build_kosmos2,
        blocks_path="text_model.model.layers",
        expected_site="final_layer_norm",
        batched_generate=False,
    ),
    # Aya Vision (Cohere 2): parallel attention/MLP blocks
    Family("aya_vision", build_aya_vision, residual="parallel", expected_site="self_attn"),
    # Fuyu's text decoder: fused query_key_value (KV bytes from the fused width)
    Family("persimmon", build_persimmon, vision=False, blocks_path="model.layers"),
    # GPT-NeoX parallel residual: a second norm reads the block input, not the residual after attention
    Family(
        "gpt_neox",
        build_gpt_neox,
        vision=False,
        blocks_path="gpt_neox.layers",
        residual="parallel",
        expected_site="attention",
    ),
]
