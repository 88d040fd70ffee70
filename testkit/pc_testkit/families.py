"""One record per family: what its tiny survey model needs beyond transformers' defaults.

Most families build from their default config, shrunk, with their own processor classes. Those
below differ from that in a way their published checkpoints (or a measured survey cost) explain.
Each non-default field of a record carries its reason in ``why``, and ``FamilyOverrides`` refuses
a record that sets a field without one, so an override never outlives the reason it was added for
unnoticed: when the reason goes (a transformers fix, a default that changed), the record goes.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class FamilyOverrides:
    """``checkpoint_fields``: config fields its checkpoints carry and the default config lacks
    (``shrink.tiny_config`` passes them to ``AutoConfig.for_model``). ``vision_sizes``: vision tower
    fields set smaller than the shrunk default. ``published_as_text_model_of``: a family registered
    with a text-only class whose image checkpoints use another family's class around it.
    ``tokenizer_tokens``: ``*_token`` attributes its processor reads off the tokenizer.
    ``audio_front_end``: the feature extractor class its processor needs and no mapping names.
    ``image_processor_fields`` / ``processor_fields``: settings its checkpoints' processor files
    carry. ``expansion_tokens``: config fields whose ids are tokens the processor writes when it
    expands an image without naming them (``{field: token or [tokens]}``). ``written_tokens``:
    tokens it writes that no config field names. ``template_image_tokens``: (start, pad, end) of a
    chat template that writes the image tokens (its processor writes none). ``small_sam``: run its
    SAM-style tower at ``processor_build.SMALL_SAM_SIDE``. ``why``: ``{field name: reason}`` for
    every field set here."""

    checkpoint_fields: dict[str, Any] = field(default_factory=dict)
    vision_sizes: dict[str, Any] = field(default_factory=dict)
    published_as_text_model_of: str | None = None
    tokenizer_tokens: dict[str, str] = field(default_factory=dict)
    audio_front_end: str | None = None
    image_processor_fields: dict[str, Any] = field(default_factory=dict)
    processor_fields: dict[str, Any] = field(default_factory=dict)
    expansion_tokens: dict[str, str | list[str]] = field(default_factory=dict)
    written_tokens: tuple[str, ...] = ()
    template_image_tokens: tuple[str, str, str] | None = None
    small_sam: bool = False
    why: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        changed = {s.name for s in fields(self) if s.name != "why" and getattr(self, s.name) != _default(s)}
        if changed != set(self.why):
            raise ValueError(f"each override needs its reason: set {sorted(changed)}, explained {sorted(self.why)}")


def _default(spec: Field) -> Any:
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default


def overrides(model_type: str) -> FamilyOverrides:
    """The record of ``model_type``; a family without one builds from its defaults alone."""
    return FAMILY_OVERRIDES.get(model_type, NO_OVERRIDES)


NO_OVERRIDES = FamilyOverrides()

QWEN_OMNI_VISION_START = (
    "Qwen's Omni thinkers compute their multimodal rotary positions from vision_start_token_id, set in "
    "the thinker_config of Qwen2.5-Omni and Qwen3-Omni checkpoints and absent from Qwen*OmniThinkerConfig()"
)
GEMMA4_TOWER = (
    "Gemma 4's default config has no vision tower (vision_config=None); its checkpoints carry one, the default "
    "Gemma4VisionConfig shape (given as a dict, the config builds it, then it is shrunk)"
)
# Gemma 4's processor refuses every input unless its tokenizer names boa_token and eoa_token ("Audio
# inputs were provided…" even without audio: its check reads ``audio is not None and audio_token is
# None or boa_token is None or eoa_token is None``); Gemma 3n's reads the three unconditionally.
GEMMA_AUDIO_TOKENS = {
    "audio_token": "<audio_soft_token>",
    "boa_token": "<start_of_audio>",
    "eoa_token": "<end_of_audio>",
}
GEMMA_AUDIO_WHY = (
    "its processor reads audio_token, boa_token and eoa_token off the tokenizer (default None) and cannot run "
    "without them; its checkpoints' tokenizer names them"
)
# Gemma's turn format: ShieldGemma 2's processor writes its policy prompts through the chat template
# (the caller's text is not used) and refuses to run without one; its checkpoints ship it.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
GEMMA3_SOFT_TOKEN = {"image_token_index": "<image>", "eoi_token_index": "<end_of_image>"}
GEMMA3_SOFT_TOKEN_WHY = (
    "Gemma 3's processor names the begin-of-image token as its image_token and writes the tokenizer's image "
    "token image_seq_length times between it and the end-of-image token; the model puts the image features "
    "on that soft token (checkpoints: boi 255999, image_token_index 262144, eoi_token_index 256000)"
)
SMALL_SAM_WHY = (
    "its SAM-style tower attends globally over every patch (4,096 at its checkpoints' 1,024 px: over two "
    "minutes per tiny run), and its image token count follows the tower's side, so a smaller side stays consistent"
)

FAMILY_OVERRIDES: dict[str, FamilyOverrides] = {
    "qwen2_5_omni_thinker": FamilyOverrides(
        checkpoint_fields={"vision_start_token_id": 151652}, why={"checkpoint_fields": QWEN_OMNI_VISION_START}
    ),
    "qwen3_omni_moe_thinker": FamilyOverrides(
        checkpoint_fields={"vision_start_token_id": 151652}, why={"checkpoint_fields": QWEN_OMNI_VISION_START}
    ),
    "gemma4": FamilyOverrides(
        checkpoint_fields={"vision_config": {}},
        tokenizer_tokens=GEMMA_AUDIO_TOKENS,
        why={"checkpoint_fields": GEMMA4_TOWER, "tokenizer_tokens": GEMMA_AUDIO_WHY},
    ),
    "gemma4_unified": FamilyOverrides(
        checkpoint_fields={"vision_config": {}},
        tokenizer_tokens=GEMMA_AUDIO_TOKENS,
        why={"checkpoint_fields": GEMMA4_TOWER, "tokenizer_tokens": GEMMA_AUDIO_WHY},
    ),
    "gemma3n": FamilyOverrides(tokenizer_tokens=GEMMA_AUDIO_TOKENS, why={"tokenizer_tokens": GEMMA_AUDIO_WHY}),
    "mllama": FamilyOverrides(
        vision_sizes={"image_size": 112},
        why={
            "vision_sizes": "image tokens grow with the square of the tile side, and its 448 px tiles (1,024 patches "
            "each, read by every cross-attention layer) kept its tiny run at over 4 minutes"
        },
    ),
    "got_ocr2": FamilyOverrides(
        vision_sizes={"global_attn_indexes": []},
        why={
            "vision_sizes": "its processor writes 256 image tokens per image whatever its size, so its SAM tower must "
            "see 1,024 px (4,096 patches): it attends within windows only, no layer over all 4,096 patches "
            "(its survey run took over 120 s)"
        },
    ),
    "kosmos-2.5": FamilyOverrides(
        vision_sizes={"num_attention_heads": 1},
        why={
            "vision_sizes": "its processor class fixes 4,096 patches per image (a class-level max_patches no saved "
            "file changes), and its tower's eager attention over them costs in proportion to its heads: one head "
            "(its survey run: 255 s with four)"
        },
    ),
    "mistral4": FamilyOverrides(
        published_as_text_model_of="mistral3",
        why={
            "published_as_text_model_of": "Mistral 4 is registered with Mistral4ForCausalLM (no image argument); "
            "Mistral Small 4 checkpoints are Mistral3ForConditionalGeneration (a Pixtral tower and projector) "
            "around a Mistral 4 text model"
        },
    ),
    "nemotron_h_omni": FamilyOverrides(
        audio_front_end="ParakeetFeatureExtractor",
        image_processor_fields={"min_num_patches": 64},
        why={
            "audio_front_end": "its processor computes Parakeet's mel frames, refuses to be built without Parakeet's "
            "feature extractor, and no mapping registers one for the family",
            "image_processor_fields": "its image processor upsizes every image to at least 1,024 patches (256 prompt "
            "tokens through its Mamba layers, whose reference scan on a CPU kept its tiny run at 120 s); at least 64",
        },
    ),
    "dots3_note": FamilyOverrides(
        image_processor_fields={"temporal_patch_size": 1},
        why={
            "image_processor_fields": "it uses Qwen2-VL's image processor (two frames per patch by default) with a "
            "tower whose patch embedding is 2-D (Conv2d over 3 × 14 × 14): two-frame patches came out as twice "
            "the tokens its grid counts"
        },
    ),
    "vipllava": FamilyOverrides(
        processor_fields={"vision_feature_select_strategy": "default"},
        why={
            "processor_fields": "ViP-LLaVA always drops the vision tower's class token ([:, 1:] in its forward), which "
            'its checkpoints\' LlavaProcessor counts by vision_feature_select_strategy="default"'
        },
    ),
    "ovis2": FamilyOverrides(
        expansion_tokens={
            "image_token_id": "<IMG_ATOM>",
            "visual_indicator_token_ids": ["<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>"],
        },
        why={
            "expansion_tokens": "Ovis2Processor.replace_image_token expands <image> into <IMG_START>, <IMG_ATOM> × "
            "image_seq_length, <IMG_GRID>… <IMG_END>; the model finds the features by image_token_id (the atom, "
            "151665 in its checkpoints) and the indicators by visual_indicator_token_ids (151666–151670, in this order)"
        },
    ),
    "t5gemma2": FamilyOverrides(expansion_tokens=GEMMA3_SOFT_TOKEN, why={"expansion_tokens": GEMMA3_SOFT_TOKEN_WHY}),
    "shieldgemma2": FamilyOverrides(
        processor_fields={"chat_template": GEMMA_CHAT_TEMPLATE},
        expansion_tokens=GEMMA3_SOFT_TOKEN,
        why={
            "processor_fields": "its processor writes its policy prompts through the chat template its checkpoints "
            "ship (the caller's text is not used) and refuses to run without one",
            "expansion_tokens": "its processor is Gemma 3's with policy prompts: " + GEMMA3_SOFT_TOKEN_WHY,
        },
    ),
    "molmo2": FamilyOverrides(
        expansion_tokens={
            "image_patch_id": "<im_patch>",
            "image_start_token_id": "<im_start>",
            "low_res_image_start_token_id": "<low_res_im_start>",
            "image_end_token_id": "<im_end>",
            "frame_start_token_id": "<frame_start>",
            "frame_end_token_id": "<frame_end>",
        },
        written_tokens=("<im_col>", "<im_low>"),
        why={
            "expansion_tokens": "Molmo 2 writes <im_start>, rows of <im_patch> (+ <im_col>), <im_end>, first for the "
            "low-resolution view (<low_res_im_start>), then the crops; the features go on the patches",
            "written_tokens": "it writes <im_col> and <im_low>, which no config field names; "
            "they must be single tokens",
        },
    ),
    "pp_chart2table": FamilyOverrides(
        expansion_tokens={"image_token_index": "<imgpad>"},
        template_image_tokens=("<img>", "<imgpad>", "</img>"),
        small_sam=True,
        why={
            "expansion_tokens": "the template's pad token carries the image features (image_token_index)",
            "template_image_tokens": "its processor writes no image tokens; its checkpoints' chat template writes "
            "GOT-OCR 2's layout, <img>, <imgpad> × 256, </img> (transformers' integration test: 286 ids for one "
            "image and the prompt); the survey writes as many pads as the tiny tower gives features per image",
            "small_sam": SMALL_SAM_WHY,
        },
    ),
    "unlimited_ocr": FamilyOverrides(
        small_sam=True,
        why={"small_sam": SMALL_SAM_WHY + " (its processor counts them from the image processor's size)"},
    ),
}
