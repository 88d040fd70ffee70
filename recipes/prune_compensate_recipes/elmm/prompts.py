"""Query prompts for (h, r, ?) with the token spans the KGC head pools over.

Every entity text (name + description) and relation text is tokenised once; a query's ids are
the concatenation ``[CLS/BOS] entity [E] [SEP] relation [R] [SEP]`` of those cached pieces, so
building a batch costs no tokeniser call and the entity / relation spans are known exactly (no
offset mapping needed). ``[E]``/``[R]`` are optional structure slots whose embeddings the model
replaces by a learned per-entity / per-relation vector. Head prediction (?, r, t) is the query
(t, r⁻¹) with relation id ``r + R`` and text "inverse of …".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from prune_compensate_recipes.mkgc.data import KGDataset

from .config import PromptSection


def readable(text: str) -> str:
    """Identifiers as words: ``/film/film/genre`` → ``film film genre``, ``acquired_abnormality``
    → ``acquired abnormality``."""
    return re.sub(r"\s+", " ", re.sub(r"[/_.]", " ", text)).strip()


@dataclass
class QueryBatch:
    """``input_ids``/``attention_mask`` ``(B, T)``; ``entity_mask``/``relation_mask`` ``(B, T)``
    mark the entity and relation spans (structure slots included); ``entity_slot`` /
    ``relation_slot`` ``(B,)`` the slot positions (−1 without structure tokens); ``last_index``
    ``(B,)`` the last real token; ``entities``/``relations`` ``(B,)`` the query ids."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    entity_mask: torch.Tensor
    relation_mask: torch.Tensor
    entity_slot: torch.Tensor
    relation_slot: torch.Tensor
    last_index: torch.Tensor
    entities: torch.Tensor
    relations: torch.Tensor

    def to(self, device: torch.device | str) -> QueryBatch:
        return QueryBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


class QueryPrompter:
    """Builds :class:`QueryBatch` es for (entity, relation) queries over ``2R`` relations."""

    def __init__(self, dataset: KGDataset, tokenizer: object, section: PromptSection) -> None:
        self.dataset, self.section = dataset, section
        tok = tokenizer
        self.start = [tok.cls_token_id] if tok.cls_token_id is not None else []
        if not self.start and tok.bos_token_id is not None:
            self.start = [tok.bos_token_id]
        sep = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        self.sep = [sep] if sep is not None else []
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (sep if sep is not None else 0)
        self.slot = self.pad  # placeholder id; the model overwrites a slot's embedding
        entity_texts = [self.entity_text(e) for e in range(dataset.num_entities)]
        relation_texts = [self.relation_text(r) for r in range(2 * dataset.num_relations)]
        self.entity_ids = self._tokenise(tok, entity_texts, section.entity_tokens)
        self.relation_ids = self._tokenise(tok, relation_texts, section.relation_tokens)

    @staticmethod
    def _tokenise(tok: object, texts: list[str], budget: int) -> list[list[int]]:
        encoded = tok(texts, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        return [ids or [tok.unk_token_id or 0] for ids in encoded]

    def entity_text(self, entity: int) -> str:
        label = self.dataset.entity_label(entity)
        # a bare Freebase id (/m/0abc) or WordNet-style label (dog_NN_1) becomes words
        return readable(label) if label.startswith("/") else label.replace("_", " ")

    def relation_text(self, relation: int) -> str:
        return readable(self.dataset.relation_label(relation))

    def text(self, entity: int, relation: int) -> str:
        """The prompt as plain text (calibration samples for the core's profiler and fitter)."""
        return f"{self.entity_text(entity)}. {self.relation_text(relation)}."

    def __call__(self, entities: torch.Tensor, relations: torch.Tensor) -> QueryBatch:
        structure = self.section.structure_tokens
        rows, spans = [], []
        for e, r in zip(entities.tolist(), relations.tolist(), strict=True):
            ent = self.entity_ids[e] + ([self.slot] if structure else [])
            rel = self.relation_ids[r] + ([self.slot] if structure else [])
            e0 = len(self.start)
            r0 = e0 + len(ent) + len(self.sep)
            rows.append(self.start + ent + self.sep + rel + self.sep)
            spans.append((e0, e0 + len(ent), r0, r0 + len(rel)))
        b, t = len(rows), max(len(row) for row in rows)
        input_ids = torch.full((b, t), self.pad, dtype=torch.long)
        attention = torch.zeros(b, t, dtype=torch.long)
        entity_mask = torch.zeros(b, t, dtype=torch.bool)
        relation_mask = torch.zeros(b, t, dtype=torch.bool)
        entity_slot = torch.full((b,), -1, dtype=torch.long)
        relation_slot = torch.full((b,), -1, dtype=torch.long)
        for i, (row, (e0, e1, r0, r1)) in enumerate(zip(rows, spans, strict=True)):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
            entity_mask[i, e0:e1] = True
            relation_mask[i, r0:r1] = True
            if structure:
                entity_slot[i], relation_slot[i] = e1 - 1, r1 - 1
        return QueryBatch(
            input_ids=input_ids,
            attention_mask=attention,
            entity_mask=entity_mask,
            relation_mask=relation_mask,
            entity_slot=entity_slot,
            relation_slot=relation_slot,
            last_index=attention.sum(1) - 1,
            entities=entities.clone(),
            relations=relations.clone(),
        )
