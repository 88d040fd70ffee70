"""A tiny random model of a registered family *with its real processor class*, built offline, so the
family survey can run a family on image inputs without a hand-written builder.

The processor is the family's own class (``PROCESSOR_MAPPING_NAMES``), given its own image (and
video) processor class with default settings and MiniLM's WordPiece tokenizer carrying every
special token the processor asks for. What a published checkpoint would keep consistent by its
files is made consistent here from the shrunk model config:

* the image processor's ``patch_size`` / ``temporal_patch_size`` / ``merge_size`` and its image
  size come from the vision tower's config (a default image processor is often another release's);
* every ``*_token_id`` / ``*_token_index`` of the model config is the tokenizer's id of the
  processor's token of that name;
* a processor argument the processor cannot default (``patch_size``,
  ``vision_feature_select_strategy``) comes from the config.

Families where that is not enough (their processor and model disagree in a way only a real
checkpoint's files settle) fail in the survey's image path and are run on text instead, with the
reason kept in their row.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from .families import overrides
from .shrink import fit_vocabulary, sub_configs, tiny_config
from .tiny_models import wordpiece

# Special tokens a processor may read from its tokenizer, by attribute name; a processor that asks
# for another ``*_token`` attribute gets ``<name>`` added (see ``_processor``).
SPECIAL_TOKENS: dict[str, str] = {
    "image_token": "<image>",
    "video_token": "<video>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_boundary_token": "<image_boundary>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "image_start_token": "<img_start>",
    "image_end_token": "<img_end>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "image_break_token": "[IMG_BREAK]",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "image_pad_token": "<|image_pad|>",
    "video_pad_token": "<|video_pad|>",
}


# The side SAM-style towers of ``FamilyOverrides.small_sam`` families run at (their checkpoints: 1,024 px).
SMALL_SAM_SIDE = 256


def image_entry_template(start: str, pad: str, end: str, per_image: int) -> str:
    """A chat template (``<|im_start|>`` turns) that writes ``start``, ``pad`` × ``per_image``,
    ``end`` for each image entry of a message."""
    image = start + pad * per_image + end + "\n"
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}" + image + "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _tower_stride(model: Any, image_processor: Any) -> int:
    """The pixels per image token a side of a tower without a ``patch_size`` (FastVLM's timm FastViT:
    its checkpoints' processor says 64, the tower's total stride), measured on the built model at the
    image processor's crop side, so that a LLaVA-style processor counts ``(side // stride)²`` tokens."""
    import math

    side = _get(getattr(image_processor, "crop_size", None), "height") or _get(image_processor.size, "shortest_edge")
    tokens = math.isqrt(features_per_image(model, image_processor))
    return int(side) // max(tokens, 1)


def features_per_image(model: Any, image_processor: Any) -> int:
    """How many feature vectors ``model`` puts in the prompt for one image, measured on a blank
    image through ``get_image_features``."""
    from PIL import Image

    pixels = image_processor(images=[Image.new("RGB", (32, 32))], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels.to(model.dtype))
    features = getattr(features, "pooler_output", features)
    return int(features.shape[-2]) if features.dim() == 3 else int(features.shape[0])


def family_processor(model_type: str, class_name: str) -> str | None:
    """The family's processor class name: the one registered for ``model_type``, else the one
    processor class the model's own package exports (a Qwen Omni *thinker* is registered without
    one, yet its package's ``Qwen2_5OmniProcessor`` is what its checkpoints ship), else the one
    registered for the family its modular source derives from (GLM-OCR is written as a GLM-4V
    variant and its docs load a GLM-4.1V processor; Cosmos 3 Omni derives from Qwen3-VL and its docs
    load the Qwen3-VL processor), else None."""
    import importlib

    import transformers
    from transformers.models.auto import processing_auto
    from transformers.processing_utils import ProcessorMixin

    if model_type in processing_auto.PROCESSOR_MAPPING_NAMES:
        return processing_auto.PROCESSOR_MAPPING_NAMES[model_type]
    package = importlib.import_module(getattr(transformers, class_name).__module__.rsplit(".", 1)[0])
    found = [
        name
        for name in dir(package)
        if isinstance(getattr(package, name), type)
        and issubclass(getattr(package, name), ProcessorMixin)
        and hasattr(transformers, name)
    ]
    if len(found) == 1:
        return found[0]
    parents = _modular_parents(package)
    named = {
        processing_auto.PROCESSOR_MAPPING_NAMES[p] for p in parents if p in processing_auto.PROCESSOR_MAPPING_NAMES
    }
    return named.pop() if len(named) == 1 else None


def _modular_parents(package: Any) -> list[str]:
    """The model types a package's ``modular_*.py`` imports its modelling or configuration from
    (``from ..glm4v.modeling_glm4v import ...``); none when the package ships no modular source."""
    import re

    folder = Path(package.__file__).parent
    parents = []
    for source in folder.glob("modular_*.py"):
        text = source.read_text(encoding="utf-8")
        parents += re.findall(r"^from \.\.(\w+)\.(?:modeling|configuration)_\w+ import", text, flags=re.M)
    return list(dict.fromkeys(parents))


def _component_class(mapping: dict[str, Any], model_type: str, processor_name: str) -> Any:
    """The family's image (or video) processor class; where the family has none registered, the
    one of another family that shares its processor class (GLM-4V-MoE uses GLM-4V's)."""
    import transformers
    from transformers.models.auto import processing_auto

    names = mapping.get(model_type)
    if names is None:
        names = next(
            (
                mapping[other]
                for other, p in processing_auto.PROCESSOR_MAPPING_NAMES.items()
                if p == processor_name and mapping.get(other)
            ),
            None,
        )
    if names is None:
        return None
    if isinstance(names, dict):  # {backend: class name}
        names = names.get("torchvision") or names.get("pil")
    elif isinstance(names, (tuple, list)):
        names = next(n for n in names if n)
    return getattr(transformers, names)


def _vision_config(config: Any) -> Any:
    return next(
        (c for c in sub_configs(config) if "vision" in type(c).__name__.lower() and getattr(c, "patch_size", None)),
        None,
    )


# The longest image side fed to a dynamic-resolution processor (Pixtral's: its image tokens grow
# with the image, not with the tower, and a tiny run needs few of them).
SURVEY_LONGEST_EDGE = 224


def _align_image_processor(processor: Any, vision: Any) -> None:
    """Patch, merge and image size of ``processor`` (image or video) from the vision tower."""
    if vision is None or processor is None:
        return
    for mine, theirs in (
        ("patch_size", "patch_size"),
        ("temporal_patch_size", "temporal_patch_size"),
        ("merge_size", "spatial_merge_size"),
    ):
        if hasattr(processor, mine) and getattr(vision, theirs, None):
            setattr(processor, mine, getattr(vision, theirs))
    side = getattr(vision, "image_size", None)
    side = side[0] if isinstance(side, (list, tuple)) else side
    if not isinstance(side, int):
        return
    size = getattr(processor, "size", None)
    keys = {k for k in ("height", "width", "shortest_edge", "longest_edge") if _get(size, k)}
    if keys == {"longest_edge"}:  # Pixtral-style dynamic resolution: any size; small keeps a tiny run fast
        processor.size = {"longest_edge": min(_get(size, "longest_edge"), SURVEY_LONGEST_EDGE)}
        return
    if "longest_edge" in keys:  # a pixel budget or a resize range: the processor's own choice
        return
    if {"height", "width"} <= keys:
        processor.size = {"height": side, "width": side}
    elif "shortest_edge" in keys:
        processor.size = {"shortest_edge": side}
    if getattr(processor, "crop_size", None) is not None:
        processor.crop_size = {"height": side, "width": side}


def _get(size: Any, key: str) -> Any:
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _processor(
    processor_class: Any,
    image: Any,
    video: Any,
    audio: Any,
    config: Any,
    vision: Any,
    fields: dict[str, Any],
    expansion: dict[str, str | list[str]],
    written: list[str],
    tokenizer_tokens: dict[str, str] | None = None,
) -> tuple[Any, Any]:
    """The processor and its tokenizer, every ``*_token`` it names present in the tokenizer
    (``vision``: the vision tower's config within ``config``, or None; ``fields``: the family's
    ``processor_fields``; ``expansion`` and ``written``: its ``expansion_tokens`` and
    ``written_tokens``, added to the tokenizer too; ``tokenizer_tokens``: its ``tokenizer_tokens``,
    named on the tokenizer; all from its ``families.FamilyOverrides``)."""
    params = inspect.signature(processor_class.__init__).parameters
    kwargs: dict[str, Any] = {"image_processor": image}
    if "video_processor" in params:
        kwargs["video_processor"] = video
    if "feature_extractor" in params:  # an audio front end (Qwen Omni): its defaults, never fed here
        kwargs["feature_extractor"] = audio
    if "patch_size" in params and getattr(vision, "patch_size", None):
        kwargs["patch_size"] = vision.patch_size
    if "spatial_merge_size" in params and isinstance(getattr(config, "spatial_merge_size", None), int):
        kwargs["spatial_merge_size"] = config.spatial_merge_size  # Pixtral-style: merged patches per token
    if "vision_feature_select_strategy" in params and getattr(config, "vision_feature_select_strategy", None):
        kwargs["vision_feature_select_strategy"] = config.vision_feature_select_strategy
    side, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    if "num_image_tokens" in params and isinstance(side, int) and isinstance(patch, int):
        kwargs["num_image_tokens"] = (side // patch) ** 2  # LLaVA-OneVision: the tower's patches per image
    if "num_image_tokens" in params and isinstance(getattr(config, "latent_query_num", None), int):
        kwargs["num_image_tokens"] = config.latent_query_num  # Kosmos-2.5: a placeholder per resampler query
    stride = getattr(vision, "hidden_stride", 1) or 1
    per_image = [sub.mm_tokens_per_image for sub in sub_configs(config) if hasattr(sub, "mm_tokens_per_image")]
    if "image_seq_length" in params and per_image:  # Gemma 3: as many as the model pools the tower to
        kwargs["image_seq_length"] = per_image[0]
    elif "image_seq_length" in params and isinstance(side, int) and isinstance(patch, int) and expansion:
        kwargs["image_seq_length"] = (-(-(side // patch) // stride)) ** 2  # Ovis2: the tower's tokens per image
    if "num_additional_image_tokens" in params and "clip" in type(vision).__name__.lower():
        kwargs["num_additional_image_tokens"] = 1  # CLIP's class token
    kwargs.update(fields)
    special, plain = {**SPECIAL_TOKENS, **(tokenizer_tokens or {})}, []
    for tokens in expansion.values():
        special.update({token: token for token in ([tokens] if isinstance(tokens, str) else tokens)})
    special.update({token: token for token in written})
    for _ in range(16):
        tokenizer = wordpiece(special, words=plain)
        try:
            processor = processor_class(tokenizer=tokenizer, **kwargs)
        except AttributeError as err:  # "... has no attribute slice_start_token"
            missing = str(err).rsplit(" ", 1)[-1]
            if not missing.endswith("_token") or missing in special:
                raise
            special[missing] = f"<{missing}>"
            continue
        except KeyError as err:  # Fuyu looks its tokens up in the vocabulary: vocab["|SPEAKER|"] (see wordpiece)
            missing = str(err.args[0]) if err.args else ""
            if not missing or missing in plain:
                raise
            plain.append(missing)
            continue
        vocab = tokenizer.get_vocab()
        absent = {
            name: value
            for name, value in vars(processor).items()
            if name.endswith("_token") and isinstance(value, str) and value not in vocab
        }
        if not absent:
            return processor, tokenizer
        special.update(absent)
    raise ValueError(f"{processor_class.__name__} keeps asking for special tokens")


def build_with_processor(model_type: str, class_name: str, out: Path, text_model_type: str | None = None) -> Path:
    """A tiny random ``class_name`` and its real processor saved to ``out`` (see the module doc);
    ``text_model_type``: another family's tiny config as its ``text_config`` (Mistral 4 inside
    Mistral 3's class, as its published checkpoints are)."""
    import transformers
    from transformers.models.auto import (
        feature_extraction_auto,
        image_processing_auto,
        video_processing_auto,
    )

    processor_name = family_processor(model_type, class_name)
    if processor_name is None:
        raise ValueError(f"no processor class is registered for {model_type}")
    image_class = _component_class(image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES, model_type, processor_name)
    if image_class is None:
        raise ValueError(f"no image processor class is registered for {processor_name}")
    video_class = _component_class(
        getattr(video_processing_auto, "VIDEO_PROCESSOR_MAPPING_NAMES", {}), model_type, processor_name
    )
    family = overrides(model_type)
    config = tiny_config(model_type)
    if text_model_type is not None:
        config.text_config = tiny_config(text_model_type)
    if family.small_sam:
        for sub in sub_configs(config):
            if hasattr(sub, "global_attn_indexes") and isinstance(getattr(sub, "image_size", None), int):
                sub.image_size = SMALL_SAM_SIDE
    vision = _vision_config(config)
    template_tokens = family.template_image_tokens
    side, patch = getattr(vision, "image_size", None), getattr(vision, "patch_size", None)
    for sub in sub_configs(config):  # Gemma 3 pools the tower's grid to √mm_tokens_per_image a side
        if hasattr(sub, "mm_tokens_per_image") and isinstance(side, int) and isinstance(patch, int):
            sub.mm_tokens_per_image = (side // patch) ** 2
    image = image_class()
    _align_image_processor(image, vision)
    for key, value in family.image_processor_fields.items():
        setattr(image, key, value)
    video = video_class() if video_class is not None else None
    if getattr(video, "draw_on_frames", False):  # ERNIE 4.5-VL stamps timestamps with a font file; no video here
        video.draw_on_frames = False
    _align_image_processor(video, vision)
    audio_class = _component_class(feature_extraction_auto.FEATURE_EXTRACTOR_MAPPING_NAMES, model_type, processor_name)
    if audio_class is None and family.audio_front_end is not None:
        audio_class = getattr(transformers, family.audio_front_end)
    processor, tokenizer = _processor(
        getattr(transformers, processor_name),
        image,
        video,
        audio_class() if audio_class is not None else None,
        config,
        vision,
        family.processor_fields,
        family.expansion_tokens,
        [*family.written_tokens, *(template_tokens or ())],
        family.tokenizer_tokens,
    )
    conversion = getattr(processor, "size_conversion", None)  # Aria: image side → query tokens it writes
    if isinstance(conversion, dict) and hasattr(config, "projector_patch_to_query_dict") and vision is not None:
        # The projector looks the tower's patch count up in this dict; its checkpoints key it by the
        # real 14-px patches of a 490 / 980 px image (1225, 4900): re-key it by the tiny tower's.
        patches = {(int(side) // vision.patch_size) ** 2: int(n) for side, n in conversion.items()}
        config.projector_patch_to_query_dict = patches
        config.max_value_projector_patch_to_query_dict = max(patches.values())
    for sub in sub_configs(config):
        for name in [n for n in vars(sub) if n.endswith(("_token_id", "_token_index"))]:
            value = getattr(processor, name, None)
            if not isinstance(value, int):
                token = getattr(processor, name.rsplit("_", 1)[0], None)
                value = tokenizer.convert_tokens_to_ids(token) if isinstance(token, str) else None
            if isinstance(value, int):
                setattr(sub, name, value)
    for sub in sub_configs(config):  # after the loop above: these name other tokens than the processor's
        for name, tokens in family.expansion_tokens.items():
            if hasattr(sub, name):
                setattr(sub, name, tokenizer.convert_tokens_to_ids(tokens))
    fit_vocabulary(config, len(tokenizer))  # after the ids the processor writes are in place
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(config).eval()
    if template_tokens is not None:
        processor.chat_template = image_entry_template(*template_tokens, features_per_image(model, image))
    if "patch_size" in inspect.signature(type(processor).__init__).parameters and processor.patch_size is None:
        processor.patch_size = _tower_stride(model, image)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
