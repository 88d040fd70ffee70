"""The ELMM model: MVTC → (pruned, compensated, LoRA-adapted) backbone → KGC head.

Sequence fed to the backbone's text model (as ``inputs_embeds``)::

    [2H compressed image tokens | all N·M image tokens without MVTC] [CLS/BOS] entity [SEP] relation [SEP]

The backbone is any model the core supports: the text model is the deepest ancestor of the
decoder's block list whose ``forward`` takes ``inputs_embeds`` (``LlamaModel`` inside LLaVA,
``BertModel`` itself for MiniLM) — found by structure, as the core finds the blocks.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from prune_compensate import DecoderLayout, LinearCompensation, PCError, find_decoder

from .images import ImageBatch
from .modules import EntityRowScores, KGCHead, KgeScore, MultiViewTokenCompressor, ProjectedFeatures
from .prompts import QueryBatch

PROJECTION_PREFIXES = {
    "q": ("q_proj", "query", "q_lin"),
    "k": ("k_proj", "key", "k_lin"),
    "v": ("v_proj", "value", "v_lin"),
    "o": ("o_proj", "out_proj", "out_lin"),
}


def find_text_model(backbone: nn.Module, layout: DecoderLayout | None = None) -> str:
    """Dotted name of the deepest module above the decoder blocks that accepts ``inputs_embeds``."""
    layout = layout or find_decoder(backbone)
    parts = layout.blocks_path.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        name = ".".join(parts[:depth])
        module = backbone.get_submodule(name) if name else backbone
        if "inputs_embeds" in inspect.signature(module.forward).parameters:
            return name
    raise PCError(
        f"no module of {type(backbone).__name__} above {layout.blocks_path} takes inputs_embeds",
        "this backbone cannot take MVTC tokens; please open an issue with the model class",
    )


def lora_target_names(backbone: nn.Module, targets: list[str]) -> list[str]:
    """Full names of the q/k/v/o projections (``targets``) of every *kept* attention layer.

    Pruned layers hold a ``LinearCompensation`` and no projections, so they get no adapter."""
    layout = find_decoder(backbone)
    names = []
    for index in layout.attention_layers:
        core = layout.core(index)
        if isinstance(core, LinearCompensation):
            continue
        children = {name for name, _ in core.named_children()}
        for target in targets:
            match = [c for c in PROJECTION_PREFIXES[target] if c in children]
            if not match:
                raise PCError(
                    f"attention layer {index} has no {target} projection (children: {', '.join(sorted(children))})",
                    "set lora.targets to projections this model has",
                )
            names.append(f"{layout.blocks_path}.{index}.{layout.core_names[index]}.{match[0]}")
    return names


def inject_lora(backbone: nn.Module, rank: int, alpha: int, dropout: float, names: list[str]) -> None:
    """peft LoRA adapters on the modules ``names`` (full names), in place; nothing if none."""
    if names and rank > 0:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names)
        inject_adapter_in_model(config, backbone)


def add_lora(backbone: nn.Module, rank: int, alpha: int, dropout: float, targets: list[str]) -> list[str]:
    """LoRA on the ``targets`` projections of every kept layer; returns the adapted module names."""
    names = lora_target_names(backbone, targets) if rank > 0 else []
    inject_lora(backbone, rank, alpha, dropout, names)
    return names


def set_dropout(backbone: nn.Module, p: float) -> int:
    """Every ``nn.Dropout`` of the backbone drops with probability ``p`` (attention dropout too:
    transformers' attention passes its dropout module's ``p`` to the kernel); → how many."""
    modules = [m for m in backbone.modules() if isinstance(m, nn.Dropout)]
    for module in modules:
        module.p = p
    return len(modules)


def set_trainable(backbone: nn.Module, compensation: bool) -> None:
    """Freeze the backbone but its LoRA adapters and (if ``compensation``) its compensation maps."""
    for name, param in backbone.named_parameters():
        param.requires_grad = "lora_" in name
    if compensation:
        for module in backbone.modules():
            if isinstance(module, LinearCompensation):
                for param in module.parameters():
                    param.requires_grad = True


class ElmmModel(nn.Module):
    """Scores all entities for (entity, relation) queries: ``forward`` → ``(B, |E|)`` logits.

    ``image_dim``: width of the image tokens the bank gives (D for the vision tower's tokens, F for
    precomputed features, 0 for no images). ``mvtc_heads`` = 0 feeds all image tokens uncompressed
    (the "w/o MVTC" ablation). ``structure_score`` = (KGE kind, its margin) adds that KGE's score
    of every entity, from the ``structure_features`` rows, to the head's logits (``KgeScore``); the
    head's last layer then starts at zero, so the untrained model ranks as the KGE does.
    ``head_from_structure``: the head's last layer scores each entity through its KGE row
    (``EntityRowScores``) instead of a free weight row."""

    def __init__(
        self,
        backbone: nn.Module,
        num_entities: int,
        num_relations: int,
        *,
        image_dim: int = 0,
        mvtc_heads: int = 4,
        use_text_view: bool = True,
        use_image_view: bool = True,
        plain_head: bool = False,
        structure_tokens: bool = False,
        structure_features: tuple[torch.Tensor, torch.Tensor] | None = None,
        structure_score: tuple[str, float] | None = None,
        head_from_structure: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.text_model_name = find_text_model(backbone)
        dim = backbone.get_input_embeddings().embedding_dim
        self.dim, self.image_dim = dim, image_dim
        reference = next(backbone.parameters())
        factory: dict[str, Any] = {"device": reference.device}
        self.feature_proj = nn.Linear(image_dim, dim, **factory) if image_dim and image_dim != dim else None
        self.mvtc = (
            MultiViewTokenCompressor(dim, mvtc_heads, use_text_view, use_image_view).to(**factory)
            if image_dim and mvtc_heads
            else None
        )
        self.head = KGCHead(dim, num_entities, plain=plain_head).to(**factory)
        word_std = backbone.get_input_embeddings().weight.std().item()
        self.entity_structure: nn.Module | None = None
        self.relation_structure: nn.Module | None = None
        if structure_tokens and structure_features is not None:  # frozen KGE rows → learned map
            entity_rows, relation_rows = (f.to(reference.device) for f in structure_features)
            if entity_rows.shape[0] != num_entities or relation_rows.shape[0] != num_relations:
                raise ValueError("structure features must have one row per entity and per (inverse) relation")
            self.entity_structure = ProjectedFeatures(entity_rows, dim, word_std)
            self.relation_structure = ProjectedFeatures(relation_rows, dim, word_std)
        elif structure_tokens:
            self.entity_structure = nn.Embedding(num_entities, dim, **factory)
            self.relation_structure = nn.Embedding(num_relations, dim, **factory)
            for table in (self.entity_structure, self.relation_structure):
                nn.init.normal_(table.weight, std=word_std)
        self.structure_score: KgeScore | None = None
        if structure_score is not None:
            if structure_features is None:
                raise ValueError("structure_score needs the KGE's structure_features")
            kind, margin = structure_score
            entity_rows, relation_rows = (f.to(reference.device) for f in structure_features)
            self.structure_score = KgeScore(entity_rows, relation_rows, kind, offset=margin)
            nn.init.zeros_(self.head.scores.weight)
            nn.init.zeros_(self.head.scores.bias)
        if head_from_structure:
            if structure_features is None:
                raise ValueError("head_from_structure needs the KGE's structure_features")
            in_features = self.head.scores.in_features
            self.head.scores = EntityRowScores(structure_features[0].to(reference.device), in_features)

    @property
    def text_model(self) -> nn.Module:
        return self.backbone.get_submodule(self.text_model_name) if self.text_model_name else self.backbone

    def _embed(self, query: QueryBatch) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(query.input_ids)  # (B, T, D)
        if self.entity_structure is not None:
            positions = torch.arange(embeds.shape[1], device=embeds.device)[None]
            at_entity = (positions == query.entity_slot[:, None])[..., None]
            at_relation = (positions == query.relation_slot[:, None])[..., None]
            embeds = torch.where(at_entity, self.entity_structure(query.entities)[:, None].to(embeds), embeds)
            embeds = torch.where(at_relation, self.relation_structure(query.relations)[:, None].to(embeds), embeds)
        return embeds

    def _image_prefix(
        self, embeds: torch.Tensor, query: QueryBatch, images: ImageBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """→ prefix tokens ``(B, P, D)`` and their mask ``(B, P)``."""
        tokens, cls = images.tokens.to(embeds), images.cls.to(embeds)
        if self.feature_proj is not None:
            tokens, cls = self.feature_proj(tokens), self.feature_proj(cls)
        if self.mvtc is None:
            b, n, m, d = tokens.shape
            return tokens.reshape(b, n * m, d), images.mask[:, :, None].expand(b, n, m).reshape(b, n * m)
        span = query.entity_mask | query.relation_mask
        return self.mvtc(embeds, span, tokens, images.mask, cls)

    def forward(self, query: QueryBatch, images: ImageBatch | None = None) -> torch.Tensor:
        embeds = self._embed(query)
        attention = query.attention_mask.bool()
        image_positions = torch.zeros_like(attention)
        entity_mask, relation_mask, last = query.entity_mask, query.relation_mask, query.last_index
        if images is not None and self.image_dim:
            prefix, prefix_mask = self._image_prefix(embeds, query, images)
            p = prefix.shape[1]
            embeds = torch.cat([prefix.to(embeds.dtype), embeds], dim=1)
            attention = torch.cat([prefix_mask, attention], dim=1)
            pad = torch.zeros_like(prefix_mask)
            image_positions = torch.cat([prefix_mask, image_positions], dim=1)
            entity_mask, relation_mask = torch.cat([pad, entity_mask], 1), torch.cat([pad, relation_mask], 1)
            last = last + p
        hidden = self.text_model(inputs_embeds=embeds, attention_mask=attention.long()).last_hidden_state
        logits = self.head(hidden.float(), image_positions, entity_mask, relation_mask, last).float()
        if self.structure_score is not None:
            logits = logits + self.structure_score(query.entities, query.relations)
        return logits


def checkpoint_state(model: ElmmModel) -> dict[str, torch.Tensor]:
    """What an ELMM checkpoint stores beside the base model's name: every parameter that is not an
    untouched base-model weight (heads, MVTC, structure tables, LoRA, compensation maps)."""
    state = {}
    for name, tensor in model.state_dict().items():
        if not name.startswith("backbone.") or "lora_" in name:
            state[name] = tensor
    for name, module in model.backbone.named_modules():
        if isinstance(module, LinearCompensation):
            for pname, tensor in module.state_dict().items():
                state[f"backbone.{name}.{pname}"] = tensor
    return {k: v.detach().contiguous() for k, v in state.items()}
