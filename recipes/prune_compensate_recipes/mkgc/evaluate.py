"""Filtered link-prediction evaluation, the way PyKEEN does it (and checked against it in tests).

For every test triple (h, r, t) both directions are ranked against all entities: tail prediction
(h, r, ?) and head prediction (?, r, t). Every *other* known true answer (train + valid + test) is
dropped from the comparison (masked, never given a sentinel score that could tie) and the target's own
score is kept, in the scorer's own dtype. Ties get three ranks:
optimistic (1 + #better), pessimistic (#better + #tied, the target included) and realistic (their
mean) — realistic is what we report, because a model giving every entity the same score would look
perfect under optimistic ranking. Metrics: MR, MRR, Hits@1/3/10 for head, tail and both, and per
relation category (1-1, 1-N, N-1, N-N).

Scores are computed and ranked batch by batch: memory is bounded by ``batch_size × num_entities``,
never by the dataset; only one float per query (its ranks) is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from prune_compensate import progress_bar

HITS = (1, 3, 10)
RANK_TYPES = ("realistic", "optimistic", "pessimistic")


class LinkScorer(Protocol):
    """Scores over all entities: ``(B,)`` ids in, ``(B, num_entities)`` scores out (higher = better)."""

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor: ...

    def score_heads(self, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor: ...


@dataclass
class InverseRelationScorer:
    """A tail scorer ``fn(heads, relations)`` that knows inverse relations ``r + R``: head
    prediction (?, r, t) is tail prediction (t, r⁻¹, ?), as the recipes train it."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    num_relations: int

    def score_tails(self, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        return self.fn(heads, relations)

    def score_heads(self, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        return self.fn(tails, relations + self.num_relations)


class FilterIndex:
    """Known answers of (key → entities) queries in sorted CSR form, for batched filtering."""

    def __init__(self, keys: torch.Tensor, answers: torch.Tensor) -> None:
        order = torch.argsort(keys, stable=True)
        self.keys, self.answers = keys[order], answers[order]

    def positions(self, query_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row in batch, answer entity) pairs of every known answer of each query."""
        start = torch.searchsorted(self.keys, query_keys)
        end = torch.searchsorted(self.keys, query_keys, right=True)
        counts = end - start
        rows = torch.repeat_interleave(torch.arange(query_keys.shape[0]), counts)
        first = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts)
        return rows, self.answers[first + torch.arange(int(counts.sum()))]


def filtered_ranks(
    scores: torch.Tensor, targets: torch.Tensor, known: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimistic and pessimistic ranks ``(B,)`` of ``targets`` in ``scores`` ``(B, E)`` after
    filtering ``known`` (row, entity) pairs, the target itself never filtered.

    Scores are compared in their own dtype (a float64 scorer's scores 1e-12 apart stay distinct), and a
    filtered entry is dropped by a mask rather than a sentinel score, so it can neither outrank nor
    tie with any target, a target scoring −∞ included (PyKEEN sets them to NaN for the same reason).
    """
    scores = scores.detach()
    index = torch.arange(scores.shape[0], device=scores.device)
    target_scores = scores[index, targets]
    filtered = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    rows, cols = known
    filtered[rows, cols] = True
    filtered[index, targets] = False
    better = ((scores > target_scores[:, None]) & ~filtered).sum(1)
    tied = ((scores == target_scores[:, None]) & ~filtered).sum(1)  # includes the target itself
    return (better + 1).double(), (better + tied).double()


def _metrics(ranks: torch.Tensor) -> dict[str, float]:
    if ranks.numel() == 0:
        return {"mr": float("nan"), "mrr": float("nan"), **{f"hits@{k}": float("nan") for k in HITS}, "n": 0}
    out = {"mr": float(ranks.mean()), "mrr": float((1.0 / ranks).mean())}
    out.update({f"hits@{k}": float((ranks <= k).double().mean()) for k in HITS})
    out["n"] = int(ranks.numel())
    return out


@dataclass
class LinkPredictionResult:
    """Per-query ranks of both sides; ``to_dict`` gives the metrics (realistic at the top level)."""

    optimistic: dict[str, torch.Tensor]
    pessimistic: dict[str, torch.Tensor]
    relations: torch.Tensor
    categories: list[str] = field(default_factory=list)

    def ranks(self, rank_type: str, side: str) -> torch.Tensor:
        if rank_type == "realistic":
            return self.ranks("optimistic", side) / 2 + self.ranks("pessimistic", side) / 2
        table = self.optimistic if rank_type == "optimistic" else self.pessimistic
        if side == "both":
            return torch.cat([table["head"], table["tail"]])
        return table[side]

    def metrics(self, rank_type: str = "realistic", side: str = "both") -> dict[str, float]:
        return _metrics(self.ranks(rank_type, side))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {side: self.metrics("realistic", side) for side in ("both", "head", "tail")}
        for rank_type in ("optimistic", "pessimistic"):
            out[rank_type] = {side: self.metrics(rank_type, side) for side in ("both", "head", "tail")}
        if self.categories:
            by_category = {}
            relation_category = [self.categories[r] for r in self.relations.tolist()]
            for category in sorted(set(relation_category)):
                keep = torch.tensor([c == category for c in relation_category])
                by_category[category] = {
                    side: _metrics(
                        self.ranks("realistic", side)[keep]
                        if side != "both"
                        else torch.cat([self.ranks("realistic", "head")[keep], self.ranks("realistic", "tail")[keep]])
                    )
                    for side in ("both", "head", "tail")
                }
            out["by_category"] = by_category
        return out


@torch.no_grad()
def evaluate_link_prediction(
    scorer: LinkScorer,
    triples: torch.Tensor,
    all_true: torch.Tensor,
    num_entities: int,
    num_relations: int,
    *,
    batch_size: int = 256,
    categories: list[str] | None = None,
    show_progress: bool = True,
    description: str = "evaluating",
) -> LinkPredictionResult:
    """Filtered ranks of ``triples`` ``(n, 3)`` in both directions, filtered by ``all_true``."""
    r = num_relations
    tail_index = FilterIndex(all_true[:, 0] * r + all_true[:, 1], all_true[:, 2])
    head_index = FilterIndex(all_true[:, 2] * r + all_true[:, 1], all_true[:, 0])
    optimistic: dict[str, list[torch.Tensor]] = {"head": [], "tail": []}
    pessimistic: dict[str, list[torch.Tensor]] = {"head": [], "tail": []}
    with progress_bar(show_progress) as progress:
        task = progress.add_task(description, total=int(triples.shape[0]))
        for start in range(0, triples.shape[0], batch_size):
            batch = triples[start : start + batch_size]
            h, rel, t = batch[:, 0], batch[:, 1], batch[:, 2]
            tail_scores = scorer.score_tails(h, rel).cpu()
            opt, pess = filtered_ranks(tail_scores, t, tail_index.positions(h * r + rel))
            optimistic["tail"].append(opt)
            pessimistic["tail"].append(pess)
            head_scores = scorer.score_heads(rel, t).cpu()
            opt, pess = filtered_ranks(head_scores, h, head_index.positions(t * r + rel))
            optimistic["head"].append(opt)
            pessimistic["head"].append(pess)
            progress.advance(task, int(batch.shape[0]))
    if triples.shape[0] and tail_scores.shape[1] != num_entities:
        raise ValueError(f"scorer returned {tail_scores.shape[1]} scores per query, expected {num_entities}")
    return LinkPredictionResult(
        optimistic={k: torch.cat(v) if v else torch.empty(0) for k, v in optimistic.items()},
        pessimistic={k: torch.cat(v) if v else torch.empty(0) for k, v in pessimistic.items()},
        relations=triples[:, 1].clone(),
        categories=categories or [],
    )


def metrics_document(
    test: LinkPredictionResult, valid: LinkPredictionResult | None = None, **meta: Any
) -> dict[str, Any]:
    """The ``metrics.json`` every MKGC run writes: ``{"test": {"both"|"head"|"tail": {mr, mrr,
    hits@1, hits@3, hits@10}, "optimistic", "pessimistic", "by_category"}, "valid": {...}, ...meta}``
    (realistic ranks at the top level), so baselines and recipes line up on one table. The package
    versions that produced it are recorded under ``versions``."""
    document: dict[str, Any] = {"schema": 1, "test": test.to_dict()}
    if valid is not None:
        document["valid"] = valid.to_dict()
    document.update(meta)
    document.setdefault("versions", package_versions())
    return document


def package_versions() -> dict[str, str]:
    """Versions of what produced a result (the installed distributions, torch, Python)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("prune-compensate", "prune-compensate-recipes", "transformers", "pykeen"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def metrics_table(rows: dict[str, dict[str, Any]], title: str = "Link prediction (filtered, realistic ranks)"):  # noqa: ANN201
    """A rich table with one row per run: MR, MRR, Hits@1/3/10 of the test split (both sides)."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("run", "MR", "MRR", "Hits@1", "Hits@3", "Hits@10"):
        table.add_column(column, justify="right" if column != "run" else "left")
    for name, document in rows.items():
        both = document["test"]["both"]
        table.add_row(name, f"{both['mr']:.1f}", f"{both['mrr']:.4f}", *[f"{both[f'hits@{k}']:.4f}" for k in HITS])
    return table


def check_baselines(root: str | Path | None) -> None:
    """``--baselines DIR`` must be a folder, checked before a run that may take an hour."""
    if root is not None and not Path(root).is_dir():
        from prune_compensate import PCError

        raise PCError(f"--baselines {root} is not a folder", "pass a folder of <model>_<dataset>.json results")


def committed_baselines(
    dataset: str, root: str | Path | None, models: tuple[str, ...] = ("transe", "rotate")
) -> dict[str, dict[str, Any]]:
    """The baseline results in the folder ``root`` (``<model>_<dataset>.json`` files, as
    ``benchmarks/mkgc_baselines.py`` writes them; a checkout commits them under
    ``benchmarks/elmm/results`` and ``benchmarks/tofu/results``), keyed ``"<model> <dataset>
    (baseline)"`` for a recipe's results table. ``root`` is what the user passed
    (``pc run … --baselines DIR``); ``None`` shows none. Missing files are skipped."""
    import json

    if root is None:
        return {}
    rows = {}
    for name in models:
        path = Path(root) / f"{name}_{dataset}.json"
        if path.is_file():
            rows[f"{name} {dataset} (baseline)"] = json.loads(path.read_text(encoding="utf-8"))
    return rows
