"""Heal: refine the fitted replacement maps by distillation from the original model.

Why: each map is fitted in closed form to its *local* target; the model's output is what users
consume. Healing trains the replacement maps (optionally also the norms, and the MLPs, of the blocks
they sit in) so that the pruned model's output matches the original's on the calibration samples:

* LMs / VLMs (``"kl"``, the default for models with an LM head): KL(original ‖ pruned) of the
  next-token distributions over real tokens;
* ``"hidden"`` (the default for encoders): relative squared error of the final hidden states over
  real tokens;
* ``"embedding"``: 1 − cosine of the pooled, normalised sentence embeddings (mean over real tokens);
* ``"similarity"``: mean squared difference of the batch's pairwise cosines of those embeddings
  (the geometry a retrieval ranks by, free to rotate the space).

For encoders the pooled embedding is what retrieval consumes, yet matching every token's state
serves it better: on MiniLM (K = 3, ``benchmarks/core/heal_minilm.py``) the hidden objective kept 0.944
of the retrieval MRR against 0.924 for the embedding objective, with a lower held-out error (0.183
vs 0.272 of no compensation) — one pooled vector per sample is a much thinner signal than every
token's state, and matching the states also matches their mean. That holds while the maps can match
the states: at K = 5 of 6 (one attention left; the hidden objective stops at 0.33 × no compensation)
the embedding objective keeps 0.881 of the MRR against 0.615 for the hidden one and 0.625 for no
compensation, spending the maps on the one vector retrieval reads rather than on per-token detail
that pooling averages away (``heal_minilm.py --k 5 --calib mix``). The similarity objective did worse
still (0.913 at K = 3, 0.825 at K = 4, against 0.861 for hidden at K = 4): a 16 × 16 matrix of
cosines per batch is thinner again, and the states it leaves free drift (held-out error 0.37 × none).

The teacher is the same model with the original cores swapped back in (``CoreSwap``), run under
``no_grad`` on each batch, so memory stays bounded by one batch; with ``teacher_top_k`` it runs once
per sample before training instead, and only its top-k next-token distributions are kept
(``teacher.py``: on SmolLM2, 4 steps of 16 prose samples took 92 s against 116 s, that one pass
included; ``benchmarks/core/heal_step_time.py``). Every ``eval_every`` steps the
objective is measured on held-out calibration samples (never trained on); the weights with the
lowest held-out loss are kept, and training stops after ``patience`` evaluations without a gain.

``select_pairs`` selects on the user's task instead: a (query, document) pairs file of theirs, kept
apart from the pairs they report on, scored by retrieval MRR (``scoring.retrieval``) at every
evaluation; the step kept is the one with the highest MRR, the start itself (step 0) included, so a
heal never keeps maps that rank that task worse than its start. Why: on MiniLM the held-out hidden-state
error keeps falling long after retrieval has stopped gaining (``benchmarks/core/heal_minilm.py``), so the
lowest-loss step is not the best one for the task users run. The pairs must be drawn like the ones
reported on: on MiniLM, pairs of entities that the calibration text names kept steps that did not
help entities it never names.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..calibration.encode import BatchEncoder, batches, positions_mask, real_tokens
from ..calibration.sources import CalibrationSample
from ..errors import PCError
from ..model.locate import DecoderLayout, has_lm_head, is_norm
from ..progress import WorkProgress, stage_or_bar
from ..scoring.embedding import mean_pool
from .compensation import LinearCompensation
from .error import FinalOutputs, forward_final
from .swap import CoreSwap
from .teacher import TeacherCache, coarse_kl

OBJECTIVES = ("auto", "embedding", "kl", "hidden", "similarity")
SCHEDULES = ("constant", "cosine")


@dataclass
class HealConfig:
    """``steps``: optimiser steps (0 = no heal); ``lr``: Adam learning rate; ``train_norms``: also
    train the norms of the blocks that hold a replacement; ``train_mlps``: also train the rest of
    those blocks, what is neither the map nor a norm (the MLP: per-token capacity the maps lack,
    at 3 × hidden × intermediate parameters a block on Llama-like models), at ``mlp_lr``:
    pretrained weights of about 0.02 would move by a twentieth a step at the maps' 1e-3.
    ``teacher_top_k`` (kl objective only): above 0, the original model runs once per sample before
    training and its next-token distributions are kept as their top-k bins plus the rest
    (``teacher.py``); the loss is then the KL on those k + 1 bins. 0: the original runs on every
    batch and the loss is the full KL."""

    steps: int = 0
    lr: float = 3e-4
    batch_size: int = 16
    eval_every: int = 25
    patience: int = 4
    objective: str = "auto"
    train_norms: bool = False
    train_mlps: bool = False
    mlp_lr: float = 1e-4
    seed: int = 0
    select_pairs: str | None = None
    pooling: str | None = None
    schedule: str = "constant"
    teacher_top_k: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise PCError(f"--heal-steps must be non-negative, got {self.steps}", "pass e.g. --heal-steps 300")
        if self.objective not in OBJECTIVES:
            raise PCError(f"unknown heal objective {self.objective!r}", f"use one of {', '.join(OBJECTIVES)}")
        if self.lr <= 0 or self.mlp_lr <= 0 or self.batch_size < 1 or self.eval_every < 1:
            raise PCError("heal lr, batch size and eval interval must be positive", "fix the heal options")
        if self.schedule not in SCHEDULES:
            raise PCError(f"unknown heal schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        if self.teacher_top_k < 0:
            raise PCError(
                f"--heal-teacher-top-k must be non-negative, got {self.teacher_top_k}", "pass 0 (off) or e.g. 64"
            )
        if self.pooling not in (None, "mean", "cls"):
            raise PCError(f"unknown heal pooling {self.pooling!r}", "use mean or cls")


@dataclass
class HealReport:
    """The held-out curve ``[(step, loss)]`` (step 0 = before healing), the step kept, the cost;
    with ``select_pairs``, also ``task_curve`` ``[(step, MRR)]``, which chose ``best_step``."""

    objective: str
    curve: list[tuple[int, float]] = field(default_factory=list)
    task_curve: list[tuple[int, float]] = field(default_factory=list)
    selected_by: str = "held-out loss"
    last_lr: float = 0.0
    best_step: int = 0
    steps_run: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    trained_parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(mean_pool(hidden, mask).float(), dim=-1)


def objective_loss(objective: str, teacher: FinalOutputs, student: FinalOutputs, mask: torch.Tensor) -> torch.Tensor:
    """The heal loss of one batch (mean over sequences or real tokens)."""
    mask = positions_mask(mask, student.hidden.shape[1]).to(student.hidden.device).bool()
    if objective == "embedding":
        a, b = _pooled(teacher.hidden, mask), _pooled(student.hidden, mask)
        return (1 - (a * b).sum(-1)).mean()
    if objective == "similarity":  # the batch's pairwise cosines: the geometry retrieval ranks by
        a, b = _pooled(teacher.hidden, mask), _pooled(student.hidden, mask)
        return ((b @ b.T - a @ a.T) ** 2).mean()
    if objective == "kl":
        if teacher.logits is None or student.logits is None:
            raise PCError("the kl heal objective needs a model with logits", "use --heal-objective hidden")
        log_p = torch.log_softmax(teacher.logits[mask].float(), dim=-1)
        log_q = torch.log_softmax(student.logits[mask].float(), dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    a, b = teacher.hidden[mask].float(), student.hidden[mask].float()
    return ((b - a) ** 2).sum() / (a**2).sum().clamp(min=1e-12)


class TrainedBase:
    """The base model's parameters a heal trains beside the maps (``train_norms``, ``train_mlps``)
    and their values before it.

    Why: the teacher is the same model with the original cores swapped back in, so it shares these
    parameters; trained in place, they would move the teacher with the student, and the error
    report's reference and its other variants (none, lstsq) would run with healed ones. The teacher, the
    reference and every variant but the heal run inside ``as_original()``."""

    def __init__(self, params: list[nn.Parameter], norms: list[bool]) -> None:
        self.params = params
        self.norms = norms  # which of ``params`` are norm weights (the rest: MLP weights)
        self.original = [p.detach().clone() for p in params]

    @contextmanager
    def as_original(self) -> Iterator[None]:
        """The original values in place for the block, the current (trained) ones back after it."""
        if not self.params:
            yield
            return
        current = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, value in zip(self.params, self.original, strict=True):
                param.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(self.params, current, strict=True):
                    param.copy_(value)


def trained_base(layout: DecoderLayout, layers: list[int], config: HealConfig) -> TrainedBase:
    """The base parameters a heal trains in the blocks holding a replacement, each marked as a norm
    weight or not: their norms (``config.train_norms``) and everything else in them but the core
    (``config.train_mlps``). Found by structure, so the core may be the original or a map: either
    is left out by name."""
    params: list[nn.Parameter] = []
    is_norm_weight: list[bool] = []
    if layout.unit == "block":  # a replaced block keeps nothing of its own
        return TrainedBase(params, is_norm_weight)
    for i in layers:
        block, core = layout.blocks[i], layout.core_names[i]
        norms = {id(p) for m in block.modules() if is_norm(m) for p in m.parameters(recurse=False)}
        for name, param in block.named_parameters():
            if core is not None and (name == core or name.startswith(core + ".")):
                continue
            if config.train_norms if id(param) in norms else config.train_mlps:
                params.append(param)
                is_norm_weight.append(id(param) in norms)
    return TrainedBase(params, is_norm_weight)


def resolve_objective(model: nn.Module, objective: str) -> str:
    if objective != "auto":
        return objective
    return "kl" if has_lm_head(model) else "hidden"


def check_teacher_top_k(model: nn.Module, config: HealConfig) -> None:
    """Refuse ``teacher_top_k`` unless the heal's objective (resolved for ``model``) is kl: only
    next-token distributions are cached. Cheap, so callers run it before any forward pass."""
    objective = resolve_objective(model, config.objective)
    if config.steps and config.teacher_top_k and objective != "kl":
        raise PCError(
            f"--heal-teacher-top-k keeps next-token distributions; the {objective} objective has none",
            "drop --heal-teacher-top-k or use --heal-objective kl",
        )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Student:
    """The maps (and base parameters) being healed inside ``model``, and the teacher: the same model
    with its original cores and parameters (``swap.restore`` / ``base.as_original``), so no second
    copy is held."""

    model: nn.Module
    layout: DecoderLayout
    swap: CoreSwap
    modules: dict[int, LinearCompensation]
    base: TrainedBase
    objective: str
    cache: TeacherCache | None = None

    def teacher(self, inputs: dict[str, torch.Tensor]) -> FinalOutputs:
        """The original model's outputs on one batch: original cores and parameters, no gradients."""
        with torch.no_grad(), self.base.as_original():
            self.swap.restore()
            try:
                return forward_final(self.model, self.layout, inputs)
            finally:
                self.swap.install(self.modules)

    def loss(self, batch: list[CalibrationSample], inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The objective between the teacher's and the student's final outputs on one batch;
        gradients flow through the student only. With a teacher cache, the teacher does not run."""
        mask = real_tokens(inputs)
        if self.cache is None:
            teacher = self.teacher(inputs)
            return objective_loss(self.objective, teacher, forward_final(self.model, self.layout, inputs), mask)
        student = forward_final(self.model, self.layout, inputs)
        assert student.logits is not None  # the cache is built for the kl objective only
        mask = positions_mask(mask, student.logits.shape[1]).to(student.logits.device).bool()
        return coarse_kl(self.cache.for_batch(batch), student.logits[mask])

    def held_out_loss(self, encoder: BatchEncoder, held: list[CalibrationSample], batch_size: int) -> float:
        """Mean loss over ``held`` (weighted by batch size), no gradients."""
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in batches(held, batch_size):
                total += float(self.loss(batch, encoder(batch))) * len(batch)
                count += len(batch)
        return total / count


def _scheduler(optimiser: torch.optim.Optimizer, config: HealConfig) -> Any:
    """Cosine decay to zero over ``config.steps`` (``schedule="cosine"``), else none: a constant rate."""
    if config.schedule != "cosine":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(config.steps, 1))


def _trainable(
    layout: DecoderLayout, modules: dict[int, LinearCompensation], config: HealConfig, base: TrainedBase | None
) -> tuple[TrainedBase, list[nn.Parameter]]:
    """The base parameters trained beside the maps (made here when not given) and every parameter
    the heal trains; refuses a heal with nothing to train."""
    if base is None:
        base = trained_base(layout, sorted(modules), config)
    params = [p for m in modules.values() for p in m.parameters()] + base.params
    if not params:
        raise PCError("there is nothing to heal (init none has no maps)", "use --init zero, mean or lstsq with --heal")
    return base, params


def _groups(modules: dict[int, LinearCompensation], base: TrainedBase, config: HealConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: the maps and norms at ``lr``, the MLP weights (``train_mlps``) at
    ``mlp_lr``. The maps may not be installed yet, so they are named by ``modules``."""
    maps = [p for m in modules.values() for p in m.parameters()]
    norms, mlps = [], []
    for param, is_norm_weight in zip(base.params, base.norms, strict=True):
        (norms if is_norm_weight else mlps).append(param)
    return [{"params": maps + norms, "lr": config.lr}] + ([{"params": mlps, "lr": config.mlp_lr}] if mlps else [])


@contextmanager
def _training(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Gradients for ``params`` only and no dropout (the student must match the teacher's
    deterministic output); every flag and the training mode restored on the way out."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    was_training = model.training
    model.train(False)
    try:
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), True))
        model.train(was_training)


def heal_(
    model: nn.Module,
    layout: DecoderLayout,
    swap: CoreSwap,
    modules: dict[int, LinearCompensation],
    encoder: BatchEncoder,
    fit: list[CalibrationSample],
    held: list[CalibrationSample],
    config: HealConfig,
    show_progress: bool = True,
    work: WorkProgress | None = None,
    base: TrainedBase | None = None,
    task_score: Callable[[nn.Module], float] | None = None,
) -> HealReport:
    """Train ``modules`` (installed in ``model`` on return) against the original; see module doc.
    Progress: a stage of ``work`` when given (units: samples), else a bar of its own. ``base``: the
    base parameters to train beside the maps (``train_norms``, ``train_mlps``), made here when not
    given; the teacher runs with their original values. ``task_score``: higher is better, called on ``model`` with the
    maps installed at every evaluation; when given it, not the held-out loss, picks the step kept."""
    objective = resolve_objective(model, config.objective)
    if not held:
        raise PCError("healing needs held-out calibration samples for early stopping", "pass --held-out above 0")
    base, params = _trainable(layout, modules, config, base)
    student = _Student(model, layout, swap, modules, base, objective)
    check_teacher_top_k(model, config)
    start = time.perf_counter()
    optimiser = torch.optim.Adam(_groups(modules, base, config), lr=config.lr)
    scheduler = _scheduler(optimiser, config)
    report = HealReport(objective, trained_parameters=sum(p.numel() for p in params))
    if task_score is not None:
        report.selected_by = "task score"

    def evaluation(step: int) -> float:
        """The selection criterion at ``step``, lower is better; both curves are recorded."""
        loss = student.held_out_loss(encoder, held, config.batch_size)
        report.curve.append((step, loss))
        if task_score is None:
            return loss
        with torch.no_grad():
            score = float(task_score(model))
        report.task_curve.append((step, score))
        return -score

    def snapshot() -> dict[int, torch.Tensor]:
        return {k: v.detach().clone() for k, v in _state(params).items()}

    best_state, stale, step, rng = snapshot(), 0, 0, random.Random(config.seed)  # the start, kept on any failure
    bar = stage_or_bar(work, f"heal ({objective})", config.steps * config.batch_size, show_progress)
    try:
        with _training(model, params):
            if config.teacher_top_k:  # in eval mode, like every teacher forward; its cost is the heal's
                student.cache = TeacherCache.build(
                    student.teacher, encoder, fit + held, config.batch_size, config.teacher_top_k, show_progress, work
                )
            with bar as advance:
                best = evaluation(0)
                while step < config.steps and stale < config.patience:
                    order = list(fit)
                    rng.shuffle(order)
                    for batch in batches(order, config.batch_size):
                        loss = student.loss(batch, encoder(batch))
                        optimiser.zero_grad(set_to_none=True)
                        loss.backward()
                        optimiser.step()
                        if scheduler is not None:
                            scheduler.step()
                        step += 1
                        advance(len(batch))
                        if step % config.eval_every == 0 or step == config.steps:
                            current = evaluation(step)
                            if current < best:
                                best, stale, report.best_step, best_state = current, 0, step, snapshot()
                            else:
                                stale += 1
                        if step >= config.steps or stale >= config.patience:
                            break
    finally:
        with torch.no_grad():
            for key, param in _state(params).items():
                param.copy_(best_state[key])
        swap.install(modules)
    report.steps_run = step
    report.last_lr = float(optimiser.param_groups[0]["lr"])
    report.seconds = round(time.perf_counter() - start, 2)
    report.peak_rss_mb = round(_peak_rss_mb(), 1)
    return report


def _state(params: list[nn.Parameter]) -> dict[int, nn.Parameter]:
    return dict(enumerate(params))
