"""``--ranking drop-one``: each unit's score is the output divergence with that unit alone removed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TEXTS

from pc_testkit.tiny_models import build_llama
from prune_compensate import CalibrationConfig, CalibrationSample, PCError, PruneConfig, load_model, prune_
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.model.locate import find_decoder
from prune_compensate.pruning.drop_one import drop_one_scores
from prune_compensate.pruning.profile import ProfileConfig, profile


def _zeroed(module: torch.nn.Module, args: tuple, output: tuple) -> tuple:
    return (torch.zeros_like(output[0]), *output[1:])


def test_scores_equal_a_hand_computed_kl(tmp_path: Path) -> None:
    """KL(dense ‖ attention zeroed by a hook), by ``F.kl_div`` over the real tokens, per layer."""
    loaded = load_model(build_llama(tmp_path / "llama", layers=3))
    model, samples = loaded.model, [CalibrationSample(t) for t in TEXTS[:4]]
    layout = find_decoder(model)
    encoder = BatchEncoder(loaded.processor, 32)
    scores = drop_one_scores(model, layout, encoder, samples, [0, 1, 2], batch_size=4, show_progress=False)
    inputs = encoder(samples)
    mask = inputs["attention_mask"].bool()
    with torch.no_grad():
        dense = F.log_softmax(model(**inputs).logits[mask].double(), -1)
        for index in range(3):
            handle = model.model.layers[index].self_attn.register_forward_hook(_zeroed)
            dropped = F.log_softmax(model(**inputs).logits[mask].double(), -1)
            handle.remove()
            expected = F.kl_div(dropped, dense, log_target=True, reduction="batchmean")
            assert scores[index] == pytest.approx(float(expected), rel=1e-6)
    assert all(isinstance(layout.core(i), type(model.model.layers[0].self_attn)) for i in range(3))  # restored


def test_profile_and_prune_take_the_lowest_divergence(tmp_path: Path) -> None:
    loaded = load_model(build_llama(tmp_path / "llama", layers=4))
    calibration = CalibrationConfig(n_samples=8, max_length=32)
    samples = [CalibrationSample(f"{t} ({i})") for i, t in enumerate(TEXTS * 2)][:8]
    assert len(samples) == 8
    result = profile(loaded, ProfileConfig(k=2, calibration=calibration, ranking="drop-one"), samples)
    scores = {layer.index: layer.drop_one for layer in result.layers}
    assert result.ranked_by == "drop-one" and result.ranking == sorted(scores, key=lambda i: (scores[i], i))
    config = PruneConfig(k=2, ranking="drop-one", calibration=calibration, held_out=0.25, show_progress=False)
    pruned = prune_(loaded, config, samples)
    fit = samples[:6]  # the prune ranks on its fitting samples only (held_out 0.25 of 8)
    again = ProfileConfig(k=2, calibration=calibration, ranking="drop-one")
    expected = profile(load_model(loaded.local_dir), again, fit)
    assert pruned.pruned_layers == sorted(expected.chosen)
    chosen = {layer.index: layer.drop_one for layer in expected.layers if layer.index in expected.chosen}
    assert pruned.scores == pytest.approx(chosen)


def test_an_unknown_ranking_is_refused() -> None:
    with pytest.raises(PCError, match="unknown --ranking 'angle'"):
        PruneConfig(ranking="angle")
