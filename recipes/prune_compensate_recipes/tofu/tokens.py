"""Transferable tokens (paper §4.1): every modality becomes ids into a fixed codebook.

* **Textual**: the entity's text through MiniLM's WordPiece tokenizer; ``n`` ids per entity,
  embedded by MiniLM's *frozen* word embeddings (``(30522, 384)``; the paper used BERT's 768-d).
  Because the vocabulary and the codebook are fixed, two graphs that mention "Paris" share tokens.
* **Visual**: ids from a VQ tokenizer (BEiT's in the paper) with their codebook, when a dataset
  provides them as a safetensors file ``{"token_ids": (|E|, m) int, "codebook": (V, d_v) float}``;
  id ``-1`` pads entities with fewer (or no) images.
* **Structural**: relative positions in the query's context subgraph (``graph.sample_contexts``),
  embedded by a learnable codebook inside the model.

``EntityTokens`` holds one graph's ids (no weights: the codebooks live in the model), so a model
runs on any graph whose tokens were built this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from prune_compensate import PCError

PAD = -1


@dataclass
class EntityTokens:
    """``text`` ``(|E|, n)`` and ``visual`` ``(|E|, m)`` long ids, ``-1`` = padding, and the VQ
    ``visual_codebook`` ``(V, d_v)`` the visual ids index (frozen: it belongs to the tokenizer, like
    the text codebook, so it is never part of a checkpoint)."""

    text: torch.Tensor
    visual: torch.Tensor
    visual_codebook: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> EntityTokens:
        book = self.visual_codebook.to(device) if self.visual_codebook is not None else None
        return EntityTokens(self.text.to(device), self.visual.to(device), book)


def text_model_path(name: str | None) -> Path:
    """A local BERT-style folder (tokenizer + safetensors weights); ``None`` = the embedded MiniLM."""
    from prune_compensate import default_model_path

    path = Path(name) if name else default_model_path()
    if not (path / "model.safetensors").is_file():
        raise PCError(f"no model.safetensors in {path}", "pass a local BERT-style model folder as tokens.text_model")
    return path


def load_text_codebook(name: str | None = None) -> torch.Tensor:
    """The frozen word-embedding table ``(vocab, 384)`` of the text model (no other weights read)."""
    from safetensors import safe_open

    path = text_model_path(name) / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        keys = [k for k in handle.keys() if k.endswith("word_embeddings.weight")]
        if not keys:
            raise PCError(f"{path} has no word_embeddings.weight", "use a BERT-style text model")
        return handle.get_tensor(keys[0]).float()


class TextTokenizer:
    """Entity text → ``n`` WordPiece ids. Deterministic: the same text and graph give the same ids."""

    def __init__(self, model: str | None = None, n: int = 8, select: str = "first") -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(text_model_path(model)))
        self.n, self.select = n, select

    def __call__(self, texts: list[str | None]) -> torch.Tensor:
        """``(len(texts), n)`` ids, ``-1`` where a text has fewer tokens (or none)."""
        pieces = [self.tokenizer(t, add_special_tokens=False)["input_ids"] if t else [] for t in texts]
        if self.select == "idf":
            pieces = self._rarest(pieces)
        out = torch.full((len(texts), self.n), PAD, dtype=torch.long)
        for row, ids in enumerate(pieces):
            ids = ids[: self.n]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def _rarest(self, pieces: list[list[int]]) -> list[list[int]]:
        """Per entity, its ``n`` highest-IDF distinct tokens (IDF over this graph's entities), kept
        in reading order; ties broken by position, so the choice is deterministic."""
        df: dict[int, int] = {}
        for ids in pieces:
            for token in set(ids):
                df[token] = df.get(token, 0) + 1
        total = max(1, len(pieces))
        chosen = []
        for ids in pieces:
            first = {}
            for pos, token in enumerate(ids):
                first.setdefault(token, pos)
            ranked = sorted(first, key=lambda t: (-math.log(total / df[t]), first[t]))[: self.n]
            chosen.append(sorted(ranked, key=first.__getitem__))
        return chosen


def load_visual_tokens(path: str | Path, num_entities: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_ids (|E|, m), codebook (V, d_v))`` from a VQ token file; checked against the graph."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise PCError(f"visual token file {path} is unreadable ({err})", "write it with safetensors") from err
    if "token_ids" not in tensors or "codebook" not in tensors:
        raise PCError(f"visual token file {path} lacks token_ids or codebook", "store both tensors")
    ids, codebook = tensors["token_ids"].long(), tensors["codebook"].float()
    if ids.dim() != 2 or ids.shape[0] != num_entities:
        raise PCError(
            f"{path}: token_ids has shape {tuple(ids.shape)}, expected ({num_entities}, m)", "one row per entity"
        )
    if ids.numel() and int(ids.max()) >= codebook.shape[0]:
        raise PCError(f"{path}: a token id exceeds the codebook size {codebook.shape[0]}", "check the tokenizer output")
    ids = ids[:, :m]
    if ids.shape[1] < m:
        ids = torch.cat([ids, torch.full((num_entities, m - ids.shape[1]), PAD, dtype=torch.long)], 1)
    return ids, codebook


def build_entity_tokens(
    texts: list[str | None],
    tokenizer: TextTokenizer | None,
    visual: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> EntityTokens:
    """Ids of one graph; a missing modality is an empty ``(|E|, 0)`` id matrix."""
    n = len(texts)
    text = tokenizer(texts) if tokenizer is not None and tokenizer.n else torch.full((n, 0), PAD, dtype=torch.long)
    if visual is None:
        return EntityTokens(text, torch.full((n, 0), PAD, dtype=torch.long))
    return EntityTokens(text, visual[0], visual[1])
