"""``PlacementConfig``: which units are ranked and dropped, and where they are — the fields that
``ProfileConfig`` and ``PruneConfig`` share, with their one set of checks.

``k`` has one rule with one message: at least ``MIN_K`` (0 for a profile, which may mark no
layer; 1 for a prune), checked when the config is built, and at most the units left to prune,
checked by ``resolve_k`` once the model is located (still before any forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PCError
from ..model.locate import check_stack, check_unit

RANKINGS = ("cosine", "drop-one")  # implemented in profile (cosine) and pruning.drop_one


@dataclass
class PlacementConfig:
    """``k``: how many units to drop (``None``: half of those the model still has, the paper's
    ratio, 16 of LLaVA-1.5-7B's 32). ``decoder``: dotted path of the block list, skipping the search
    (``find_decoder``). ``stack``: ``"decoder"`` or ``"encoder"`` of an encoder–decoder (a prune
    also takes ``"both"``). ``unit``: attention sub-layers (``"attention"``, the paper) or whole
    blocks (``"block"``: ranked by the residual cosine across the block, ShortGPT's block influence).
    ``ranking``: ``"cosine"`` (the paper's input/output cosine of each unit) or ``"drop-one"`` (the
    output divergence when each unit alone is removed: ``pruning.drop_one``)."""

    MIN_K: ClassVar[int] = 1

    k: int | None = None
    decoder: str | None = None
    stack: str = "decoder"
    unit: str = "attention"
    ranking: str = "cosine"

    def __post_init__(self) -> None:
        check_stack(self.stack)
        check_unit(self.unit)
        if self.ranking not in RANKINGS:
            raise PCError(f"unknown --ranking {self.ranking!r}", f"use one of {', '.join(RANKINGS)}")
        if self.k is not None and self.k < self.MIN_K:
            raise k_out_of_range(self.k, self.MIN_K)


def k_out_of_range(k: int, minimum: int, available: int | None = None, model_name: str = "") -> PCError:
    """The one error for a ``k`` outside ``[minimum, available]``; ``available`` is known once the
    model is located (``resolve_k``), the lower bound already when the config is built."""
    if available is None:
        return PCError(f"--k must be at least {minimum}, got {k}", f"pass --k {minimum} or more (default: half)")
    return PCError(
        f"--k {k} is out of range: {model_name} has {available} attention layers left to prune",
        f"pass --k between {minimum} and {available} (default: half, {default_k(available)})",
    )


def default_k(available: int) -> int:
    """Half of the units left, the paper's ratio (16 of LLaVA-1.5-7B's 32); at least one if any."""
    return max(1, available // 2) if available else 0


def resolve_k(k: int | None, available: int, model_name: str, minimum: int = 0) -> int:
    """``k`` checked against the ``available`` (not yet pruned) units; ``None`` gives half of them,
    the paper's ratio. ``minimum``: 0 for a profile (mark none), 1 for a prune."""
    if minimum > 0 and available == 0:
        raise PCError(f"every attention layer of {model_name} is already pruned", "there is nothing left to prune")
    if k is None:
        return default_k(available)
    if not minimum <= k <= available:
        raise k_out_of_range(k, minimum, available, model_name)
    return k
