"""A task score for the heal's step selection: retrieval MRR on a user's (query, document) pairs.

Why a module of its own: the heal (``heal.py``) only needs "higher is better, given the model".
The pairs, the embedding and the metric come from ``scoring``, which ``pc eval --pairs`` uses too,
so the MRR that selects a step is computed exactly as the evaluation reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import PCError
from ..scoring.embedding import embed
from ..scoring.pairs import read_pairs
from ..scoring.retrieval import queries_and_documents, retrieval_metrics


def pairs_mrr(
    tokenizer: Any, source: str, pooling: str = "mean", batch_size: int = 64, max_length: int = 128
) -> Callable[[nn.Module], float]:
    """A scorer: the MRR of ``model`` on the pairs in ``source`` (every other document a negative,
    realistic ranks for ties). The pairs are read once, here, so a bad file fails before any fit."""
    pairs = read_pairs(source)
    queries, documents = queries_and_documents(pairs)
    if len(documents) < 2:
        raise PCError(f"{source} has fewer than two documents to rank", "add (query, document) pairs")

    def score(model: nn.Module) -> float:
        embedded = [embed(model, tokenizer, texts, batch_size, max_length, pooling) for texts in (queries, documents)]
        return retrieval_metrics(*embedded)["mrr"]

    return score
