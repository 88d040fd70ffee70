"""Sentence embeddings of an encoder, pooled the way the model is used: sentence-transformers'
pooling config when the model folder has one (``1_Pooling/config.json``: mean or CLS), else mean
pooling over real tokens; then L2-normalised, so a dot product is the cosine.

A lower stage than both ``pruning`` (the heal's embedding objective and task score, the held-out
error's embedding cosine) and ``eval`` (``pc eval --pairs``), so neither imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..calibration.forward import move_inputs
from ..errors import PCError


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(batch, hidden)`` mean of ``hidden`` ``(batch, seq, hidden)`` over real tokens (``mask`` 1),
    in ``hidden``'s dtype: the sentence embedding of mean-pooling encoders such as MiniLM."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def pooling_mode(model_dir: Path | None) -> str:
    """``cls`` or ``mean``, from a sentence-transformers pooling config (default ``mean``)."""
    config = model_dir / "1_Pooling" / "config.json" if model_dir is not None else None
    if config is None or not config.is_file():
        return "mean"
    settings = json.loads(config.read_text(encoding="utf-8"))
    return "cls" if settings.get("pooling_mode_cls_token") else "mean"


def embed(
    model: nn.Module, tokenizer: Any, texts: list[str], batch_size: int, max_length: int, mode: str = "mean"
) -> torch.Tensor:
    """``(len(texts), hidden)`` float32 L2-normalised embeddings, batch by batch."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = dict(
            tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
        )
        with torch.inference_mode():
            out = model(**move_inputs(inputs, model))
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:
            raise PCError(f"{type(model).__name__} returns no last_hidden_state", "score LMs with --text instead")
        hidden = hidden.float().cpu()
        if mode == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = mean_pool(hidden, inputs["attention_mask"])
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks)
