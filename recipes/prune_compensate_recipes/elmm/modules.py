"""ELMM's trainable parts around the (pruned) backbone.

Shapes: B queries, N ≤ 10 images per entity (0 allowed), M image tokens per image, D the
backbone's hidden size, H compressor heads (d = D / H), |E| entities.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..mkgc.kge import kge_scores


class _ViewAttention(nn.Module):
    """One view of MVTC (eqs. 2–5): a 1×D query attends over the N·M image tokens with H heads;
    queries/keys are projected to d = D/H per head, values stay D-wide per head, so every head
    returns a 1×D vector and the view returns H tokens ``(B, H, D)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim, bias=False)  # H × (D → d)
        self.key = nn.Linear(dim, dim, bias=False)  # H × (D → d)
        self.value = nn.Linear(dim, heads * dim, bias=False)  # H × (D → D)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """``query`` ``(B, D)``, ``tokens`` ``(B, T, D)``, ``token_mask`` ``(B, T)`` → ``(B, H, D)``;
        rows with no unmasked token return zeros (a missing modality is a mask, not a NaN)."""
        b, t, d = tokens.shape
        q = self.query(query).view(b, self.heads, 1, self.head_dim)
        k = self.key(tokens).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.value(tokens).view(b, t, self.heads, d).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, T)
        logits = logits.masked_fill(~token_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        return (weights @ v).squeeze(2)  # (B, H, D)


class MultiViewTokenCompressor(nn.Module):
    """MVTC (eqs. 2–6): compress all image tokens of an entity's N images into 2H tokens.

    Text view: query = max-pool over the entity and relation token embeddings. Visual view: query =
    max-pool over the N images' CLS tokens. Both attend over the same image tokens. Output
    ``(B, 2H, D)`` = [I_image; I_text] (placed before the text tokens by the caller) and a ``(B, 2H)``
    mask that is False for a query with no image. ``use_text_view`` / ``use_image_view`` are the
    paper's w/o Text / w/o Image ablations (the dropped view's tokens are masked out).
    """

    def __init__(self, dim: int, heads: int, use_text_view: bool = True, use_image_view: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.use_text_view, self.use_image_view = use_text_view, use_image_view
        self.text_view = _ViewAttention(dim, heads)
        self.image_view = _ViewAttention(dim, heads)

    def forward(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor,
        cls_tokens: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``text_tokens`` ``(B, L, D)`` + ``text_mask`` ``(B, L)`` (entity and relation tokens);
        ``image_tokens`` ``(B, N, M, D)``; ``image_mask`` ``(B, N)`` (which of the N slots hold an
        image); ``cls_tokens`` ``(B, N, D)``."""
        b, n, m, d = image_tokens.shape
        flat = image_tokens.reshape(b, n * m, d)
        flat_mask = image_mask[:, :, None].expand(b, n, m).reshape(b, n * m)
        text_query = text_tokens.masked_fill(~text_mask[..., None], float("-inf")).amax(dim=1)
        cls_query = cls_tokens.masked_fill(~image_mask[..., None], float("-inf")).amax(dim=1)
        has_image = image_mask.any(dim=1)
        text_query = torch.where(torch.isfinite(text_query), text_query, torch.zeros_like(text_query))
        cls_query = torch.where(has_image[:, None], cls_query, torch.zeros_like(cls_query))
        image_view = self.image_view(cls_query, flat, flat_mask)
        text_view = self.text_view(text_query, flat, flat_mask)
        mask = torch.cat(
            [
                has_image[:, None].expand(b, self.heads) & self.use_image_view,
                has_image[:, None].expand(b, self.heads) & self.use_text_view,
            ],
            dim=1,
        )
        tokens = torch.cat([image_view, text_view], dim=1) * mask[..., None]
        return tokens, mask


class KGCHead(nn.Module):
    """Knowledge reasoning completion layer (eqs. 12–14): E_m = [max-pool of the image tokens'
    hidden states, hidden state of the entity tokens, hidden state of the relation tokens]
    ``(B, 3D)`` → Linear(3D, 3D) → Linear(3D, |E|) logits. ``plain=True`` is the paper's "Head
    Layer" ablation: the query's last hidden state → |E|."""

    def __init__(self, dim: int, num_entities: int, plain: bool = False) -> None:
        super().__init__()
        self.plain = plain
        if plain:
            self.scores = nn.Linear(dim, num_entities)
        else:
            self.fuse = nn.Linear(3 * dim, 3 * dim)
            self.scores = nn.Linear(3 * dim, num_entities)

    @staticmethod
    def span_pool(hidden: torch.Tensor, mask: torch.Tensor, reduce: str) -> torch.Tensor:
        """``hidden`` ``(B, T, D)`` pooled over positions where ``mask`` ``(B, T)``; zeros if empty."""
        if reduce == "max":
            pooled = hidden.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
            return torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
        weights = mask[..., None].to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    def forward(
        self,
        hidden: torch.Tensor,
        image_mask: torch.Tensor,
        entity_mask: torch.Tensor,
        relation_mask: torch.Tensor,
        last_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden`` ``(B, T, D)``; masks ``(B, T)`` mark the image, entity and relation tokens;
        ``last_index`` ``(B,)`` the query's last real token (for ``plain``). → ``(B, |E|)``."""
        if self.plain:
            assert last_index is not None
            return self.scores(hidden[torch.arange(hidden.shape[0]), last_index])
        fused = torch.cat(
            [
                self.span_pool(hidden, image_mask, "max"),
                self.span_pool(hidden, entity_mask, "mean"),
                self.span_pool(hidden, relation_mask, "mean"),
            ],
            dim=-1,
        )
        return self.scores(self.fuse(fused))


class ProjectedFeatures(nn.Module):
    """Structure tokens from a trained KG embedding: frozen feature rows ``(n, k)`` (a persistent
    buffer, so the checkpoint holds them) through a learned ``k → D`` map. The map starts so that
    its outputs have the spread ``target_std`` of the backbone's word embeddings (a token of the
    wrong scale would swamp or vanish in the prompt). ``ids`` ``(B,)`` → ``(B, D)``."""

    def __init__(self, features: torch.Tensor, dim: int, target_std: float = 0.05) -> None:
        super().__init__()
        self.register_buffer("features", features.float().contiguous())
        self.project = nn.Linear(features.shape[1], dim, device=features.device)
        spread = float(features.float().std().clamp(min=1e-6))
        nn.init.normal_(self.project.weight, std=target_std / (spread * math.sqrt(features.shape[1])))
        nn.init.zeros_(self.project.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.project(self.features[ids])


def elmm_bce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    heads: torch.Tensor,
    known_true: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 15: ``−log p_target − mean over negatives of log(1 − p_neg)``, averaged over the batch.

    ``logits`` ``(B, |E|)``, ``targets`` and ``heads`` ``(B,)``. Every entity but the target is a
    negative, and the query's own head entity always is (the paper's hard negative against the bias
    of ranking the head entity first) — even when it is listed in ``known_true``. ``known_true``
    ``(B, |E|)`` bool marks other known true answers of the same (h, r) in the training graph: they
    are left out of the negatives rather than pushed down (filtered evaluation does not count them
    against the model either).
    """
    b, num_entities = logits.shape
    rows = torch.arange(b)
    negative = torch.ones(b, num_entities, dtype=torch.bool, device=logits.device)
    if known_true is not None:
        negative &= ~known_true
    negative[rows, heads] = True
    negative[rows, targets] = False
    positive_term = -nn.functional.logsigmoid(logits[rows, targets])
    negative_log = nn.functional.logsigmoid(-logits)  # log(1 − σ(x))
    negative_term = -(negative_log * negative).sum(1) / negative.sum(1).clamp(min=1)
    return (positive_term + negative_term).mean()


class KgeScore(nn.Module):
    """The frozen KG embedding's own score of every entity as a prior under the head's logits
    (beyond the paper): ``scale · score(e, r, t) + offset`` for all t, ``(B, |E|)``.

    ``score`` is the KGE's: −‖e∘r − t‖₂ for RotatE (complex rows stored as ``[Re; Im]``, as
    ``mkgc.kge.kge_features`` gives them), −‖e + r − t‖₁ for TransE; inverse relations are the
    rows ``kge_features`` appends (r̄ for RotatE, −r for TransE), so an inverse query scores heads
    exactly as the KGE does. The rows are non-persistent buffers: the model passes the same rows
    its structure tokens hold (and the checkpoint stores once). ``scale`` starts at 1 and
    ``offset`` at the KGE's training margin, so σ(logit) starts as the KGE's own training loss
    reads its scores; both are learned. With the head's last layer started at zero, the untrained
    ELMM ranks exactly as the KGE does, and training learns what the text adds to it."""

    def __init__(self, entity_rows: torch.Tensor, relation_rows: torch.Tensor, kind: str, offset: float = 0.0) -> None:
        super().__init__()
        if kind not in ("rotate", "transe"):
            raise ValueError(f"no KGE score for {kind}")
        self.kind = kind
        self.register_buffer("entity_rows", entity_rows.float().contiguous(), persistent=False)
        self.register_buffer("relation_rows", relation_rows.float().contiguous(), persistent=False)
        self.scale = nn.Parameter(torch.ones((), device=entity_rows.device))
        self.offset = nn.Parameter(torch.full((), float(offset), device=entity_rows.device))

    def raw(self, entities: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """``entities``, ``relations`` ``(B,)`` → the KGE's scores ``(B, |E|)`` (float32)."""
        return kge_scores(self.entity_rows[entities], self.relation_rows[relations], self.entity_rows, self.kind)

    def forward(self, entities: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        with torch.autocast(entities.device.type, enabled=False):  # distances need float32
            return self.scale * self.raw(entities, relations) + self.offset


class EntityRowScores(nn.Module):
    """The head's last layer over candidates described by feature rows (beyond the paper): logit of
    entity t = ``project(x) · rows[t] + bias[t]`` instead of a free ``(|E|, in)`` weight matrix.

    A free row per entity learns only from the queries that mention that entity, so a short run
    leaves most rows near their start; through the KGE's entity rows ``(|E|, k)`` (a non-persistent
    buffer shared with the structure tokens), every query trains the one ``in → k`` map that scores
    all entities. ``project`` and ``bias`` start at zero (the head adds nothing before training).
    ``x`` ``(B, in)`` → ``(B, |E|)``."""

    def __init__(self, rows: torch.Tensor, in_features: int) -> None:
        super().__init__()
        self.register_buffer("rows", rows.float().contiguous(), persistent=False)
        self.project = nn.Linear(in_features, rows.shape[1], bias=False, device=rows.device)
        self.bias = nn.Parameter(torch.zeros(rows.shape[0], device=rows.device))
        nn.init.zeros_(self.project.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) @ self.rows.to(x.dtype).T + self.bias.to(x.dtype)
