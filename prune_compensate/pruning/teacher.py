"""The original model's next-token distributions, computed once per calibration sample and kept small.

Why: a heal by KL distillation ran the original model on every batch it trained on: one full
forward, about a third of each step, although the original's outputs never change. Kept whole, its
log-probabilities are (tokens × vocabulary): 128 samples of 256 tokens on a 49k vocabulary are 3 GB
even in float16. Kept as each position's top-k log-probabilities plus the log of the mass outside
them, a distribution over k + 1 bins, they are 12 bytes per position per kept token.

The loss is then the KL between the two distributions coarsened to those k + 1 bins. Coarsening
never increases a divergence, so this is a lower bound on the full KL(original ‖ pruned), equal to
it when the pruned model spreads its tail mass over the tail tokens in the original's proportions;
what it does not see is how the pruned model shares out the mass the original puts on its long tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..calibration.encode import BatchEncoder, batches, positions_mask, real_tokens
from ..calibration.sources import CalibrationSample
from ..errors import PCError
from ..progress import WorkProgress, stage_or_bar
from .error import FinalOutputs

LOG_TAIL_FLOOR = -80.0  # e^-80: no mass outside the top k (k = vocabulary) without 0 · -inf = nan


def _log_tail(log_p: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``(N,)`` log of the mass of ``log_p`` ``(N, V)`` outside the tokens ``ids`` ``(N, k)``."""
    return torch.logsumexp(log_p.scatter(-1, ids, float("-inf")), dim=-1).clamp(min=LOG_TAIL_FLOOR)


@dataclass
class TopKTargets:
    """One sample's (or one batch's, concatenated) teacher distributions over N real positions:
    ``log_probs`` ``(N, k)`` of the ``ids`` ``(N, k)`` it ranks highest, ``log_tail`` ``(N,)`` the
    log of the rest."""

    log_probs: torch.Tensor
    ids: torch.Tensor
    log_tail: torch.Tensor

    @staticmethod
    def of_logits(logits: torch.Tensor, k: int) -> TopKTargets:
        """The top-k bins of the distributions ``softmax(logits)``, ``logits`` ``(N, V)``."""
        log_p = torch.log_softmax(logits.float(), dim=-1)
        top, ids = log_p.topk(min(k, log_p.shape[-1]), dim=-1)
        return TopKTargets(top, ids, _log_tail(log_p, ids))

    @staticmethod
    def cat(parts: list[TopKTargets]) -> TopKTargets:
        return TopKTargets(
            torch.cat([p.log_probs for p in parts]),
            torch.cat([p.ids for p in parts]),
            torch.cat([p.log_tail for p in parts]),
        )


def coarse_kl(targets: TopKTargets, logits: torch.Tensor) -> torch.Tensor:
    """Mean over the N positions of KL(teacher ‖ student) on the k + 1 bins of ``targets``;
    ``logits`` ``(N, V)`` are the student's at the same positions, in the same order."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    ids = targets.ids.to(log_q.device)
    q_top = log_q.gather(-1, ids)
    q_tail = _log_tail(log_q, ids)
    p_top, p_tail = targets.log_probs.to(log_q.device), targets.log_tail.to(log_q.device)
    kl = (p_top.exp() * (p_top - q_top)).sum(-1) + p_tail.exp() * (p_tail - q_tail)
    return kl.mean()


class TeacherCache:
    """The teacher's top-k targets of every sample in a list, by the sample object itself (so any
    batching or order of those objects finds its rows)."""

    def __init__(self, targets: dict[int, TopKTargets]) -> None:
        self._targets = targets

    @staticmethod
    def build(
        teacher: Callable[[dict[str, torch.Tensor]], FinalOutputs],
        encoder: BatchEncoder,
        samples: list[CalibrationSample],
        batch_size: int,
        k: int,
        show_progress: bool = False,
        work: WorkProgress | None = None,
    ) -> TeacherCache:
        """One no-grad teacher pass over ``samples``; ``teacher(inputs)`` runs the original model."""
        if k < 1:
            raise PCError(f"the teacher's top-k must be at least 1, got {k}", "pass e.g. --heal-teacher-top-k 64")
        targets: dict[int, TopKTargets] = {}
        with torch.no_grad(), stage_or_bar(work, "teacher top-k", len(samples), show_progress) as advance:
            for batch in batches(samples, batch_size):
                inputs = encoder(batch)
                outputs = teacher(inputs)
                if outputs.logits is None:
                    raise PCError("the kl heal objective needs a model with logits", "use --heal-objective hidden")
                mask = positions_mask(real_tokens(inputs), outputs.logits.shape[1]).to(outputs.logits.device).bool()
                for sample, row, row_mask in zip(batch, outputs.logits, mask, strict=True):
                    targets[id(sample)] = TopKTargets.of_logits(row[row_mask], k)
                advance(len(batch))
        return TeacherCache(targets)

    def for_batch(self, batch: list[CalibrationSample]) -> TopKTargets:
        """The rows of ``batch``'s samples in the order ``logits[mask]`` lists a batch's positions
        (row-major: sample by sample, each sample's real positions in order)."""
        return TopKTargets.cat([self._targets[id(sample)] for sample in batch])
