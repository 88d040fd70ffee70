"""The TOFU protocol: build tokens for each graph, train (transductive or multi-graph pre-training),
evaluate zero-shot on unseen graphs and after fine-tuning on them, write metrics and a checkpoint.

The checkpoint (``out/checkpoint/``: ``config.yaml``, ``tofu.safetensors``) holds no entity- or
relation-specific tensor, so ``load_tofu`` + ``prepare_graph`` runs it on any graph.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prune_compensate import PCError

from ..config import save_config
from ..io import atomic_dir_write
from ..mkgc.data import KGDataset, relation_categories
from ..mkgc.evaluate import InverseRelationScorer, evaluate_link_prediction, metrics_document
from ..mkgc.staged import resolve_dataset
from ..training import LoopLimits, TrainingLoop, config_fingerprint
from .config import TofuConfig, load_config
from .graph import ContextSampler, KGGraph
from .model import UNREACHED, Tofu, count_parameters
from .tokens import EntityTokens, TextTokenizer, build_entity_tokens, load_text_codebook, load_visual_tokens

CHECKPOINT = "checkpoint"
STATE_DIR = "train_state"
VISUAL_FILE = "visual_tokens.safetensors"


@dataclass
class GraphData:
    """One graph ready for the model: observed graph (its train split), tokens, context sampler."""

    name: str
    dataset: KGDataset
    graph: KGGraph
    tokens: EntityTokens
    sampler: ContextSampler


def load_graph_dataset(spec: str) -> tuple[KGDataset, Path | None]:
    """A dataset name, a pykeen graph, or a folder, with its folder (``mkgc.staged.resolve_dataset``)."""
    return resolve_dataset(spec)


def prepare_graph(
    spec: str, config: TofuConfig, tokenizer: TextTokenizer | None, device: torch.device | str = "cpu"
) -> GraphData:
    """The graph's observed edges, sampler and entity tokens; the token ids (and any visual
    codebook) on ``device``, where the model indexes them (the graph and sampler stay on the CPU)."""
    dataset, folder = load_graph_dataset(spec)
    if dataset.train.shape[0] == 0:
        raise PCError(f"graph {spec} has no training triples", "TOFU needs an observed graph (train split)")
    visual = None
    source = config.tokens.visual
    if not config.ablation.no_visual and config.tokens.visual_tokens and source != "none":
        path = folder / VISUAL_FILE if source == "auto" and folder is not None else Path(source)
        if source != "auto" or path.is_file():
            visual = load_visual_tokens(path, dataset.num_entities, config.tokens.visual_tokens)
    text_tokenizer = None if config.ablation.no_text else tokenizer
    tokens = build_entity_tokens(dataset.entity_text or [None] * dataset.num_entities, text_tokenizer, visual)
    graph = KGGraph.from_triples(dataset.train, dataset.num_entities, dataset.num_relations)
    s = config.structure
    sampler = ContextSampler(graph, s.hops, s.examples, s.max_nodes_per_hop, s.max_edges)
    return GraphData(spec, dataset, graph, tokens.to(device), sampler)


def build_model(config: TofuConfig) -> Tofu:
    m = config.model
    codebook = (
        None
        if config.ablation.no_text or not config.tokens.text_tokens
        else load_text_codebook(config.tokens.text_model)
    )
    return Tofu(
        hidden=m.hidden,
        se_layers=m.se_layers,
        gp_layers=m.gp_layers,
        me_layers=m.me_layers,
        me_heads=m.me_heads,
        hops=config.structure.hops,
        messages=config.messages,
        text_codebook=codebook,
        visual_dim=m.visual_dim,
        use_se=not config.ablation.no_se,
        use_structural_tokens=not config.ablation.no_structural_tokens,
        checkpoint_gp=m.checkpoint_gp,
        gp_max_new_nodes=m.gp_max_new_nodes,
        unreached_prior=m.unreached_prior,
    )


def make_tokenizer(config: TofuConfig) -> TextTokenizer | None:
    t = config.tokens
    return TextTokenizer(t.text_model, t.text_tokens, t.text_select) if t.text_tokens else None


# -- scoring ---------------------------------------------------------------------------------------
def train_logits(model: Tofu, data: GraphData, edges: torch.Tensor, seed: int, device: torch.device) -> torch.Tensor:
    """Scores ``(B, N)`` of training queries = graph edges, each hiding its own edge and inverse."""
    g = data.graph
    hidden = torch.stack([edges, g.partner(edges)], 1)
    ctx = data.sampler.sample(g.src[edges], g.rel[edges], list(hidden), seed).to(device)
    rows = torch.arange(edges.shape[0]).repeat_interleave(2)
    masked = (rows.to(device), hidden.flatten().to(device))
    return model(g, data.tokens, g.src[edges].to(device), ctx, masked)


def scorer(model: Tofu, data: GraphData, device: torch.device, seed: int = 0) -> InverseRelationScorer:
    """Tail scores of (e, r, ?) over the observed graph; each query's context is seeded by the
    query itself, so an evaluation is deterministic and does not depend on the batch size."""
    empty = torch.empty(0, dtype=torch.long)

    def fn(entities: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        keys = (entities * 2 * data.graph.num_relations + relations + seed).tolist()
        ctx = data.sampler.sample(entities, relations, [empty] * entities.shape[0], keys).to(device)
        return model(data.graph, data.tokens, entities.to(device), ctx).float()

    return InverseRelationScorer(fn, data.graph.num_relations)


@torch.no_grad()
def evaluate(
    model: Tofu,
    data: GraphData,
    split: str,
    config: TofuConfig,
    device: torch.device,
    limit: int = 0,
    show_progress: bool = True,
):  # noqa: ANN201 - LinkPredictionResult
    ds = data.dataset
    triples = ds.evaluation_triples(split)
    if limit and triples.shape[0] > limit:
        triples = triples[torch.randperm(triples.shape[0], generator=torch.Generator().manual_seed(0))[:limit]]
    was_training = model.training
    model.eval()
    result = evaluate_link_prediction(
        scorer(model, data, device),
        triples,
        ds.all_triples(),
        ds.num_entities,
        ds.num_relations,
        batch_size=config.eval.batch_size,
        categories=relation_categories(ds.train, ds.num_relations),
        show_progress=show_progress,
        description=f"{data.name} {split}",
    )
    model.train(was_training)
    return result


# -- training --------------------------------------------------------------------------------------
def peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _plan(graphs: list[GraphData], batch_size: int, seed: int, epoch: int) -> list[tuple[int, torch.Tensor]]:
    """The epoch's batches ``(graph index, edge ids)``: each graph's edges shuffled and cut into
    batches, the batches of all graphs interleaved in a seeded order (the same on every resume)."""
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    plan = []
    for i, d in enumerate(graphs):
        order = torch.randperm(d.graph.num_edges, generator=gen)
        plan += [(i, order[s : s + batch_size]) for s in range(0, order.numel(), batch_size)]
    return [plan[j] for j in torch.randperm(len(plan), generator=gen).tolist()]


def train_on(
    model: Tofu,
    graphs: list[GraphData],
    config: TofuConfig,
    *,
    epochs: int,
    lr: float,
    max_minutes: float,
    max_steps: int,
    label: str,
    device: torch.device,
    show_progress: bool = True,
    state_dir: Path | None = None,
    stop_after_steps: int | None = None,
    diagnose: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Adam on the cross-entropy over all entities (every entity but the target is a negative,
    eq. 14). Batches come from one graph each, graphs interleaved in a seeded order. The valid MRR
    (mean over graphs, ``valid_triples`` each) picks the weights kept; budget and patience stop.

    With ``state_dir`` the training state (``training.save_training_state``) is written after every
    validation, and a run finds and resumes it: killed at any point, it ends with the weights an
    uninterrupted run ends with. ``stop_after_steps`` simulates that kill (tests): it saves the state
    and returns ``{"interrupted_at_step": n}``. ``diagnose`` runs after every validation (model in
    eval mode); what it returns is kept, with the step, under ``"diagnostics"``."""
    t = config.train
    torch.manual_seed(t.seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batches_per_epoch = sum(math.ceil(d.graph.num_edges / t.batch_size) for d in graphs)
    limits = LoopLimits(
        epochs=epochs,
        eval_every=t.eval_every or batches_per_epoch,
        patience=t.patience,
        max_minutes=max_minutes,
        max_steps=max_steps,
    )
    precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.mixed_precision)
    autocast = torch.autocast(device.type, dtype=precision, enabled=precision is not None)

    diagnostics: list[dict[str, float]] = []

    def valid_mrr() -> float:
        scores = [evaluate(model, d, "valid", config, device, t.valid_triples, False).metrics()["mrr"] for d in graphs]
        mrr = sum(scores) / len(scores)
        if diagnose is not None:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                diagnostics.append({"step": loop.progress.step, "valid_mrr": mrr, **diagnose()})
            model.train(was_training)
        return mrr

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    loop = TrainingLoop(
        model, optimizer, limits, state_dir, valid_mrr, label=label, total_steps=epochs * batches_per_epoch,
        show_progress=show_progress, log=log, fingerprint=config_fingerprint(config),
    )  # fmt: skip
    counters = loop.progress.counters
    model.train()
    with loop:
        counters = loop.progress.counters  # the resumed run's, when there is one
        counters.setdefault("queries", 0)
        counters.setdefault("unreachable", 0)  # training queries whose answer is out of the GP's reach: no loss
        while loop.next_epoch():
            for i, edges in loop.remaining(_plan(graphs, t.batch_size, t.seed, loop.progress.epoch)):
                data = graphs[i]
                with autocast:
                    seed = t.seed * 10**6 + loop.progress.step
                    logits = train_logits(model, data, edges, seed=seed, device=device).float()
                target = data.graph.dst[edges].to(device)
                reachable = logits[torch.arange(edges.shape[0], device=device), target] > UNREACHED
                counters["queries"] += edges.shape[0]
                counters["unreachable"] += int((~reachable).sum())
                if not reachable.any():
                    continue
                loss = torch.nn.functional.cross_entropy(logits[reachable], target[reachable])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if loop.step_done(loss.item()):
                    break
                if stop_after_steps is not None and loop.progress.step >= stop_after_steps:
                    loop.interrupted = True
                    return {"interrupted_at_step": loop.progress.step}
    elapsed, step = loop.elapsed, loop.progress.step
    first, last = loop.loss_window(50)
    return {
        "steps": step,
        "epochs_done": step / batches_per_epoch,
        "batches_per_epoch": batches_per_epoch,
        "train_seconds": elapsed,
        "seconds_per_epoch": elapsed / max(step, 1) * batches_per_epoch,
        "stopped_by": loop.progress.stopped_by,
        "unreachable_answer_fraction": counters["unreachable"] / max(counters["queries"], 1),
        "best_valid_mrr": loop.progress.best_mrr,
        "loss_first": first,
        "loss_last": last,
        "history": loop.progress.history,
        **({"diagnostics": diagnostics} if diagnose is not None else {}),
        **peak_memory_mb(device),
    }


# -- checkpoint ------------------------------------------------------------------------------------
def save_checkpoint(model: Tofu, config: TofuConfig, out: Path) -> Path:
    """``out/checkpoint/``: config.yaml + tofu.safetensors (the frozen text codebook is left out:
    it is the tokenizer's, reloaded from the package)."""
    target = out / CHECKPOINT

    def write(tmp: Path) -> None:
        save_config(config, tmp / "config.yaml")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "tofu.safetensors"))

    atomic_dir_write(target, write, owned="tofu.safetensors")
    return target


def load_tofu(path: str | Path, overrides: list[str] | None = None) -> tuple[Tofu, TofuConfig]:
    """Rebuild the model from a checkpoint's config, then load its weights (strict)."""
    path = Path(path)
    if (path / CHECKPOINT / "tofu.safetensors").is_file():
        path = path / CHECKPOINT
    if not (path / "tofu.safetensors").is_file():
        raise PCError(f"{path} is not a TOFU checkpoint (no tofu.safetensors)", "point at a run's out dir")
    config = load_config(path / "config.yaml", overrides)
    model = build_model(config)
    try:
        model.load_state_dict(load_file(str(path / "tofu.safetensors")))
    except RuntimeError as err:
        raise PCError(
            f"{path} does not match this TOFU architecture ({str(err).splitlines()[0]})", "use its config"
        ) from err
    return model, config


# -- the protocol ----------------------------------------------------------------------------------
def _document(result, valid, data: GraphData, setting: str, meta: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    doc = metrics_document(result, valid, dataset=data.name, setting=setting, **meta)
    doc["graph"] = {
        "entities": data.dataset.num_entities,
        "relations": data.dataset.num_relations,
        "observed_triples": int(data.dataset.train.shape[0]),
    }
    return doc


def slug(name: str) -> str:
    return name.replace("inductive/", "").replace("/", "_")


def run_tofu(
    config: TofuConfig, show_progress: bool = True, command: str | None = None, stop_after_steps: int | None = None
) -> list[dict[str, Any]] | dict[str, int]:
    """Train / pre-train, then evaluate (transductive, or zero-shot + fine-tune on each target).
    Writes ``out/metrics_<graph>_<setting>.json`` per evaluation, ``out/metrics.json`` (all of them)
    and ``out/checkpoint/``; returns the documents. The weights are initialised from
    ``train.seed``; training resumes from ``out/train_state`` (``train.resume``).
    ``stop_after_steps`` ends training there as a kill would (tests): ``{"interrupted_at_step": n}``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(config.device if config.device != "cuda" or torch.cuda.is_available() else "cpu")
    if config.checkpoint:
        model, _ = load_tofu(config.checkpoint)
    else:
        torch.manual_seed(config.train.seed)  # the same initial weights on every run of a config
        model = build_model(config)
    model.to(device)
    params = count_parameters(model)
    print(f"TOFU trainable parameters: {params:,} ({params / 1e6:.3f}M; frozen codebooks excluded)", file=sys.stderr)
    tokenizer = make_tokenizer(config)
    meta: dict[str, Any] = {"config": dataclasses.asdict(config), "command": command or "", "parameters": params}
    documents = []
    training = None
    graphs = [prepare_graph(g, config, tokenizer, device) for g in config.graphs]
    if graphs and config.train.epochs > 0:
        t = config.train
        training = train_on(
            model,
            graphs,
            config,
            epochs=t.epochs,
            lr=t.lr,
            max_minutes=t.max_minutes,
            max_steps=t.max_steps,
            label="training" if len(graphs) == 1 else "pre-training",
            device=device,
            show_progress=show_progress,
            state_dir=out / STATE_DIR if t.resume else None,
            stop_after_steps=stop_after_steps,
        )
        if "interrupted_at_step" in training:
            return training
    checkpoint = save_checkpoint(model, config, out)
    meta["checkpoint"] = str(checkpoint)
    if not config.targets:
        setting = "transductive" if len(graphs) == 1 else "pre-train"
        for data in graphs:
            test = evaluate(model, data, "test", config, device, config.eval.test_triples, show_progress)
            documents.append(_document(test, None, data, setting, {**meta, "training": training}))
    for spec in config.targets:
        data = prepare_graph(spec, config, tokenizer, device)
        test = evaluate(model, data, "test", config, device, config.eval.test_triples, show_progress)
        documents.append(_document(test, None, data, "zero-shot", {**meta, "pretraining": training}))
        f = config.finetune
        if f.epochs > 0:
            tuned = copy.deepcopy(model)
            info = train_on(
                tuned,
                [data],
                config,
                epochs=f.epochs,
                lr=f.lr,
                max_minutes=f.max_minutes,
                max_steps=f.max_steps,
                label=f"fine-tuning {spec}",
                device=device,
                show_progress=show_progress,
            )
            test = evaluate(tuned, data, "test", config, device, config.eval.test_triples, show_progress)
            documents.append(
                _document(test, None, data, "fine-tune", {**meta, "pretraining": training, "finetuning": info})
            )
    for doc in documents:
        path = out / f"metrics_{slug(doc['dataset'])}_{doc['setting']}.json"
        path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(documents, indent=1), encoding="utf-8")
    return documents


def print_results(documents: list[dict[str, Any]], baselines: dict[str, dict[str, Any]] | None = None) -> None:
    from rich.console import Console

    from ..mkgc.evaluate import metrics_table

    rows = {**(baselines or {})}
    for doc in documents:
        rows[f"TOFU {doc['dataset']} ({doc['setting']})"] = doc
    Console().print(metrics_table(rows))
