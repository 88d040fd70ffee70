"""``pc run elmm``: data → pruned backbone → MVTC + KGC head + LoRA → train → metrics → checkpoint.

Pruning is the core's ``prune_`` (profile → drop the K most redundant attention layers → fit the
compensation bottom-up), calibrated on prompts of training queries. The checkpoint is peft-style:
the base model's name plus what was replaced (``elmm.json``), the adapters' targets and a
safetensors file of everything that is not an untouched base weight; ``load_elmm`` rebuilds the
skeleton from those fields, then loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prune_compensate import (
    CalibrationConfig,
    CalibrationSample,
    LinearCompensation,
    LoadedModel,
    PCError,
    PruneConfig,
    compensation_spec,
    load_model,
    prune_,
    replace_module,
    replaced_modules,
)
from prune_compensate_recipes.mkgc.data import KGDataset, relation_categories
from prune_compensate_recipes.mkgc.evaluate import (
    InverseRelationScorer,
    LinkPredictionResult,
    evaluate_link_prediction,
    metrics_document,
    metrics_table,
)
from prune_compensate_recipes.mkgc.kge import KGE_SETTINGS, kge_features, train_kge
from prune_compensate_recipes.mkgc.staged import resolve_dataset

from ..io import atomic_dir_write
from ..training import config_fingerprint
from .config import ElmmConfig, load_config, save_config
from .images import ImageBank
from .model import ElmmModel, add_lora, checkpoint_state, inject_lora, set_dropout, set_trainable
from .modules import ProjectedFeatures
from .prompts import QueryPrompter
from .train import STATE_DIR, TrainQueries, grouped_bce_loss, train

CHECKPOINT = "checkpoint"


def local_device(device: str) -> str:
    """``cuda`` means this process's GPU under ``accelerate launch`` (``LOCAL_RANK``)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def load_dataset(spec: str) -> KGDataset:
    """A dataset name, a graph in pykeen's wheel, or a folder (``mkgc.staged.resolve_dataset``)."""
    return resolve_dataset(spec)[0]


@dataclass
class ElmmRun:
    """A built model with everything that turns query ids into its inputs."""

    config: ElmmConfig
    dataset: KGDataset
    loaded: LoadedModel
    model: ElmmModel
    prompter: QueryPrompter
    bank: ImageBank
    image_source: str
    lora_targets: list[str] = field(default_factory=list)
    prune_manifest: dict[str, Any] | None = None
    structure_pretraining: dict[str, Any] | None = None  # the KGE stage, when structure_from is a model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inputs(self, entities: torch.Tensor, relations: torch.Tensor) -> tuple[Any, ...]:
        query = self.prompter(entities, relations).to(self.device)
        images = self.bank.batch(entities)
        return (query,) if images is None else (query, images.to(self.device))

    @torch.no_grad()
    def scores(self, entities: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with inference_precision(self):
            return self.model(*self.inputs(entities, relations)).float().cpu()

    def evaluate(self, split: str, max_triples: int = 0, show_progress: bool = True) -> LinkPredictionResult:
        triples = self.dataset.evaluation_triples(split)
        if max_triples and triples.shape[0] > max_triples:
            keep = torch.randperm(triples.shape[0], generator=torch.Generator().manual_seed(0))[:max_triples]
            triples = triples[keep.sort().values]
        return evaluate_link_prediction(
            InverseRelationScorer(self.scores, self.dataset.num_relations),
            triples,
            self.dataset.all_triples(),
            self.dataset.num_entities,
            self.dataset.num_relations,
            batch_size=self.config.eval.batch_size,
            categories=relation_categories(self.dataset.train, self.dataset.num_relations),
            show_progress=show_progress,
            description=f"evaluating {split}",
        )


def calibration_samples(
    config: ElmmConfig, dataset: KGDataset, prompter: QueryPrompter, queries: TrainQueries, source: str
) -> list[CalibrationSample]:
    """Prompts of ``calibration_samples`` random training queries (with the entity's images)."""
    generator = torch.Generator().manual_seed(config.train.seed)
    picked = torch.randperm(len(queries), generator=generator)[: config.prune.calibration_samples]
    samples = []
    for e, r in queries.keys[picked].tolist():
        images = dataset.entity_images.get(e, [])[: config.images.per_entity] if source == "folder" else []
        samples.append(CalibrationSample(prompter.text(e, r), [str(p) for p in images], f"train query ({e}, {r})"))
    return samples


STRUCTURE_DIR = "structure_kge"


def structure_features(
    config: ElmmConfig, dataset: KGDataset
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
    """Train the ``prompt.structure_from`` KGE model on the training split for
    ``prompt.structure_minutes`` → its entity and (inverse-extended) relation feature rows and
    what the training did. The rows are kept in ``<out>/structure_kge/`` (safetensors + JSON,
    written atomically): a run that resumes reuses them instead of training a KGE again — one
    trained for minutes would come out different, and the saved head would not fit it."""
    folder = Path(config.out) / STRUCTURE_DIR
    key = {
        "data": config.data,
        "structure_from": config.prompt.structure_from,
        "structure_minutes": config.prompt.structure_minutes,
        "seed": config.train.seed,
    }
    if (folder / "info.json").is_file():
        saved = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        if saved.get("key") == key:
            rows = load_file(str(folder / "features.safetensors"))
            return (rows["entities"], rows["relations"]), {**saved["info"], "reused_from": str(folder)}
    name = config.prompt.structure_from
    model, info = train_kge(dataset, name, minutes=config.prompt.structure_minutes, seed=config.train.seed)
    entities, relations = kge_features(model, name)

    def write(tmp: Path) -> None:
        save_file({"entities": entities, "relations": relations}, str(tmp / "features.safetensors"))
        (tmp / "info.json").write_text(json.dumps({"key": key, "info": info}, indent=1), encoding="utf-8")

    folder.parent.mkdir(parents=True, exist_ok=True)
    atomic_dir_write(folder, write, owned="info.json")
    return (entities, relations), info


def _build_model(
    config: ElmmConfig,
    run_loaded: LoadedModel,
    dataset: KGDataset,
    bank: ImageBank,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ElmmModel:
    return ElmmModel(
        run_loaded.model,
        dataset.num_entities,
        2 * dataset.num_relations,
        image_dim=bank.dim,
        mvtc_heads=0 if config.ablation.no_mvtc else config.mvtc.heads,
        use_text_view=not config.ablation.no_text_view,
        use_image_view=not config.ablation.no_image_view,
        plain_head=config.ablation.plain_head,
        structure_tokens=config.prompt.structure_tokens,
        structure_features=features,
        structure_score=structure_score_spec(config),
        head_from_structure=config.prompt.head_from_structure,
    )


def structure_score_spec(config: ElmmConfig) -> tuple[str, float] | None:
    """(KGE kind, its loss margin) when the run adds the KGE's score to the head, else None."""
    if not config.prompt.structure_score:
        return None
    name = config.prompt.structure_from
    return name, float(KGE_SETTINGS[name]["loss_kwargs"].get("margin", 0.0))


def _image_bank(
    config: ElmmConfig, dataset: KGDataset, loaded: LoadedModel, source: str, show_progress: bool
) -> ImageBank:
    """The run's image bank, its disk cache keyed by dataset, model and images per entity."""
    cache = Path(config.images.cache_dir or Path(config.out) / "image_cache")
    key = ImageBank.cache_key(dataset, loaded.source, config.images.per_entity)
    bank = ImageBank(source, dataset, config.images.per_entity, cache / key)
    bank.prepare(loaded.model, loaded.processor, show_progress)
    return bank


def build_run(config: ElmmConfig, show_progress: bool = True) -> ElmmRun:
    """Load data and backbone, prune with the core, add LoRA, MVTC and the head."""
    torch.manual_seed(config.train.seed)
    dataset = load_dataset(config.data)
    loaded = load_model(config.backbone.model, dtype=config.backbone.dtype, device=local_device(config.backbone.device))
    if config.backbone.dropout is not None:
        set_dropout(loaded.model, config.backbone.dropout)
    prompter = QueryPrompter(dataset, loaded.tokenizer, config.prompt)
    source = ImageBank.resolve_source(config.images.source, dataset, loaded.model, config.images.per_entity)
    bank = _image_bank(config, dataset, loaded, source, show_progress)
    manifest = None
    if config.k:
        queries = TrainQueries.from_triples(dataset.with_inverse(dataset.train), dataset.num_relations)
        samples = calibration_samples(config, dataset, prompter, queries, source)
        prune_config = PruneConfig(
            k=config.k,
            init=config.init,
            held_out=config.prune.held_out,
            compare=(),
            calibration=CalibrationConfig(n_samples=len(samples), max_length=256, seed=config.train.seed),
            show_progress=show_progress,
        )
        manifest = prune_(loaded, prune_config, samples).to_manifest()
    targets = add_lora(loaded.model, config.lora.rank, config.lora.alpha, config.lora.dropout, config.lora.targets)
    set_trainable(loaded.model, config.prune.trainable)
    features, pretraining = None, None
    if config.prompt.structure_tokens and config.prompt.structure_from != "learned":
        with torch.random.fork_rng():  # the ELMM parts start alike whether or not a KGE trained first
            features, pretraining = structure_features(config, dataset)
    model = _build_model(config, loaded, dataset, bank, features)
    return ElmmRun(config, dataset, loaded, model, prompter, bank, source, targets, manifest, pretraining)


def save_checkpoint(run: ElmmRun, out: Path) -> Path:
    """``out/checkpoint/``: config.yaml (base model resolved), elmm.json (replaced modules, LoRA
    targets, image source), elmm.safetensors — written to a temp folder, then renamed."""
    target = out / CHECKPOINT
    config = run.config
    resolved = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, model=run.loaded.source))
    replaced = {name: compensation_spec(m) for name, m in replaced_modules(run.model.backbone).items()}
    meta = {"replaced": replaced, "lora_targets": run.lora_targets, "image_source": run.image_source}
    meta["image_dim"] = run.model.image_dim

    def write(tmp: Path) -> None:
        save_config(resolved, tmp / "config.yaml")
        (tmp / "elmm.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        save_file(checkpoint_state(run.model), str(tmp / "elmm.safetensors"))

    atomic_dir_write(target, write, owned="elmm.json")
    return target


def load_elmm(path: str | Path, show_progress: bool = False) -> ElmmRun:
    """Rebuild a saved run: base model → replaced modules → LoRA → ELMM parts → weights."""
    path = Path(path)
    if (path / CHECKPOINT / "elmm.json").is_file():
        path = path / CHECKPOINT
    if not (path / "elmm.json").is_file():
        raise PCError(f"{path} is not an ELMM checkpoint (no elmm.json)", "point at the run's out dir")
    config = load_config(path / "config.yaml")
    meta = json.loads((path / "elmm.json").read_text(encoding="utf-8"))
    dataset = load_dataset(config.data)
    loaded = load_model(config.backbone.model, dtype=config.backbone.dtype, device=local_device(config.backbone.device))
    for name, spec in meta["replaced"].items():
        replace_module(loaded.model, name, LinearCompensation(**spec))
    inject_lora(loaded.model, config.lora.rank, config.lora.alpha, config.lora.dropout, meta["lora_targets"])
    source = meta["image_source"]
    bank = _image_bank(config, dataset, loaded, source, show_progress)
    state = load_file(str(path / "elmm.safetensors"))
    features = None
    if "entity_structure.features" in state:  # rows of the KGE the run trained: stored, not retrained
        features = (state["entity_structure.features"], state["relation_structure.features"])
    model = _build_model(config, loaded, dataset, bank, features)
    missing, unexpected = model.load_state_dict(state, strict=False)
    stored = set(checkpoint_state(model))
    if unexpected or stored - set(state):
        raise PCError(f"{path}/elmm.safetensors does not match the rebuilt model", "re-save it with this version")
    prompter = QueryPrompter(dataset, loaded.tokenizer, config.prompt)
    return ElmmRun(config, dataset, loaded, model, prompter, bank, source, meta["lora_targets"])


def structure_rows(model: ElmmModel) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The KGE rows a model's structure tokens were built from (None for learned tokens)."""
    entity, relation = model.entity_structure, model.relation_structure
    if isinstance(entity, ProjectedFeatures) and isinstance(relation, ProjectedFeatures):
        return entity.features, relation.features
    return None


def inference_precision(run: ElmmRun) -> contextlib.AbstractContextManager:
    """The autocast that validation, test ranking and the timing run under (``eval.mixed_precision``;
    "train" = ``train.mixed_precision``). Training autocasts only its own forward passes, so every
    model scored here, the unpruned twin of the timing included, gets this one precision."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    dtype = dtypes.get(run.config.eval_precision)
    return torch.autocast(run.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def time_per_query(run: ElmmRun, queries: torch.Tensor, model: ElmmModel | None = None, batch_size: int = 1) -> float:
    """Median seconds per query of ``queries`` ``(n, 2)`` = (entity, relation) scored in batches of
    ``batch_size``, under the evaluation's precision, after one untimed warm-up batch; inputs are
    built before the clock starts."""
    model = model or run.model
    model.eval()
    times = []
    batches = list(queries.split(batch_size))
    with torch.no_grad(), inference_precision(run):
        model(*run.inputs(batches[0][:, 0], batches[0][:, 1]))  # warm-up, not timed
        for batch in batches:
            inputs = run.inputs(batch[:, 0], batch[:, 1])
            start = time.perf_counter()
            model(*inputs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / batch.shape[0])
    return statistics.median(times)


def inference_timing(run: ElmmRun) -> dict[str, Any]:
    """Seconds per query of this (pruned) model and of the same architecture unpruned, in this run,
    at batch 1 (``eval.timing_queries`` test queries) and at the evaluation's batch size (three
    batches where the test split holds them), both under the evaluation's precision (recorded); a
    second pass of the pruned model measures the drift between passes."""
    n = run.config.eval.timing_queries
    if not n:
        return {}
    config = run.config
    batch = config.eval.batch_size
    test = run.dataset.test[: max(n, 3 * batch)]
    queries = torch.stack([test[:, 0], test[:, 1]], dim=1)
    sizes = {"batch_1": (queries[:n], 1), "eval_batch": (queries, batch)}
    timing: dict[str, Any] = {"queries": n, "batch_size": 1, "eval_batch_size": batch}
    timing["precision"] = config.eval_precision
    unpruned = None
    if config.k:
        original = load_model(
            config.backbone.model, dtype=config.backbone.dtype, device=local_device(config.backbone.device)
        )
        add_lora(original.model, config.lora.rank, config.lora.alpha, config.lora.dropout, config.lora.targets)
        unpruned = _build_model(config, original, run.dataset, run.bank, structure_rows(run.model))
    for name, (chosen, size) in sizes.items():
        prefix = "" if name == "batch_1" else "eval_batch_"
        pruned = time_per_query(run, chosen, batch_size=size)
        timing[f"{prefix}pruned_s_per_query"] = pruned
        if unpruned is not None:
            timing[f"{prefix}unpruned_s_per_query"] = time_per_query(run, chosen, unpruned, size)
            timing[f"{prefix}pruned_again_s_per_query"] = time_per_query(run, chosen, batch_size=size)  # drift
            timing[f"{prefix}speedup"] = timing[f"{prefix}unpruned_s_per_query"] / pruned
    return timing


def reused_kge_seconds(run: ElmmRun) -> float:
    """Seconds the KGE stage took when it ran, if this process reused its saved rows (0 otherwise):
    a resumed run's budget still pays for it."""
    info = run.structure_pretraining or {}
    return float(info.get("train_seconds") or 0.0) if "reused_from" in info else 0.0


def training_budget(train_config: Any, spent_minutes: float) -> Any:
    """The ``train`` section with ``max_minutes`` cut to what ``budget_minutes`` leaves after
    ``spent_minutes`` of building (at least a second, so a run that overspent still ends cleanly)."""
    if not train_config.budget_minutes:
        return train_config
    left = max(train_config.budget_minutes - spent_minutes, 1 / 60)
    if train_config.max_minutes:
        left = min(left, train_config.max_minutes)
    return dataclasses.replace(train_config, max_minutes=left)


def run_elmm(
    config: ElmmConfig, *, show_progress: bool = True, stop_after_steps: int | None = None, command: str = ""
) -> dict[str, Any]:
    """The whole recipe; returns the metrics document (also written to ``out/metrics.json``)."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    started = time.perf_counter()
    run = build_run(config, show_progress)
    build_s = time.perf_counter() - started
    dataset = run.dataset
    queries = TrainQueries.from_triples(dataset.with_inverse(dataset.train), dataset.num_relations)

    def make_batch(index: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        entities, relations = queries.keys[index, 0], queries.keys[index, 1]
        return run.inputs(entities, relations), queries.targets(index, dataset.num_entities), entities

    def evaluate_valid() -> float:
        result = run.evaluate("valid", config.train.valid_triples, show_progress=False)
        return result.metrics()["mrr"]

    probe = torch.randperm(len(queries), generator=torch.Generator().manual_seed(config.train.seed))[:256]

    @torch.no_grad()
    def probe_loss() -> float:
        """The loss on 256 fixed training queries in eval mode: a noise-free before/after."""
        run.model.eval()
        total, weight = 0.0, 0
        for chunk in probe.split(config.eval.batch_size):
            inputs, positives, heads = make_batch(chunk)
            count = int(positives.sum())
            with inference_precision(run):  # before and after training alike
                logits = run.model(*inputs).float()
            total += float(grouped_bce_loss(logits, positives, heads)) * count
            weight += count
        return total / weight

    loss_before = probe_loss()
    train_started = time.perf_counter()
    outcome = train(
        run.model,
        queries,
        make_batch,
        evaluate_valid,
        training_budget(config.train, (train_started - started + reused_kge_seconds(run)) / 60),
        out / STATE_DIR,
        show_progress=show_progress,
        stop_after_steps=stop_after_steps,
        fingerprint=config_fingerprint(config),
    )
    train_s = time.perf_counter() - train_started
    if outcome.stopped_by == "interrupted":
        return {"interrupted_at_step": outcome.progress.step}
    loss_after = probe_loss()
    valid = run.evaluate("valid", config.train.valid_triples, show_progress)
    test = run.evaluate("test", config.eval.test_triples, show_progress)
    checkpoint = save_checkpoint(run, out)
    trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    document = metrics_document(
        test,
        valid,
        model="ELMM",
        dataset=dataset.name,
        command=command,
        config=config.to_dict(),
        training={
            "seconds": outcome.progress.elapsed_s,  # over every process of a resumed run
            "seconds_this_process": train_s,
            "build_seconds": build_s,
            "budget_minutes": config.train.budget_minutes,
            "stopped_by": outcome.stopped_by,
            "optimizer_steps": outcome.progress.step,
            "epochs_completed": outcome.progress.epoch,
            "best_step": outcome.progress.best_step,
            "best_valid_mrr": outcome.progress.best_mrr,
            "history": outcome.progress.history,
            "train_queries": len(queries),
            "probe_loss_before": loss_before,
            "probe_loss_after": loss_after,
            "loss_first": outcome.mean_loss_first,
            "loss_last": outcome.mean_loss_last,
            "trainable_parameters": trainable,
        },
        structure_pretraining=run.structure_pretraining,
        pruning=run.prune_manifest
        and {k: run.prune_manifest[k] for k in ("pruned_layers", "init", "k", "error", "parameters")},
        images={"source": run.image_source, "per_entity": config.images.per_entity},
        evaluated={"test_triples": int(test.relations.shape[0]), "valid_triples": int(valid.relations.shape[0])},
        timing=inference_timing(run),
        checkpoint=str(checkpoint),
    )
    (out / "metrics.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


def print_results(document: dict[str, Any], baselines: dict[str, dict[str, Any]] | None = None) -> None:
    from rich.console import Console

    rows = {**(baselines or {}), f"ELMM ({document['dataset']})": document}
    Console().print(metrics_table(rows))
