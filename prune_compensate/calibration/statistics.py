"""Streaming statistics over calibration tokens: running float64 sums, never stored activations.

Every statistic takes the tokens of one batch as ``(N, D)`` rows (padding already masked out by
the caller) and folds them into sums whose size does not depend on how many samples stream
through. That keeps calibration at O(D) (cosine) or O(D²) (second moments) memory per layer,
whatever ``--n-samples`` is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def _rows64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)


@dataclass
class CosineMoments:
    """Running count, sum and sum of squares of the per-token cosine between two streams.

    ``update(a, b)``: ``a`` and ``b`` are ``(N, D)`` rows of the residual before and after a
    sub-layer. Mean and (population) std follow from the three sums.
    """

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.numel() == 0:
            return
        cos = torch.nn.functional.cosine_similarity(_rows64(a), _rows64(b), dim=-1, eps=1e-12)
        self.count += int(cos.numel())
        self.total += float(cos.sum())
        self.total_sq += float((cos * cos).sum())

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    @property
    def std(self) -> float:
        if not self.count:
            return float("nan")
        var = max(self.total_sq / self.count - self.mean**2, 0.0)
        return math.sqrt(var)

    @property
    def nbytes(self) -> int:
        return 3 * 8


@dataclass
class CrossMoments:
    """Running first and second moments of a regression pair (x → e), in float64.

    ``update(x, e)`` with ``x`` ``(N, Din)`` and ``e`` ``(N, Dout)`` accumulates
    ``XᵀX`` (Din×Din), ``XᵀE`` (Din×Dout), ``Σx``, ``Σe`` and the token count: all
    that a (ridge, affine) least-squares fit of ``e ≈ x W + b`` needs, at O(D²) memory.
    """

    dim_in: int
    dim_out: int
    count: int = 0
    gram: torch.Tensor = field(init=False)
    cross: torch.Tensor = field(init=False)
    sum_x: torch.Tensor = field(init=False)
    sum_e: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.dim_in, self.dim_in, dtype=torch.float64)
        self.cross = torch.zeros(self.dim_in, self.dim_out, dtype=torch.float64)
        self.sum_x = torch.zeros(self.dim_in, dtype=torch.float64)
        self.sum_e = torch.zeros(self.dim_out, dtype=torch.float64)

    def update(self, x: torch.Tensor, e: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        x64, e64 = _rows64(x).cpu(), _rows64(e).cpu()
        self.gram += x64.T @ x64
        self.cross += x64.T @ e64
        self.sum_x += x64.sum(0)
        self.sum_e += e64.sum(0)
        self.count += int(x64.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.gram, self.cross, self.sum_x, self.sum_e))


@dataclass
class PositionalMeans:
    """Per-position running means of a pair of streams, for the paper's Theorem 1.

    ``update(x, e, positions)``: ``x`` ``(N, Din)``, ``e`` ``(N, Dout)``, ``positions`` ``(N,)``
    integer position of each token counted from the first non-padding token of its sample (so
    left and right padding align the same way). Positions at or past ``max_positions`` are
    dropped. Memory is O(max_positions × D), fixed up front, independent of the sample count.
    """

    dim_in: int
    dim_out: int
    max_positions: int
    sum_x: torch.Tensor = field(init=False)
    sum_e: torch.Tensor = field(init=False)
    counts: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.sum_x = torch.zeros(self.max_positions, self.dim_in, dtype=torch.float64)
        self.sum_e = torch.zeros(self.max_positions, self.dim_out, dtype=torch.float64)
        self.counts = torch.zeros(self.max_positions, dtype=torch.float64)

    def update(self, x: torch.Tensor, e: torch.Tensor, positions: torch.Tensor) -> None:
        keep = positions < self.max_positions
        if not bool(keep.any()):
            return
        pos = positions[keep].cpu().long()
        self.sum_x.index_add_(0, pos, _rows64(x)[keep.cpu()].cpu())
        self.sum_e.index_add_(0, pos, _rows64(e)[keep.cpu()].cpu())
        self.counts.index_add_(0, pos, torch.ones(pos.shape[0], dtype=torch.float64))

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Din)`` and ``(P, Dout)`` means over the positions seen at least once."""
        seen = self.counts > 0
        denom = self.counts[seen].unsqueeze(1)
        return self.sum_x[seen] / denom, self.sum_e[seen] / denom

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.sum_x, self.sum_e, self.counts))
