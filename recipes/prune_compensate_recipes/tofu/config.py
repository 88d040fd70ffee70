"""The TOFU recipe's configuration (paper §4, appendix B.3); loaded like every recipe's config.

``pc run tofu --config recipes/configs/tofu_*.yaml [section.key=value ...]``. One config describes a
whole protocol: train on ``graphs`` (one graph = transductive training, several = pre-training),
then evaluate on ``targets`` (unseen graphs: zero-shot, then fine-tuned when ``finetune.epochs > 0``)
or, with no targets, on the test split of each training graph. ``checkpoint`` starts from a saved
model instead of random weights (``train.epochs=0`` then skips training).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prune_compensate import PCError

from ..config import load_dataclass_config, save_config

__all__ = ["TofuConfig", "load_config", "save_config"]

MESSAGES = ("transe", "distmult", "rotate")


@dataclass
class TokenSection:
    """Textual tokens: the entity text through the MiniLM WordPiece tokenizer, ``text_tokens``
    (8 or 16) of them, chosen ``first`` (in reading order) or ``idf`` (the rarest in the graph,
    kept in reading order), embedded by MiniLM's frozen word embeddings (384-d). Visual tokens:
    ``visual_tokens`` ids per entity from a VQ tokenizer, read from ``visual`` (a safetensors file
    with ``token_ids`` ``(|E|, m)`` and ``codebook`` ``(V, d_v)``; ``auto`` = the graph folder's
    ``visual_tokens.safetensors`` when present, ``none`` = never)."""

    text_tokens: int = 8
    text_select: str = "first"
    text_model: str | None = None
    visual: str = "auto"
    visual_tokens: int = 8


@dataclass
class StructureSection:
    """The query's context subgraph: ``examples`` triples of the query relation plus the query
    entity, ``hops``-hop neighbourhoods around them with at most ``max_nodes_per_hop`` new nodes
    per hop and seed (random, re-drawn every step; fixed per query at evaluation), and at most
    ``max_edges`` of the edges among them (a random subset, for dense graphs)."""

    hops: int = 2
    examples: int = 1
    max_nodes_per_hop: int = 32
    max_edges: int = 2000


@dataclass
class ModelSection:
    """Hidden size 32 and 6 GNN layers in SE and GP (paper B.3); ME is a small transformer.
    ``gp_max_new_nodes``: per query and GP layer, keep at most this many newly reached entities
    (0 = all; a CPU budget for deep propagation over graphs with hubs). ``checkpoint_gp``:
    recompute GP layers in the backward pass (less memory). ``unreached_prior`` (beyond the paper):
    entities the propagation does not reach are scored by a learned prior over graph statistics
    (how often the entity is a tail of the query relation, its in-degree; ``UnreachedPrior``)
    instead of one shared constant, and training keeps queries whose answer is out of reach."""

    hidden: int = 32
    se_layers: int = 6
    gp_layers: int = 6
    me_layers: int = 1
    me_heads: int = 4
    visual_dim: int = 32
    messages: list[str] = field(default_factory=lambda: list(MESSAGES))
    checkpoint_gp: bool = False
    gp_max_new_nodes: int = 0
    unreached_prior: bool = False


@dataclass
class TrainSection:
    """Paper: 30 epochs, batch 256, Adam at 5e-4. ``max_minutes`` caps wall-clock time (0 = none),
    ``max_steps`` optimizer steps (0 = none). ``eval_every`` steps between valid evaluations on
    ``valid_triples`` valid triples (0 = every epoch / all). ``mixed_precision``: ``bf16`` autocast of
    the forward pass, ``no`` = float32. ``resume``: continue from ``out/train_state`` (written after
    every validation) when a killed run left one; ``seed`` also seeds the weight initialisation."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 5e-4
    seed: int = 0
    max_minutes: float = 0.0
    max_steps: int = 0
    eval_every: int = 0
    valid_triples: int = 500
    patience: int = 5
    mixed_precision: str = "no"
    resume: bool = True


@dataclass
class FinetuneSection:
    """Fine-tuning on each target graph after its zero-shot evaluation (0 epochs = zero-shot only)."""

    epochs: int = 0
    lr: float = 5e-4
    max_minutes: float = 0.0
    max_steps: int = 0


@dataclass
class EvalSection:
    batch_size: int = 16
    test_triples: int = 0


@dataclass
class AblationSection:
    """Paper fig. 5, one switch each. ``single_message``: one of transe/distmult/rotate instead of
    the mixture of messages."""

    no_se: bool = False
    no_structural_tokens: bool = False
    no_text: bool = False
    no_visual: bool = False
    single_message: str | None = None


@dataclass
class TofuConfig:
    """``graphs``/``targets``: staged names (``DB15K``, ``inductive/fb237_v1``), pykeen graphs
    (``umls``) or folders. ``device``: ``cpu``/``cuda``."""

    graphs: list[str] = field(default_factory=lambda: ["umls"])
    targets: list[str] = field(default_factory=list)
    checkpoint: str | None = None
    out: str = "runs/tofu"
    device: str = "cpu"
    tokens: TokenSection = field(default_factory=TokenSection)
    structure: StructureSection = field(default_factory=StructureSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    eval: EvalSection = field(default_factory=EvalSection)
    ablation: AblationSection = field(default_factory=AblationSection)

    def validate(self) -> TofuConfig:
        if not self.graphs and not self.checkpoint:
            raise PCError("the config names no training graph and no checkpoint", "set graphs: [...] or checkpoint")
        if self.tokens.text_select not in ("first", "idf"):
            raise PCError(f"tokens.text_select must be first or idf, got {self.tokens.text_select!r}", "fix the config")
        if self.tokens.text_tokens < 0 or self.tokens.visual_tokens < 0:
            raise PCError("tokens.text_tokens and tokens.visual_tokens must be ≥ 0", "fix the config")
        bad = [m for m in self.messages if m not in MESSAGES]
        if bad or not self.messages:
            raise PCError(f"message functions must be among {', '.join(MESSAGES)}, got {bad or '[]'}", "fix the config")
        if self.model.hidden % 2 or self.model.hidden % self.model.me_heads:
            raise PCError("model.hidden must be even (RotatE) and divisible by model.me_heads", "fix the config")
        if min(self.model.se_layers, self.model.gp_layers) < 1 or self.structure.hops < 1:
            raise PCError("model.se_layers, model.gp_layers and structure.hops must be ≥ 1", "fix the config")
        if self.structure.hops > 100:  # a context's hop counts are stored in a byte
            raise PCError(f"structure.hops must be ≤ 100, got {self.structure.hops}", "fix the config")
        if self.train.batch_size < 1 or self.eval.batch_size < 1:
            raise PCError("train.batch_size and eval.batch_size must be ≥ 1", "fix the config")
        if self.train.mixed_precision not in ("no", "bf16"):
            raise PCError("train.mixed_precision must be no or bf16 (fp16 would need loss scaling)", "fix the config")
        return self

    @property
    def messages(self) -> list[str]:
        """The message functions after the ``single_message`` ablation."""
        return [self.ablation.single_message] if self.ablation.single_message else list(self.model.messages)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TofuConfig:
    """Read a YAML config (or start from the defaults), apply overrides, validate."""
    return load_dataclass_config(TofuConfig, path, overrides)
