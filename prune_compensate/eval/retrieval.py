"""Encoder quality of a pruned model beside its original: retrieval over (query, document) pairs
with every other document as a negative (MRR, recall@1, recall@10, realistic ranks for ties, as
PyKEEN ranks), and the cosine between the two models' embeddings of the same texts.

Embeddings are pooled the way the model is used: sentence-transformers' pooling config when the
model folder has one (``1_Pooling/config.json``: mean or CLS), else mean pooling over real tokens;
then L2-normalised, so a dot product is the cosine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..calibration.forward import move_inputs
from ..errors import PCError
from ..pruning.error import mean_pool


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


def queries_and_documents(pairs: list[tuple[str | None, str]]) -> tuple[list[str], list[str]]:
    """The queries, and the corpus with query i's answer at position i (distractors after them)."""
    queries = [q for q, _ in pairs if q is not None]
    documents = [d for q, d in pairs if q is not None] + [d for q, d in pairs if q is None]
    return queries, documents


def realistic_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank of each row's target among its row (1 = best); ties share the mean of their
    optimistic and pessimistic ranks. ``scores``: ``(queries, documents)``; ``target``: ``(queries,)``."""
    true = scores.gather(1, target[:, None])
    optimistic = 1 + (scores > true).sum(1)
    pessimistic = (scores >= true).sum(1)
    return (optimistic + pessimistic).double() / 2


def retrieval_metrics(queries: torch.Tensor, documents: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
    """Query i's answer is document i; every other document (there may be more documents than
    queries: distractors) is a negative."""
    ranks = []
    for start in range(0, queries.shape[0], batch_size):
        block = queries[start : start + batch_size].double() @ documents.double().T
        ranks.append(realistic_ranks(block, torch.arange(start, start + block.shape[0])))
    rank = torch.cat(ranks)
    return {
        "mrr": float((1 / rank).mean()),
        "recall@1": float((rank <= 1).double().mean()),
        "recall@10": float((rank <= 10).double().mean()),
    }
