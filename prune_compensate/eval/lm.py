"""Language-model quality of a pruned model beside its original: perplexity of each, and the
pruned model's next-token KL(original ‖ pruned) and top-1 agreement with the original.

Text corpora are scored the way the transformers perplexity guide does: the documents are joined
(``"\\n\\n"``), tokenised once, and read in windows of ``max_length`` tokens that advance by
``stride``; each token is scored once, in the first window that reaches it, with up to
``max_length - stride`` tokens of context (with ``stride == max_length`` a window's first token
has no context inside it and is not scored, as in the guide). Image–caption examples are scored on the caption
tokens only, with the image and prompt as context. Everything is accumulated in float64 running
sums: no logits are kept beyond the window being scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..calibration.encode import load_image
from ..calibration.forward import move_inputs
from ..errors import PCError
from .data import Caption


@dataclass
class TokenScores:
    """Running sums over scored tokens: NLL of each model, KL(original ‖ pruned), top-1 agreement."""

    nll: dict[str, float]
    kl: float = 0.0
    agree: int = 0
    tokens: int = 0

    @classmethod
    def for_models(cls, names: list[str]) -> TokenScores:
        return cls({name: 0.0 for name in names})

    def update(self, logits: dict[str, torch.Tensor], targets: torch.Tensor) -> None:
        """``logits``: per model ``(n, vocab)`` at the scored positions; ``targets``: ``(n,)`` ids."""
        logprobs = {name: torch.log_softmax(value.double(), dim=-1) for name, value in logits.items()}
        for name, lp in logprobs.items():
            self.nll[name] += float(-lp.gather(-1, targets[:, None]).sum())
        if "original" in logprobs and "pruned" in logprobs:
            original, pruned = logprobs["original"], logprobs["pruned"]
            self.kl += float((original.exp() * (original - pruned)).sum())
            self.agree += int((original.argmax(-1) == pruned.argmax(-1)).sum())
        self.tokens += int(targets.numel())

    def perplexity(self, name: str) -> float:
        return math.exp(self.nll[name] / self.tokens) if self.tokens else float("nan")


def windows(n_tokens: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` per window; tokens ``first_scored..end-1`` are scored there.
    Token 0 is never scored (nothing predicts it)."""
    if not 0 < stride <= max_length:
        raise PCError(f"--stride {stride} must be between 1 and --max-length {max_length}", "fix --stride")
    previous_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        first = max(previous_end, begin + 1)
        if first < end:
            yield begin, end, first
        previous_end = end
        if end == n_tokens:
            break


def _logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        out = model(**move_inputs(inputs, model), use_cache=False)
    logits = getattr(out, "logits", None)
    if logits is None:
        raise PCError(f"{type(model).__name__} returns no logits", "score encoders with --pairs instead")
    return logits


def score_corpus(
    models: dict[str, nn.Module], tokenizer: Any, texts: list[str], max_length: int, stride: int, progress: Any = None
) -> TokenScores:
    """Sliding-window scores of every model on the joined ``texts`` (see module docstring)."""
    ids = tokenizer("\n\n".join(texts), return_tensors="pt")["input_ids"][0]
    if ids.numel() < 2:
        raise PCError("the evaluation text is shorter than two tokens", "pass a longer text")
    scores = TokenScores.for_models(list(models))
    spans = list(windows(ids.numel(), max_length, stride))
    task = progress.add_task("scoring text windows", total=len(spans)) if progress is not None else None
    for begin, end, first in spans:
        window = ids[begin:end][None]
        inputs = {"input_ids": window, "attention_mask": torch.ones_like(window)}
        positions = torch.arange(first - begin - 1, end - begin - 1)  # logits at p predict token p + 1
        logits = {name: _logits(model, inputs)[0, positions] for name, model in models.items()}
        scores.update(logits, ids[first:end])
        if task is not None:
            progress.advance(task)
    return scores


def caption_prompt(processor: Any, n_images: int) -> str:
    """The context a caption follows: the chat template's user turn with the images and a short
    instruction when the processor has one, else the processor's image tokens."""
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": "Describe the image."}]
        return processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    token = getattr(processor, "image_token", None) or "<image>"
    return str(token) * n_images


def caption_inputs(processor: Any, example: Caption) -> tuple[dict[str, torch.Tensor], int]:
    """Model inputs for prompt + caption, and the index of the caption's first token."""
    images = [load_image(p, example.origin) for p in example.images]
    prompt = caption_prompt(processor, len(images))
    try:
        full = dict(processor(text=[prompt + example.caption], images=[images], return_tensors="pt"))
        context = processor(text=[prompt], images=[images], return_tensors="pt")["input_ids"]
    except (ValueError, TypeError) as err:
        raise PCError(
            f"the processor rejected caption example {example.origin}: {str(err).splitlines()[0]}",
            "check the images and the caption",
        ) from err
    full.pop("labels", None)
    return full, int(context.shape[1])


def score_captions(
    models: dict[str, nn.Module], processor: Any, examples: list[Caption], progress: Any = None
) -> TokenScores:
    """Scores on caption tokens only, one example at a time (no padding between image prompts)."""
    scores = TokenScores.for_models(list(models))
    task = progress.add_task("scoring captions", total=len(examples)) if progress is not None else None
    for example in examples:
        inputs, start = caption_inputs(processor, example)
        ids = inputs["input_ids"][0]
        if start >= ids.numel():
            raise PCError(f"caption {example.origin} adds no tokens", "use a non-empty caption")
        positions = torch.arange(start - 1, ids.numel() - 1)
        logits = {name: _logits(model, inputs)[0, positions] for name, model in models.items()}
        scores.update(logits, ids[start:])
        if task is not None:
            progress.advance(task)
    return scores
