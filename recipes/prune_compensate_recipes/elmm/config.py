"""The ELMM recipe's configuration: one YAML file per run, overridable with ``key=value``.

Like torchtune's recipes, a config is a readable YAML file (``recipes/configs/*.yaml``) that maps
onto these dataclasses section by section; ``pc run elmm --config FILE train.lr=1e-3 k=3``
overrides any field by its dotted name (values are parsed as YAML: ``true``, ``3``, ``1e-3``,
``[q, v]``). Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_compensate import PCError

from ..config import load_dataclass_config, save_config

__all__ = ["ElmmConfig", "load_config", "save_config"]

IMAGE_SOURCES = ("auto", "folder", "features", "none")


@dataclass
class BackboneConfig:
    """``model``: a local folder or cached hub id; ``null`` = the embedded MiniLM. ``dropout``:
    every dropout probability inside the backbone (0 = off, which also skips drawing the masks;
    ``null`` keeps the model's own)."""

    model: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    dropout: float | None = None


@dataclass
class PruneSection:
    """``k`` attention layers dropped, chosen by the core's profile on ``calibration_samples``
    training-query prompts; ``init`` is the core's compensation init: ``mean`` is the paper's
    training-free init (Theorem 1), ``lstsq`` a least-squares fit of each map on the calibration
    activations (beyond the paper; the default, lower held-out error), ``zero`` = the paper's
    "w/o init", ``none`` = "w/o linear".
    ``trainable``: train the compensation matrices with the adapters (else frozen)."""

    k: int = 16
    init: str = "lstsq"
    calibration_samples: int = 1000
    held_out: float = 0.2
    trainable: bool = True


STRUCTURE_SOURCES = ("learned", "rotate", "transe")


@dataclass
class PromptSection:
    """Token budgets of the entity text (name + description) and the relation text; the prompt
    is ``[CLS/BOS] entity (+ entity token) [SEP] relation (+ relation token) [SEP]``.
    ``structure_tokens`` adds one learned embedding per entity and per relation to its span
    (the structural channel of the CPU configs; off in the paper's setting). ``structure_from``:
    ``learned`` starts those tokens from random vectors; ``rotate`` / ``transe`` (beyond the paper,
    after KoPA and MKGL) first trains that PyKEEN model on the training split for
    ``structure_minutes`` (part of the run's budget) and uses its frozen entity and relation
    embeddings through a learned linear map to the backbone's width. ``structure_score`` (beyond
    the paper; needs a KGE) also adds that KGE's own score of every entity to the head's logits, so
    the model starts ranking as the KGE does and training learns what the text adds (a residual on
    the KGE, as text-and-structure ensembles such as StAR combine the two). ``head_from_structure``
    (needs a KGE) scores each candidate entity through its KGE row and one learned map instead of a
    free weight row per entity, so every query trains the scores of all entities."""

    entity_tokens: int = 32
    relation_tokens: int = 16
    structure_tokens: bool = False
    structure_from: str = "learned"
    structure_minutes: float = 0.0
    structure_score: bool = False
    head_from_structure: bool = False


@dataclass
class ImageSection:
    """``source``: ``folder`` (images/<entity>/ through the backbone's vision tower), ``features``
    (the dataset's precomputed ``image_features``), ``none``, or ``auto`` (folder if the backbone
    has a vision tower and the dataset images, else features if present, else none).
    ``per_entity``: N ≤ 10 images per entity. ``cache_dir``: where encoded images are kept (one
    safetensors file per entity, so epochs never re-encode); ``null`` = ``<out>/image_cache``."""

    source: str = "auto"
    per_entity: int = 10
    cache_dir: str | None = None
    batch_size: int = 16


@dataclass
class MvtcSection:
    heads: int = 4


@dataclass
class LoraSection:
    """LoRA (via peft) on the query and value projections of the kept attention layers."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q", "v"])


@dataclass
class TrainSection:
    """``max_minutes``: wall-clock training budget (0 = none). ``budget_minutes``: the whole
    run's wall-clock budget (0 = none) — KGE pre-training, pruning and training together, evaluation
    excluded; training gets what the build left (and at most ``max_minutes``). ``eval_every``:
    optimizer steps between valid evaluations (0 = once per epoch); ``patience``: evaluations
    without a better valid MRR before stopping. ``valid_triples``: size of the valid subset used for model
    selection (0 = all). ``checkpoint_every``: steps between resumable training states.
    ``loss``: ``bce`` is the paper's (eq. 15); ``softmax`` (beyond the paper) is 1-N cross-entropy
    over the same negatives, which weights the negatives ranked near the target most.
    ``validate_at_start``: validate the untrained model too, so selection can keep it (worth it
    when it starts from a trained KGE's scores, ``prompt.structure_score``)."""

    epochs: int = 1
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-4
    head_lr: float | None = None
    weight_decay: float = 0.0
    mixed_precision: str = "no"
    seed: int = 0
    max_minutes: float = 0.0
    budget_minutes: float = 0.0
    eval_every: int = 0
    patience: int = 3
    valid_triples: int = 0
    checkpoint_every: int = 500
    resume: bool = True
    validate_at_start: bool = False
    loss: str = "bce"


@dataclass
class EvalSection:
    """``mixed_precision``: the autocast validation, test ranking and the timing run under; "train"
    follows ``train.mixed_precision``, "no" ranks in float32 (on CPUs without native bf16, bf16
    autocast makes inference several times slower, see ``benchmarks/elmm/elmm_inference_time.py``)."""

    batch_size: int = 64
    test_triples: int = 0
    timing_queries: int = 64
    mixed_precision: str = "train"


@dataclass
class AblationSection:
    """The paper's ablation table, one switch each."""

    no_image_view: bool = False
    no_text_view: bool = False
    no_mvtc: bool = False
    no_pruning: bool = False
    no_linear: bool = False
    no_init: bool = False
    plain_head: bool = False


@dataclass
class ElmmConfig:
    """A whole run. ``data``: a dataset folder, a staged name (``FB15k-237``), or a graph in
    pykeen's wheel (``umls``, ``nations``, ``kinships``). ``out``: where checkpoint, metrics.json
    and the training state go."""

    data: str = "umls"
    out: str = "runs/elmm"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prune: PruneSection = field(default_factory=PruneSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    images: ImageSection = field(default_factory=ImageSection)
    mvtc: MvtcSection = field(default_factory=MvtcSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    ablation: AblationSection = field(default_factory=AblationSection)

    def validate(self) -> ElmmConfig:
        if self.images.source not in IMAGE_SOURCES:
            raise PCError(f"images.source must be one of {', '.join(IMAGE_SOURCES)}", "fix the config")
        if not 0 <= self.images.per_entity <= 10:
            raise PCError(f"images.per_entity must be 0..10, got {self.images.per_entity}", "fix the config")
        if self.backbone.dropout is not None and not 0 <= self.backbone.dropout < 1:
            raise PCError(f"backbone.dropout must be in [0, 1), got {self.backbone.dropout}", "fix the config")
        if self.prune.k < 0:
            raise PCError(f"prune.k must be ≥ 0, got {self.prune.k}", "fix the config")
        if self.train.batch_size < 1 or self.train.grad_accum < 1 or self.train.epochs < 1:
            raise PCError("train.batch_size, grad_accum and epochs must be ≥ 1", "fix the config")
        if self.train.loss not in ("bce", "softmax"):
            raise PCError(f"train.loss must be bce or softmax, got {self.train.loss}", "fix the config")
        if self.train.mixed_precision not in ("no", "fp16", "bf16"):
            raise PCError("train.mixed_precision must be no, fp16 or bf16", "fix the config")
        if self.eval.mixed_precision not in ("train", "no", "fp16", "bf16"):
            raise PCError("eval.mixed_precision must be train, no, fp16 or bf16", "fix the config")
        if self.prompt.structure_from not in STRUCTURE_SOURCES:
            raise PCError(f"prompt.structure_from must be one of {', '.join(STRUCTURE_SOURCES)}", "fix the config")
        if self.prompt.structure_from != "learned" and not (
            self.prompt.structure_tokens and self.prompt.structure_minutes > 0
        ):
            raise PCError(
                f"prompt.structure_from={self.prompt.structure_from} needs structure tokens and a KGE budget",
                "set prompt.structure_tokens=true and prompt.structure_minutes > 0",
            )
        if (self.prompt.structure_score or self.prompt.head_from_structure) and self.prompt.structure_from == "learned":
            raise PCError(
                "prompt.structure_score and prompt.head_from_structure need a KGE to score with",
                "set prompt.structure_from=rotate (or transe) and prompt.structure_minutes > 0",
            )
        for key in ("train.max_minutes", "train.budget_minutes", "prompt.structure_minutes"):
            section, name = key.split(".")
            if getattr(getattr(self, section), name) < 0:
                raise PCError(f"{key} must be 0 (no limit) or a positive number of minutes", "fix the config")
        budget = self.train.budget_minutes
        if budget and self.prompt.structure_from != "learned" and self.prompt.structure_minutes >= budget:
            raise PCError(
                f"prompt.structure_minutes ({self.prompt.structure_minutes:g}) leaves nothing of "
                f"train.budget_minutes ({budget:g}) for pruning and training",
                "give the KGE stage a share of the budget",
            )
        if not set(self.lora.targets) <= {"q", "k", "v", "o"}:
            raise PCError(f"lora.targets must be a subset of q, k, v, o, got {self.lora.targets}", "fix the config")
        return self

    # -- effective settings after the ablation switches ---------------------------------------
    @property
    def k(self) -> int:
        return 0 if self.ablation.no_pruning else self.prune.k

    @property
    def init(self) -> str:
        if self.ablation.no_linear:
            return "none"
        if self.ablation.no_init:
            return "zero"
        return self.prune.init

    @property
    def eval_precision(self) -> str:
        """``eval.mixed_precision`` with "train" resolved: no, fp16 or bf16."""
        chosen = self.eval.mixed_precision
        return self.train.mixed_precision if chosen == "train" else chosen

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ElmmConfig:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    return load_dataclass_config(ElmmConfig, path, overrides)
