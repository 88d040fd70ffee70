"""``evaluate``: what pruning cost, measured on tasks for the pruned model and its original in
the same run, reported per metric as original / pruned / retention (``pc eval``).

Retention is the share of the original's quality kept: pruned ÷ original for metrics where higher
is better (accuracy, MRR, recall), original ÷ pruned where lower is better (perplexity), so it is
exactly 1 for a model against itself and below 1 for a loss either way. Metrics that compare the
pruned model *to* the original (next-token KL, top-1 agreement, embedding cosine) have no
original value and no retention.

What is measured depends on the model: LMs and VLM text decoders get perplexity / KL / top-1 on a
text corpus (and on image–caption examples when given); encoders get retrieval and embedding
cosine on (query, document) pairs; ``tasks`` runs lm-evaluation-harness on the loaded models.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import PCError
from ..model.load import LoadedModel
from ..model.locate import has_lm_head
from ..output_dir import write_text_atomic
from ..progress import progress_bar
from ..scoring.embedding import embed, pooling_mode
from ..scoring.pairs import read_pairs
from ..scoring.retrieval import queries_and_documents, retrieval_metrics
from . import data as eval_data
from .harness import HIGHER_IS_BETTER, check_tasks, run_tasks
from .lm import TokenScores, score_captions, score_corpus

SCHEMA = 1


@dataclass
class EvalConfig:
    """What to evaluate on. ``text`` / ``pairs``: a source (see ``eval.data``), ``"embedded"``
    (disjoint from the embedded calibration set) or ``None`` to skip; ``captions``: an
    image–caption JSONL for VLMs; ``tasks``: lm-eval task names (``include_path`` for local task
    YAMLs, ``limit`` examples per task)."""

    text: str | None = eval_data.EMBEDDED
    pairs: str | None = eval_data.EMBEDDED
    captions: str | None = None
    tasks: tuple[str, ...] = ()
    include_path: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    text_column: str = "text"
    split: str = "test"
    max_length: int = 512
    stride: int | None = None  # None: half of max_length, the transformers perplexity guide's choice
    batch_size: int = 16
    max_examples: int | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.stride is None:
            self.stride = max(1, self.max_length // 2)
        if self.max_examples is not None and self.max_examples < 1:
            raise PCError(
                f"--max-examples must be at least 1, got {self.max_examples}", "pass a positive count, or leave it out"
            )
        for name in ("max_length", "stride", "batch_size"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise PCError(f"{flag} must be at least 1, got {getattr(self, name)}", f"pass a positive {flag}")
        if self.stride > self.max_length:
            raise PCError(f"--stride {self.stride} is above --max-length {self.max_length}", "use a smaller --stride")


@dataclass
class EvalMetric:
    """One row: ``original`` is ``None`` when the model is evaluated alone or the metric compares
    the two models (KL, agreement, embedding cosine)."""

    task: str
    metric: str
    pruned: float
    original: float | None = None
    retention: float | None = None
    higher_is_better: bool | None = None
    n: int = 0


@dataclass
class EvalResult:
    """Serialisable result of ``evaluate`` (``--json``; ``prune_manifest.json``'s ``eval``)."""

    model: str
    against: str | None
    metrics: list[EvalMetric]
    data: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    def value(self, task: str, metric: str) -> EvalMetric:
        return next(m for m in self.metrics if m.task == task and m.metric == metric)


def _row(task: str, metric: str, values: dict[str, float], higher: bool | None, n: int) -> EvalMetric:
    pruned, original = values["pruned"], values.get("original")
    retention = None
    if original is not None and higher is not None:
        numerator, denominator = (pruned, original) if higher else (original, pruned)
        retention = numerator / denominator if denominator else None
    return EvalMetric(task, metric, pruned, original, retention, higher, n)


def _token_rows(task: str, scores: TokenScores, names: list[str]) -> list[EvalMetric]:
    rows = [_row(task, "perplexity", {n: scores.perplexity(n) for n in names}, False, scores.tokens)]
    if "original" in names:
        rows.append(EvalMetric(task, "kl(original||pruned)", scores.kl / scores.tokens, n=scores.tokens))
        rows.append(EvalMetric(task, "top1_agreement", scores.agree / scores.tokens, n=scores.tokens))
    return rows


def _limit(items: list, config: EvalConfig) -> list:
    return items[: config.max_examples] if config.max_examples else items


def evaluate(pruned: LoadedModel, original: LoadedModel | None = None, config: EvalConfig | None = None) -> EvalResult:
    """Evaluate ``pruned`` (any loaded model) and, when given, ``original`` on the same data."""
    config = config or EvalConfig()
    models = {"pruned": pruned.model} if original is None else {"original": original.model, "pruned": pruned.model}
    names = list(models)
    metrics: list[EvalMetric] = []
    sources: dict[str, Any] = {}
    if config.tasks:
        check_tasks(list(config.tasks), config.include_path)  # before any forward pass
    encoder = not has_lm_head(pruned.model)
    with progress_bar(config.show_progress) as progress:
        if encoder and config.pairs is not None:
            pairs = _limit(read_pairs(config.pairs), config)
            sources["pairs"] = {"source": config.pairs, "n": len(pairs)}
            metrics += _retrieval_rows(models, pruned, pairs, config, progress)
        if not encoder and config.text is not None:
            texts = _limit(eval_data.read_texts(config.text, config.text_column, config.split), config)
            sources["text"] = {"source": config.text, "documents": len(texts)}
            scores = score_corpus(models, pruned.tokenizer, texts, config.max_length, config.stride, progress)
            metrics += _token_rows("text", scores, names)
        if config.captions is not None:
            if not hasattr(pruned.processor, "image_processor"):
                raise PCError("--captions needs a vision-language model", "drop --captions for this model")
            examples = _limit(eval_data.read_captions(config.captions), config)
            sources["captions"] = {"source": config.captions, "n": len(examples)}
            metrics += _token_rows("captions", score_captions(models, pruned.processor, examples, progress), names)
    if config.tasks:
        metrics += _task_rows(models, pruned, original, config)
        sources["tasks"] = {"tasks": list(config.tasks), "limit": config.limit, "include_path": config.include_path}
    if not metrics:
        raise PCError("nothing was evaluated", "pass --text, --pairs, --captions or --tasks that fit this model")
    return EvalResult(pruned.source, original.source if original is not None else None, metrics, sources)


def _retrieval_rows(
    models: dict[str, nn.Module],
    pruned: LoadedModel,
    pairs: list[tuple[str | None, str]],
    config: EvalConfig,
    progress: Any,
) -> list[EvalMetric]:
    mode = pooling_mode(pruned.local_dir)
    queries, documents = queries_and_documents(pairs)
    task = progress.add_task("embedding queries and documents", total=2 * len(models))
    embedded = {}
    for name, model in models.items():
        embedded[name] = [
            embed(model, pruned.tokenizer, texts, config.batch_size, config.max_length, mode)
            for texts in (queries, documents)
        ]
        progress.advance(task, 2)
    found = {name: retrieval_metrics(q, d) for name, (q, d) in embedded.items()}
    rows = [_row("retrieval", m, {n: found[n][m] for n in found}, True, len(queries)) for m in found["pruned"]]
    if "original" in embedded:
        cosine = [float((o * p).sum(-1).mean()) for o, p in zip(embedded["original"], embedded["pruned"], strict=True)]
        n = len(queries) + len(documents)
        cosine_mean = (cosine[0] * len(queries) + cosine[1] * len(documents)) / n
        rows.append(EvalMetric("retrieval", "embedding_cosine", cosine_mean, n=n))
    return rows


def _task_rows(
    models: dict[str, nn.Module], pruned: LoadedModel, original: LoadedModel | None, config: EvalConfig
) -> list[EvalMetric]:
    tables = {}
    for name, model in models.items():
        loaded = pruned if name == "pruned" else original
        assert loaded is not None
        tables[name] = run_tasks(
            model, loaded.tokenizer, list(config.tasks), config.include_path, config.limit, config.num_fewshot
        )
    rows = []
    for task, values in tables["pruned"].items():
        n = int(values.pop("_n", 0))
        for metric, value in values.items():
            both = {name: tables[name].get(task, {}).get(metric) for name in tables}
            both = {k: v for k, v in both.items() if v is not None}
            higher = True if metric in HIGHER_IS_BETTER else None
            rows.append(_row(task, metric, {**both, "pruned": value}, higher, n))
    return rows


def check_disjoint(model: str | None, config: EvalConfig) -> None:
    """Refuse evaluation data that is the pruned checkpoint's own calibration file: a fit scored on
    the data it was fitted to says nothing about held-out quality. (The embedded evaluation sets
    are disjoint from the embedded calibration set by construction.)"""
    from ..checkpoint.format import MANIFEST, read_manifest

    if model is None or not (Path(model) / MANIFEST).is_file():
        return
    check_not_calibration((read_manifest(model).get("calibration") or {}).get("source"), config, model)


def check_not_calibration(calibration: str | None, config: EvalConfig, model: str | None) -> None:
    """Refuse an evaluation source that is the file ``calibration`` names (what ``model`` was, or is
    about to be, fitted on)."""
    if not calibration or calibration == eval_data.EMBEDDED or not Path(calibration).exists():
        return
    for flag, source in (("--text", config.text), ("--pairs", config.pairs), ("--captions", config.captions)):
        if source and Path(source).exists() and Path(source).resolve() == Path(calibration).resolve():
            raise PCError(
                f"{flag} {source} is the calibration data {model or 'the model'} was fitted on",
                "evaluate on held-out data (a file with none of the calibration samples)",
            )
