"""The heal's cached teacher (``--heal-teacher-top-k``): the coarse KL against a hand-made k + 1-bin
computation (scipy), equal to the full KL when k is the vocabulary, and, on a tiny Llama, a heal
whose original model runs once per sample and whose cached targets line up with each batch's rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
from conftest import TEXTS

from prune_compensate import CalibrationSample, PCError, PruneConfig, load_model, prune_
from prune_compensate.model.locate import find_decoder
from prune_compensate.pruning.heal import HealConfig
from prune_compensate.pruning.teacher import TopKTargets, coarse_kl


def _coarse_by_hand(p: np.ndarray, q: np.ndarray, k: int) -> float:
    """KL between p and q lumped into p's top-k tokens (each its own bin) plus one bin for the rest."""
    total = 0.0
    for p_row, q_row in zip(p, q, strict=True):
        top = np.argsort(-p_row)[:k]
        rest = np.setdiff1d(np.arange(p_row.size), top)
        p_bins = np.append(p_row[top], p_row[rest].sum())
        q_bins = np.append(q_row[top], q_row[rest].sum())
        total += scipy.special.rel_entr(p_bins, q_bins).sum()
    return total / len(p)


def test_coarse_kl_is_the_kl_on_k_plus_one_bins() -> None:
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(7, 13, generator=g) * 2, torch.randn(7, 13, generator=g) * 2
    p = scipy.special.softmax(teacher.double().numpy(), axis=-1)
    q = scipy.special.softmax(student.double().numpy(), axis=-1)
    full = scipy.special.rel_entr(p, q).sum(-1).mean()
    for k in (1, 3, 12):
        value = float(coarse_kl(TopKTargets.of_logits(teacher, k), student))
        assert value == pytest.approx(_coarse_by_hand(p, q, k), rel=1e-4)
        assert value <= full + 1e-6  # coarsening never increases a divergence
    assert float(coarse_kl(TopKTargets.of_logits(teacher, 13), student)) == pytest.approx(full, rel=1e-4)
    assert float(coarse_kl(TopKTargets.of_logits(teacher, 99), student)) == pytest.approx(full, rel=1e-4)


def test_cached_teacher_runs_once_per_sample_and_matches_the_full_kl(family_dirs: dict) -> None:
    """With k = the vocabulary the cached loss is the full KL, so the held-out loss before any step
    equals the uncached heal's: the targets are in the rows' order, padding and all (the texts have
    different lengths). The original attention runs once per sample, not on every step."""
    samples = [CalibrationSample(f"{t} {i}" * (1 + i % 3)) for i, t in enumerate(TEXTS * 10)]
    curves, calls = {}, {}
    vocab = load_model(family_dirs["llama"]).model.config.vocab_size
    for top_k in (0, vocab):
        loaded = load_model(family_dirs["llama"])
        original = find_decoder(loaded.model).core(1)
        seen: list[int] = []
        handle = original.register_forward_hook(lambda *_, calls=seen: calls.append(1))
        heal = HealConfig(steps=40, lr=1e-2, batch_size=4, eval_every=10, patience=10, teacher_top_k=top_k)
        config = PruneConfig(layers=[1], init="none", compare=(), held_out=0.25, heal=heal, show_progress=False)
        try:
            result = prune_(loaded, config, samples)
        finally:
            handle.remove()
        curves[top_k], calls[top_k] = result.heal["curve"], len(seen)
        assert result.error["heal"]["kl"] < result.error["none"]["kl"], (top_k, result.heal["curve"])  # it learns
    assert curves[vocab][0][1] == pytest.approx(curves[0][0][1], rel=1e-4)
    assert calls[vocab] < calls[0] / 2  # the teacher's passes: once per sample instead of every batch


def test_teacher_top_k_needs_the_kl_objective(family_dirs: dict) -> None:
    with pytest.raises(PCError, match="non-negative"):
        HealConfig(teacher_top_k=-1)
    loaded = load_model(family_dirs["llama"])
    heal = HealConfig(steps=2, batch_size=4, objective="hidden", teacher_top_k=8)
    config = PruneConfig(layers=[1], held_out=0.25, heal=heal, show_progress=False)
    forwards: list[int] = []
    handle = loaded.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(PCError, match="--heal-teacher-top-k"):
            prune_(loaded, config, [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 4)])
    finally:
        handle.remove()
    assert forwards == []  # refused before the fit spent any forward pass
