"""Encoding: turn calibration samples into model inputs with the model's own processor (chat
template, image entries, truncation), batch them, and say which positions are real tokens.

Reading the samples is ``sources``; running the encoded batches through the model is ``forward``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import PCError
from ..progress import WorkProgress, stage_or_bar
from .sources import CalibrationSample


def load_image(path: Any, origin: str) -> Any:
    from PIL import Image

    if not isinstance(path, (str, Path)):
        return path.convert("RGB") if hasattr(path, "convert") else path
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise PCError(f"image {path} of sample {origin} cannot be read ({err})", "fix or remove the image") from err


def _truncate_text(tokenizer: Any, text: str, max_tokens: int) -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens at a character boundary (keeps image tokens whole)."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return text
    offsets = encoded["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]]


class BatchEncoder:
    """Turn samples into model inputs with the model's processor.

    VLM processors get a chat-formatted prompt (when they carry a chat template) with one image
    entry per image, so the processor expands each placeholder to the right number of image
    tokens; text-only tokenizers get the raw text, truncated to ``max_length``.
    """

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.has_images = hasattr(processor, "image_processor")
        self._inserts_own: bool | None = None
        self._flat_images: bool | None = None  # see _call_processor
        # Set by ``forward.one_sample_batches`` once it has probed the model this encoder feeds, so
        # the prune and the profile it runs share one probe.
        self.stack_inserts_positions: bool | None = None
        # Set for the decoder of an encoder–decoder (Florence-2): the text also goes to the decoder,
        # teacher-forced, so its blocks see real tokens (without it they see one start token).
        self.decoder_text = False
        # Set for a model whose forward takes ``mm_token_type_ids`` (multimodal rotary positions:
        # Cosmos 3 Edge, GLM-4V, Qwen-VL): asked of the processor, whose default may be not to return them.
        self.mm_token_types = False
        if getattr(self.tokenizer, "pad_token", None) is None:
            eos = getattr(self.tokenizer, "eos_token", None)
            if eos is None:
                raise PCError("the tokenizer has neither a pad nor an eos token", "set tokenizer.pad_token")
            self.tokenizer.pad_token = eos

    def image_token(self) -> str | None:
        """The image token of the processed ids, as text (some processors keep an ``AddedToken``)."""
        token = getattr(self.processor, "image_token", None) or getattr(self.tokenizer, "image_token", None)
        return None if token is None else str(token)

    def image_placeholder(self) -> str | None:
        """The placeholder a prompt carries per image: the image token, unless the processor names
        a text placeholder apart from the token it expands it into (Qianfan-OCR: ``<image>`` →
        ``<img><context_image_token>…</img>``)."""
        placeholder = getattr(self.processor, "image_placeholder_token", None)
        return str(placeholder) if placeholder is not None else self.image_token()

    def inserts_own_placeholders(self, sample: CalibrationSample) -> bool:
        """Whether the processor puts the image tokens in itself (BLIP-2, Kosmos-2, Florence-2, Fuyu):
        asked once, by processing a text without placeholder with one of ``sample``'s images and
        looking for image tokens in the ids. A processor that refuses that needs placeholders."""
        if self._inserts_own is None:
            image = load_image(sample.images[0], sample.origin)
            try:
                ids = self.processor(text=["a"], images=[[image]], return_tensors="pt")["input_ids"]
            except Exception:  # noqa: BLE001 — any refusal means "put placeholders in the text"
                self._inserts_own = False
                return False
            token = self.image_token()
            if token is None:  # it took an image without a placeholder and names none: it handles images
                self._inserts_own = True
            else:
                token_id = self.tokenizer.convert_tokens_to_ids(token)
                self._inserts_own = bool((torch.as_tensor(ids) == token_id).any())
        return self._inserts_own

    def refuses_text_only(self) -> bool:
        """Whether the processor refuses a prompt without an image (PaliGemma), asked through the
        same path real batches take."""
        try:
            self([CalibrationSample("a", [], "text-only probe")])
        except PCError:
            return True
        return False

    def _prompt(self, sample: CalibrationSample) -> str:
        text = _truncate_text(self.tokenizer, sample.text, self.max_length)
        n_images = len(sample.images)
        if n_images and self.inserts_own_placeholders(sample):
            n_images = 0  # never a second placeholder beside the processor's own
        template = getattr(self.processor, "chat_template", None)
        if template:
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
        return (self.image_placeholder() or "<image>") * n_images + text

    def _text(self, samples: list[CalibrationSample]) -> dict[str, torch.Tensor]:
        texts = [s.text for s in samples]
        return dict(
            self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        )

    def __call__(self, samples: list[CalibrationSample]) -> dict[str, torch.Tensor]:
        if self.has_images:
            encoded = self._processed(samples)
        else:
            for sample in samples:
                if sample.images:
                    raise PCError(
                        f"sample {sample.origin} has images but the model has no image processor",
                        "use a vision-language model or drop the images",
                    )
            encoded = self._text(samples)
        if self.decoder_text:
            text = self._text(samples)
            encoded["decoder_input_ids"] = text["input_ids"]
            encoded["decoder_attention_mask"] = text["attention_mask"]
        return encoded

    def _processed(self, samples: list[CalibrationSample]) -> dict[str, torch.Tensor]:
        prompts = [self._prompt(s) for s in samples]
        images = [[load_image(p, s.origin) for p in s.images] for s in samples]
        kwargs: dict[str, Any] = {"text": prompts, "padding": True, "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = images
        if self.mm_token_types:
            kwargs["return_mm_token_type_ids"] = True
        try:
            encoded = self._call_processor(kwargs)
        except (ValueError, TypeError) as err:
            first = ", ".join(s.origin for s in samples[:3])
            raise PCError(
                f"the processor rejected samples {first}: {str(err).splitlines()[0]}", "check the images and text"
            ) from err
        encoded.pop("labels", None)  # some processors (PaliGemma) add LM labels; calibration wants no loss
        return encoded

    def _call_processor(self, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The processor's output; images go as one list per sample, or flat when the processor
        refuses nested lists and every sample has one image (GOT-OCR 2 reads a nested list as the
        pages of one document). The form that worked is kept for later batches."""
        images = kwargs.get("images")
        one_each = images is not None and all(len(group) == 1 for group in images)
        flat = {**kwargs, "images": [group[0] for group in images]} if one_each else None
        if self._flat_images and flat is not None:
            return dict(self.processor(**flat))
        try:
            encoded = dict(self.processor(**kwargs))
        except (ValueError, TypeError):
            if flat is None or self._flat_images is not None:
                raise
            encoded = dict(self.processor(**flat))
            self._flat_images = True
            return encoded
        if images is not None:
            self._flat_images = False
        return encoded


def real_tokens(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, T)`` mask of the real tokens of the stack being pruned: the decoder's when the batch
    carries decoder inputs, else the attention mask (all ones when there is none)."""
    for key in ("decoder_attention_mask", "attention_mask"):
        if key in inputs:
            return inputs[key]
    return torch.ones_like(inputs["input_ids"])


def positions_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """The real-token mask ``(B, T)`` of a batch stretched to the ``length`` positions the stack
    really runs on. Why: some models insert positions inside their forward (GIT prepends its image
    features to the text), so the stack sees ``(B, length, D)`` with ``length > T``. Without padding
    every position is real, whatever was inserted where; with padding nothing says which inserted
    positions line up with which mask column, so that is refused (calibrate one sample per batch)."""
    if length == mask.shape[1]:
        return mask
    if length > mask.shape[1] and bool(mask.bool().all()):
        return torch.ones(mask.shape[0], length, dtype=mask.dtype, device=mask.device)
    raise PCError(
        f"the model runs its stack on {length} positions but the batch has {mask.shape[1]}, with padding "
        "— it changes the sequence length inside its forward",
        "calibrate one sample per batch (--batch-size 1)",
    )


def probe_batch(samples: list[CalibrationSample], batch_size: int) -> list[CalibrationSample]:
    """The samples of one probe forward: the first image batch when there are images (so probes
    see image tokens too), else the first text batch; never a mix (see ``batches``)."""
    with_images = [s for s in samples if s.images]
    return (with_images or samples)[:batch_size]


def batches(samples: list[CalibrationSample], batch_size: int) -> Iterator[list[CalibrationSample]]:
    """Batches of at most ``batch_size`` that never mix text-only and image samples (processors
    cannot pad a batch where only some rows carry images)."""
    groups = [[s for s in samples if not s.images], [s for s in samples if s.images]]
    for group in groups:
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


def encoded_batches(
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    batch_size: int,
    description: str,
    show_progress: bool = True,
    work: WorkProgress | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Encode and yield batches, advancing a rich progress bar by samples (a stage of ``work``
    when the pass is part of a larger job, else a bar of its own)."""
    with stage_or_bar(work, description, len(samples), show_progress) as advance:
        for batch in batches(samples, batch_size):
            yield encoder(batch)
            advance(len(batch))
