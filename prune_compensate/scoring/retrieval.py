"""Retrieval metrics over (query, document) pairs: every other document is a negative; MRR,
recall@1 and recall@10 with realistic ranks for ties, as PyKEEN ranks.

Shared by ``pc eval --pairs`` and the heal's step selection (``pruning.task_score``), so the MRR
that selects a heal step is the one the evaluation reports.
"""

from __future__ import annotations

import torch


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
