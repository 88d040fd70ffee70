"""One training-loop helper for the recipes (ELMM and TOFU): the resumable training state
(trainable weights, optimizer state, RNG states, the loop's progress and the best weights so far,
written atomically as safetensors + JSON, so a run killed at any point resumes to the weights an
uninterrupted run ends with), the validation schedule with early stopping, the wall-clock and step
budgets, and the progress bar (``TrainingLoop``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prune_compensate import PCError, progress_bar

from .io import atomic_dir_write, recover


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_training_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
    fingerprint: dict[str, Any] | None = None,
) -> None:
    """Write the trainable weights, the optimizer's state, the RNG states, ``progress`` (JSON) and
    the best weights so far into ``folder`` atomically (safetensors + JSON, no pickle), with the
    ``fingerprint`` of the config that produced them (see ``config_fingerprint``)."""
    params = trainable_parameters(model)
    names = list(params)
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"{names[index]}::{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})

    def write(tmp: Path) -> None:
        save_file({n: p.detach().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
        save_file(tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        meta = {"progress": progress, "param_groups": groups, "names": names, "fingerprint": fingerprint}
        (tmp / "progress.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    atomic_dir_write(folder, write, owned="progress.json")


# config keys a resumed run may change: where it writes, the budget, evaluation and later stages
RESUMABLE = (
    "out",
    "device",
    "eval",
    "targets",
    "finetune",
    "train.max_minutes",
    "train.budget_minutes",
    "train.max_steps",
    "train.resume",
    "train.checkpoint_every",
)


def config_fingerprint(config: Any, resumable: tuple[str, ...] = RESUMABLE) -> dict[str, Any]:
    """A recipe config (a dataclass) as ``{dotted key: value}`` without the ``resumable`` keys (and
    the keys under them): what must match for a saved training state to be resumed."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif not any(prefix == r or prefix.startswith(r + ".") for r in resumable):
            flat[prefix] = value

    walk(asdict(config), "")
    return json.loads(json.dumps(flat, default=str))  # as it reads back from progress.json


def check_resumable(folder: Path, fingerprint: dict[str, Any] | None) -> None:
    """Refuse to resume a training state that another config wrote (one line naming what differs)."""
    saved = json.loads((folder / "progress.json").read_text(encoding="utf-8")).get("fingerprint")
    if fingerprint is None or saved is None or saved == fingerprint:
        return
    changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
    raise PCError(
        f"{folder} holds a training state written with another config ({shown} differ)",
        "use a new out dir, pass train.resume=false, or delete that folder to start afresh",
    )


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore what ``save_training_state`` wrote (weights, optimizer, RNG) and return the saved
    ``progress`` and best weights."""
    meta = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
    params = trainable_parameters(model)
    if list(params) != meta["names"]:
        raise PCError(f"training state in {folder} is for a different model", "remove it or use a new out dir")
    with torch.no_grad():
        for name, tensor in load_file(str(folder / "weights.safetensors")).items():
            params[name].copy_(tensor)
    slots = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in slots.items():
        if key == "_empty":
            continue
        name, slot = key.split("::")
        state.setdefault(meta["names"].index(name), {})[slot] = tensor
    groups = optimizer.state_dict()["param_groups"]
    for group, saved in zip(groups, meta["param_groups"], strict=True):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
    return meta["progress"], best


@dataclass
class LoopProgress:
    """Where a training loop is; saved with the training state, so a resumed run continues here.
    ``counters`` holds a recipe's own running sums (TOFU: queries, unreachable answers)."""

    epoch: int = 0
    batches_done: int = 0  # in the current epoch
    step: int = 0  # optimizer steps overall
    best_mrr: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    finished: bool = False
    stopped_by: str = ""
    counters: dict[str, float] = field(default_factory=dict)


@dataclass
class LoopLimits:
    """When a loop validates, stops and saves: valid MRR every ``eval_every`` optimizer steps (and
    at each epoch's end), early stopping after ``patience`` validations without a better MRR, a
    wall-clock budget ``max_minutes`` and a step budget ``max_steps`` (0 = none), the training
    state every ``checkpoint_every`` steps and at every validation when ``save_on_eval``;
    ``validate_at_start``: the untrained weights are validated too (step 0) and can be the best —
    for a model that starts from something already trained."""

    epochs: int
    eval_every: int
    patience: int
    max_minutes: float = 0.0
    max_steps: int = 0
    checkpoint_every: int = 0
    save_on_eval: bool = True
    validate_at_start: bool = False


class TrainingLoop:
    """The parts of a recipe's training loop that are the same in every recipe: the resumable state
    (``save_training_state``), the validation schedule with early stopping and the best weights,
    the wall-clock and step budgets, and the progress bar. The recipe keeps its own batches and loss:

        with TrainingLoop(model, optimizer, limits, state_dir, validate) as loop:
            while loop.next_epoch():
                for batch in loop.remaining(batches_of(loop.progress.epoch)):
                    ... forward, backward, optimizer step ...
                    if loop.step_done(loss, epoch_end=...):
                        break
        # the best weights are back in the model here

    ``validate()`` returns the valid MRR of the current weights (restoring train mode itself).
    ``save`` is False on processes other than the main one (accelerate). ``fingerprint``
    (``config_fingerprint``) is saved with the state; a state written by another config is refused
    instead of resumed."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        limits: LoopLimits,
        state_dir: Path | None,
        validate: Callable[[], float],
        *,
        label: str = "training",
        total_steps: int | None = None,
        show_progress: bool = True,
        save: bool = True,
        log: Callable[[str], None] = print,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.limits, self.state_dir = model, optimizer, limits, state_dir
        self.validate, self.label, self.total_steps, self.show_progress = validate, label, total_steps, show_progress
        self.save, self.log, self.fingerprint = save, log, fingerprint
        self.progress, self.best = LoopProgress(), None
        self.interrupted = False  # set by a caller that stops on purpose (a simulated kill): no finishing
        self._stack: ExitStack | None = None

    def __enter__(self) -> TrainingLoop:
        if self.state_dir is not None:
            recover(self.state_dir, "progress.json")  # a kill between the two renames of a state write
            if (self.state_dir / "progress.json").is_file():
                check_resumable(self.state_dir, self.fingerprint)
                saved, self.best = load_training_state(self.state_dir, self.model, self.optimizer)
                self.progress = LoopProgress(**saved)
                where = f"epoch {self.progress.epoch}, step {self.progress.step}"
                self.log(f"resuming {self.label} from {self.state_dir}: {where}")
        self.started = time.perf_counter() - self.progress.elapsed_s
        self._stack = ExitStack()
        bar = self._stack.enter_context(progress_bar(self.show_progress))
        self._bar, self._task = bar, bar.add_task(self.label, total=self.total_steps, completed=self.progress.step)
        if self.limits.validate_at_start and not self.progress.history:
            self._record_validation(loss=float("nan"))
        return self

    def _record_validation(self, loss: float) -> None:
        """Validate the current weights, log them in the history, keep them if they are the best."""
        p = self.progress
        mrr = self.validate()
        p.history.append({"step": p.step, "epoch": p.epoch, "valid_mrr": mrr, "loss": loss})
        if mrr > p.best_mrr:
            p.best_mrr, p.best_step, p.bad_evals = mrr, p.step, 0
            self.best = {k: v.detach().clone() for k, v in trainable_parameters(self.model).items()}
        else:
            p.bad_evals += 1

    def __exit__(self, kind: type | None, *_: object) -> None:
        assert self._stack is not None
        self._stack.close()
        if kind is None and not self.interrupted:
            self.finish()

    def next_epoch(self) -> bool:
        """Whether another epoch runs."""
        return not self.progress.finished and self.progress.epoch < self.limits.epochs

    def remaining(self, batches: list[Any]) -> Iterator[Any]:
        """This epoch's batches not yet done (all of them, unless the run resumed mid-epoch); when
        the caller has taken them all, the next epoch begins."""
        for index in range(self.progress.batches_done, len(batches)):
            self.progress.batches_done = index + 1
            yield batches[index]
        self.progress.epoch, self.progress.batches_done = self.progress.epoch + 1, 0

    def _save(self) -> None:
        if self.state_dir is not None and self.save:
            self.progress.elapsed_s = time.perf_counter() - self.started
            self.state_dir.parent.mkdir(parents=True, exist_ok=True)
            save_training_state(
                self.state_dir, self.model, self.optimizer, asdict(self.progress), self.best, self.fingerprint
            )

    def step_done(self, loss: float, epoch_end: bool = False) -> bool:
        """Record one optimizer step; validate, stop and save as the limits say. True: stop now."""
        p, limits = self.progress, self.limits
        p.step += 1
        p.losses.append(loss)
        self._bar.update(self._task, completed=p.step, description=f"{self.label} loss {loss:.4f}")
        out_of_time = bool(limits.max_minutes) and time.perf_counter() - self.started > 60 * limits.max_minutes
        out_of_steps = bool(limits.max_steps) and p.step >= limits.max_steps
        validated = False
        if p.step % limits.eval_every == 0 or epoch_end or out_of_time or out_of_steps:
            self._record_validation(loss)
            validated = True
            if p.bad_evals >= limits.patience:
                p.finished, p.stopped_by = True, "early stopping"
        if not p.finished and out_of_steps:
            p.finished, p.stopped_by = True, f"{limits.max_steps} steps"
        if not p.finished and out_of_time:
            p.finished, p.stopped_by = True, f"budget of {limits.max_minutes} min"
        every = limits.checkpoint_every and p.step % limits.checkpoint_every == 0
        if p.finished or every or (validated and limits.save_on_eval):
            self._save()
        return p.finished

    def finish(self) -> None:
        """Mark the run finished, save its state, and put the best weights back into the model."""
        p = self.progress
        if not p.finished:
            p.finished, p.stopped_by = True, p.stopped_by or "epochs"
            self._save()
        if self.best is not None:
            with torch.no_grad():
                params = trainable_parameters(self.model)
                for name, tensor in self.best.items():
                    params[name].copy_(tensor)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def loss_window(self, size: int = 20) -> tuple[float, float]:
        """Mean loss over the first and the last ``size`` steps (at most a quarter of them)."""
        losses = self.progress.losses
        if not losses:
            return float("nan"), float("nan")
        window = max(1, min(size, len(losses) // 4))
        return sum(losses[:window]) / window, sum(losses[-window:]) / window
