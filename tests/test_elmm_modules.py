"""ELMM building blocks: MVTC shapes and masking for N = 0, 1, 10 images; the head; the hard-negative
BCE loss on a hand case."""

from __future__ import annotations

import math

import pytest
import torch

from prune_compensate_recipes.elmm import KGCHead, MultiViewTokenCompressor, elmm_bce_loss

D, H, M = 32, 4, 5


def _inputs(images_per_query: list[int], slots: int = 10):
    g = torch.Generator().manual_seed(0)
    b = len(images_per_query)
    text = torch.randn(b, 6, D, generator=g)
    text_mask = torch.ones(b, 6, dtype=torch.bool)
    text_mask[:, 4:] = False
    image_tokens = torch.randn(b, slots, M, D, generator=g)
    image_mask = torch.arange(slots)[None, :] < torch.tensor(images_per_query)[:, None]
    cls = torch.randn(b, slots, D, generator=g)
    return text, text_mask, image_tokens, image_mask, cls


@pytest.mark.parametrize("counts", [[0, 1, 10], [10, 10], [0, 0]])
def test_mvtc_shapes_and_masking(counts: list[int]) -> None:
    mvtc = MultiViewTokenCompressor(D, H)
    tokens, mask = mvtc(*_inputs(counts))
    assert tokens.shape == (len(counts), 2 * H, D) and mask.shape == (len(counts), 2 * H)
    assert torch.isfinite(tokens).all()
    for row, n in enumerate(counts):
        assert bool(mask[row].all()) == (n > 0) and bool(mask[row].any()) == (n > 0)
        if n == 0:
            assert torch.count_nonzero(tokens[row]) == 0


def test_mvtc_ignores_masked_image_slots() -> None:
    mvtc = MultiViewTokenCompressor(D, H)
    text, text_mask, image_tokens, image_mask, cls = _inputs([1])
    before, _ = mvtc(text, text_mask, image_tokens, image_mask, cls)
    image_tokens[:, 1:] = 100.0  # garbage in empty slots
    cls[:, 1:] = -100.0
    after, _ = mvtc(text, text_mask, image_tokens, image_mask, cls)
    torch.testing.assert_close(before, after)


def test_mvtc_view_ablations_mask_their_tokens() -> None:
    tokens, mask = MultiViewTokenCompressor(D, H, use_image_view=False)(*_inputs([3]))
    assert not mask[0, :H].any() and mask[0, H:].all() and torch.count_nonzero(tokens[0, :H]) == 0


def test_each_head_returns_a_d_wide_vector() -> None:
    mvtc = MultiViewTokenCompressor(D, H)
    assert mvtc.text_view.value.out_features == H * D and mvtc.text_view.query.out_features == D


def test_kgc_head_shapes_and_plain_ablation() -> None:
    hidden = torch.randn(2, 9, D)
    image = torch.zeros(2, 9, dtype=torch.bool)
    image[0, :2] = True
    entity = torch.zeros(2, 9, dtype=torch.bool)
    entity[:, 2:5] = True
    relation = torch.zeros(2, 9, dtype=torch.bool)
    relation[:, 5:7] = True
    assert KGCHead(D, 11)(hidden, image, entity, relation).shape == (2, 11)
    assert KGCHead(D, 11, plain=True)(hidden, image, entity, relation, torch.tensor([8, 6])).shape == (2, 11)
    # no image tokens: the image slot of E_m is zeros, not -inf
    pooled = KGCHead.span_pool(hidden, image, "max")
    assert torch.count_nonzero(pooled[1]) == 0 and torch.equal(pooled[0], hidden[0, :2].amax(0))


def test_hard_negative_loss_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0]])
    target, head = torch.tensor([0]), torch.tensor([3])
    known = torch.tensor([[False, True, False, True]])  # entity 1 is another true tail; 3 is the head
    loss = elmm_bce_loss(logits, target, head, known)

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    positive = -log_sigmoid(2.0)
    # negatives: entity 2 and the head entity 3 (hard negative even though listed as known);
    # entity 1 (another known true tail) is left out
    negative = -(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2
    assert loss.item() == pytest.approx(positive + negative, rel=1e-6)
    # without known answers every non-target entity is a negative
    all_negative = -(log_sigmoid(-0.5) + log_sigmoid(1.0) + log_sigmoid(-1.0)) / 3
    assert elmm_bce_loss(logits, target, head).item() == pytest.approx(positive + all_negative, rel=1e-6)


@pytest.mark.parametrize("name", ["rotate", "transe"])
def test_kge_score_is_pykeens_score_for_tails_and_for_heads_through_inverse_rows(name: str) -> None:
    """``KgeScore.raw`` of (e, r) over all entities is PyKEEN's ``score_t``; of (t, r⁻¹) — the
    inverse row ``kge_features`` appends — PyKEEN's ``score_h``; ``forward`` is its affine map."""
    from prune_compensate_recipes.elmm.modules import KgeScore
    from prune_compensate_recipes.mkgc.kge import kge_features, train_kge
    from prune_compensate_recipes.mkgc.staged import resolve_dataset

    dataset = resolve_dataset("nations")[0]
    model, _ = train_kge(dataset, name, minutes=1.0, epochs=2, batch_size=256)
    score = KgeScore(*kge_features(model, name), name, offset=9.0)
    triples = dataset.test[:20]
    with torch.no_grad():
        tails = model.score_t(triples[:, :2])
        heads = model.score_h(triples[:, 1:])
        torch.testing.assert_close(score.raw(triples[:, 0], triples[:, 1]), tails, atol=1e-4, rtol=1e-4)
        inverse = triples[:, 1] + dataset.num_relations
        torch.testing.assert_close(score.raw(triples[:, 2], inverse), heads, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(score(triples[:, 0], triples[:, 1]), tails + 9.0, atol=1e-4, rtol=1e-4)
    assert {n for n, _ in score.named_parameters()} == {"scale", "offset"}  # the rows stay frozen
