"""Personalised PageRank (PPR): a training-free link-prediction baseline for inductive graphs.

The answer to (h, r, ?) is scored by the PPR of every entity from h on the observed graph
(training triples, edges taken in both directions, relations ignored; a repeated pair counts once
per triple). On the GraIL inductive splits this structure-only score is close to the best trained
models (Shomer et al. 2024, arXiv 2406.11898), which makes it the baseline a zero-shot model has
to beat there.

``x ← teleport · e_h + (1 − teleport) · x P`` with ``P`` the row-normalised adjacency, iterated
for a whole batch of queries at once (``(B, N)`` dense times ``(N, N)`` sparse, float64) until the
largest change is below ``tol``. A node without edges sends its mass back to the query entity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import KGDataset


@dataclass
class PPRScorer:
    """A ``LinkScorer`` over ``dataset``'s training graph; ``teleport`` = 1 − damping (0.15 is
    PageRank's customary 0.85 damping)."""

    dataset: KGDataset
    teleport: float = 0.15
    max_iterations: int = 100
    tol: float = 1e-10

    def __post_init__(self) -> None:
        n = self.dataset.num_entities
        train = self.dataset.train
        src = torch.cat([train[:, 0], train[:, 2]])
        dst = torch.cat([train[:, 2], train[:, 0]])
        degree = torch.bincount(src, minlength=n).double()
        values = 1.0 / degree[src]
        # transposed transition matrix: (Pᵀ)[dst, src] = 1 / deg(src), so x P = (Pᵀ xᵀ)ᵀ
        self.transition_t = torch.sparse_coo_tensor(torch.stack([dst, src]), values, (n, n)).coalesce()
        self.dangling = degree == 0

    def ppr(self, sources: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` PPR vectors personalised to ``sources`` ``(B,)`` (each row sums to 1)."""
        n = self.dataset.num_entities
        restart = torch.zeros(sources.shape[0], n, dtype=torch.float64)
        restart[torch.arange(sources.shape[0]), sources] = 1.0
        x = restart.clone()
        for _ in range(self.max_iterations):
            spread = torch.sparse.mm(self.transition_t, x.T).T
            lost = x[:, self.dangling].sum(1, keepdim=True)  # mass on nodes with no edge
            new = self.teleport * restart + (1 - self.teleport) * (spread + lost * restart)
            change = float((new - x).abs().max())
            x = new
            if change < self.tol:
                break
        return x

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        return self.ppr(heads.cpu())

    def score_heads(self, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        return self.ppr(tails.cpu())
