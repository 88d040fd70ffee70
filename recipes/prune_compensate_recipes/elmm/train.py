"""Training: grouped BCE over all entities, accelerate, resumable safetensors state, early stopping.

One forward per distinct training query (e, r) (inverse relations included), with all its known
tails as targets. Averaged per triple, this is exactly the paper's per-triple loss (eq. 15, see
``modules.elmm_bce_loss``): a triple's negatives are all entities but the known tails of its
query, plus the query's own entity as a hard negative, so the negative term is shared by all
triples of a query and ``grouped_bce_loss`` weights it by the number of tails (tested equal).

The loop's shared parts (validation schedule, early stopping, budget, progress bar, resumable
state) are ``training.TrainingLoop``. The training state (trainable weights, AdamW moments, RNG,
progress, the best weights so far) is written as safetensors + JSON every ``checkpoint_every``
optimizer steps, atomically; rerunning
the same command resumes from it and ends with the weights an uninterrupted run ends with
(batches come from a permutation seeded per epoch, so skipping consumed batches needs no RNG).
No pickle anywhere (accelerate's ``save_state`` pickles the optimizer, hence our own format).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..training import LoopLimits, LoopProgress, TrainingLoop

STATE_DIR = "train_state"


@dataclass
class TrainQueries:
    """Distinct queries ``keys`` ``(Q, 2)`` = (entity, relation) with their answers in CSR form."""

    keys: torch.Tensor
    offsets: torch.Tensor
    answers: torch.Tensor

    @classmethod
    def from_triples(cls, triples: torch.Tensor, num_relations: int) -> TrainQueries:
        """``triples`` ``(n, 3)`` over ``2R`` relations (already with inverses)."""
        key = triples[:, 0] * (2 * num_relations) + triples[:, 1]
        order = torch.argsort(key * (triples[:, 2].max() + 1) + triples[:, 2])
        key, tails = key[order], triples[order, 2]
        unique, counts = torch.unique_consecutive(key, return_counts=True)
        keys = torch.stack([unique // (2 * num_relations), unique % (2 * num_relations)], dim=1)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        return cls(keys, offsets, tails)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def targets(self, index: torch.Tensor, num_entities: int) -> torch.Tensor:
        """``(B, |E|)`` bool: the known answers of each query in ``index``."""
        out = torch.zeros(index.shape[0], num_entities, dtype=torch.bool)
        for row, q in enumerate(index.tolist()):
            out[row, self.answers[self.offsets[q] : self.offsets[q + 1]]] = True
        return out


def grouped_bce_loss(logits: torch.Tensor, positives: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Per-triple mean of eq. 15 for ``(B, |E|)`` ``logits`` of B queries with ``positives``
    ``(B, |E|)`` bool (every known answer) and query entities ``heads`` ``(B,)``.

    For query q with answer set T_q and negatives N_q = (all \\ T_q) ∪ {h_q} \\ {t}: the triples'
    losses sum to Σ_t −log σ(s_t) + |T_q| · mean_{n∈N_q} −log(1 − σ(s_n)); divided by Σ_q |T_q|."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    counts = positives.sum(1).to(logits.dtype)
    positive_term = -(torch.nn.functional.logsigmoid(logits) * positives).sum(1)
    negative_log = -torch.nn.functional.logsigmoid(-logits)  # −log(1 − σ(s))
    outside = (negative_log * ~positives).sum(1)
    n_outside = (~positives).sum(1).to(logits.dtype)
    self_loop = positives[rows, heads]  # the query's entity is itself one of its answers
    # triples whose target is not the head: negatives = (all \ T_q) ∪ {h}
    with_head = (outside + torch.where(self_loop, negative_log[rows, heads], 0.0)) / (
        n_outside + self_loop.to(logits.dtype)
    ).clamp(min=1)
    # the self-loop triple (t = h): its own target is never a negative, so negatives = all \ T_q
    without_head = outside / n_outside.clamp(min=1)
    negative_sum = torch.where(self_loop, (counts - 1) * with_head + without_head, counts * with_head)
    return (positive_term + negative_sum).sum() / counts.sum()


def grouped_softmax_loss(logits: torch.Tensor, positives: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Per-triple mean of 1-N softmax cross-entropy (beyond the paper's BCE): triple (q, t) scores
    −log softmax of s_t against the same negatives N_q as ``grouped_bce_loss`` — every entity but
    the query's known answers, plus the query's own entity as a hard negative (unless it is the
    target). Where BCE averages over all |E| negatives, softmax weights each by its probability, so
    the gradient lands on the negatives ranked near the target: those that decide the MRR.
    ``logits`` and ``positives`` ``(B, |E|)``, ``heads`` ``(B,)``."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    lse_outside = torch.logsumexp(logits.masked_fill(positives, float("-inf")), dim=1)  # (B,)
    # the head joins the negatives of its query's other answers; it is in the sum already unless known
    head_logit = logits[rows, heads]
    lse_with_head = torch.where(positives[rows, heads], torch.logaddexp(lse_outside, head_logit), lse_outside)
    query, target = positives.nonzero(as_tuple=True)  # one entry per (q, t) triple: no more (B, |E|) tensors
    lse = torch.where(target == heads[query], lse_outside[query], lse_with_head[query])
    score = logits[query, target]
    return (torch.logaddexp(score, lse) - score).mean()


LOSSES = {"bce": grouped_bce_loss, "softmax": grouped_softmax_loss}


def epoch_order(num_queries: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_queries, generator=generator)


def num_optimizer_steps(num_queries: int, batch_size: int, grad_accum: int, epochs: int) -> int:
    return epochs * math.ceil(math.ceil(num_queries / batch_size) / grad_accum)


@dataclass
class TrainOutcome:
    progress: LoopProgress
    stopped_by: str
    mean_loss_first: float
    mean_loss_last: float


def train(
    model: torch.nn.Module,
    queries: TrainQueries,
    make_batch: Callable[[torch.Tensor], tuple[Any, torch.Tensor, torch.Tensor]],
    evaluate_valid: Callable[[], float],
    config: Any,
    state_dir: Path,
    *,
    show_progress: bool = True,
    stop_after_steps: int | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Run the loop. ``make_batch(query_index)`` → (model inputs, positives, heads);
    ``evaluate_valid()`` → valid MRR of the current weights. ``config`` is the ``train`` section.
    ``stop_after_steps`` simulates a kill after that many optimizer steps (tests). ``fingerprint``
    (of the whole recipe config) is saved with the training state and checked before resuming."""
    from accelerate import Accelerator

    try:
        accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum)
    except ValueError as err:  # accelerate's state is per process: one precision per process
        from prune_compensate import PCError

        raise PCError(
            f"accelerate is already initialised in this process with other settings ({err})".replace("\n", " "),
            f"run train.mixed_precision={config.mixed_precision} in a fresh process",
        ) from err
    torch.manual_seed(config.seed)
    head_lr = config.head_lr or config.lr
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    others = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    groups = [g for g in ({"params": backbone, "lr": config.lr}, {"params": others, "lr": head_lr}) if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    # accelerate autocasts the prepared model's forward for good; undo that and autocast only the
    # training forward, so validation and evaluation run at ``eval.mixed_precision``
    raw = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    batches_per_epoch = math.ceil(len(queries) / config.batch_size)
    total_steps = num_optimizer_steps(len(queries), config.batch_size, config.grad_accum, config.epochs)
    eval_every = config.eval_every or math.ceil(batches_per_epoch / config.grad_accum)
    limits = LoopLimits(
        epochs=config.epochs,
        eval_every=eval_every,
        patience=config.patience,
        max_minutes=config.max_minutes,
        checkpoint_every=config.checkpoint_every,
        save_on_eval=False,
        validate_at_start=config.validate_at_start,
    )

    def validate() -> float:
        model.eval()
        mrr = evaluate_valid()
        model.train()
        return mrr

    loop = TrainingLoop(
        raw,
        optimizer,
        limits,
        state_dir if config.resume else None,
        validate,
        total_steps=total_steps,
        show_progress=show_progress,
        save=accelerator.is_main_process,
        log=accelerator.print,
        fingerprint=fingerprint,
    )
    with loop:
        while loop.next_epoch():
            order = epoch_order(len(queries), config.seed, loop.progress.epoch)
            batches = [order[b * config.batch_size : (b + 1) * config.batch_size] for b in range(batches_per_epoch)]
            model.train()
            for index in loop.remaining(batches):
                # under `accelerate launch` each process takes its share of the batch
                index = index[accelerator.process_index :: accelerator.num_processes]
                inputs, positives, heads = make_batch(index)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        logits = model(*inputs)
                    loss = LOSSES[config.loss](logits.float(), positives.to(logits.device), heads.to(logits.device))
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                if not accelerator.sync_gradients:
                    continue
                epoch_end = loop.progress.batches_done == batches_per_epoch
                if loop.step_done(float(loss.detach()), epoch_end=epoch_end):
                    break
                if stop_after_steps is not None and loop.progress.step >= stop_after_steps:
                    loop.interrupted = True
                    return TrainOutcome(loop.progress, "interrupted", float("nan"), float("nan"))
    first, last = loop.loss_window()
    return TrainOutcome(loop.progress, loop.progress.stopped_by, first, last)
