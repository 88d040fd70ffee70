"""The library calls `pc` makes: one call does a whole job, checks what a user can get wrong before
the model loads, and writes nothing when it fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prune_compensate import (
    CalibrationConfig,
    EvalConfig,
    HealConfig,
    LoadConfig,
    PCError,
    ProfileConfig,
    PruneConfig,
    SaveConfig,
    evaluate_model,
    load_model,
    load_pruned,
    profile_model,
    prune_and_save,
)


def _calibration(tmp_path: Path, n: int = 8) -> CalibrationConfig:
    path = tmp_path / "calib.jsonl"
    lines = [json.dumps({"text": f"The river number {i} flows into the sea near town {i}."}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return CalibrationConfig(source=str(path), n_samples=n, max_length=32, batch_size=4)


def test_prune_and_save_does_the_whole_job(family_dirs: dict, tmp_path: Path) -> None:
    config = PruneConfig(k=1, calibration=_calibration(tmp_path), compare=(), show_progress=False)
    evaluation = EvalConfig(text=str(tmp_path / "calib.jsonl"), pairs=None, max_length=32, show_progress=False)
    with pytest.raises(PCError, match="is the calibration data the model was fitted on"):
        prune_and_save(str(family_dirs["llama"]), config, SaveConfig(tmp_path / "x"), evaluation=evaluation)
    held = tmp_path / "held.jsonl"  # a few short texts: the embedded articles take minutes at this window
    held.write_text(
        "".join(json.dumps({"text": f"A bridge {i} crosses the river at mile {i * 3}."}) + "\n" for i in range(4))
    )
    evaluation = EvalConfig(text=str(held), pairs=None, max_length=32, show_progress=False)
    done = prune_and_save(str(family_dirs["llama"]), config, SaveConfig(tmp_path / "out"), evaluation=evaluation)
    assert done.out == tmp_path / "out" and done.prune.k == 1
    assert done.manifest["eval"] == done.eval.to_dict()  # the evaluation went into the manifest
    written = json.loads((tmp_path / "out" / "prune_manifest.json").read_text())
    assert written["pruned_layers"] == done.prune.pruned_layers and written["model"] == done.manifest["model"]
    reloaded, original = load_pruned(tmp_path / "out"), load_model(family_dirs["llama"])
    ids = torch.tensor([[1, 5, 9, 2]])
    assert not torch.equal(reloaded.model(input_ids=ids).logits, original.model(input_ids=ids).logits)
    # pc eval's call: the base comes from the manifest
    result = evaluate_model(str(tmp_path / "out"), evaluation)
    assert result.to_dict()


def test_job_checks_everything_before_the_model_loads(tmp_path: Path) -> None:
    """A model that does not exist is never reached: the output folder, the configs and the
    calibration file are checked first, and nothing is written."""
    missing_model = str(tmp_path / "no-such-model")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(PCError, match="exists"):
        prune_and_save(missing_model, PruneConfig(k=1), SaveConfig(taken))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    calibration = CalibrationConfig(source=str(bad))
    with pytest.raises(PCError, match="not valid JSON"):
        prune_and_save(missing_model, PruneConfig(k=1, calibration=calibration), SaveConfig(tmp_path / "out"))
    with pytest.raises(PCError, match="not valid JSON"):
        profile_model(missing_model, ProfileConfig(calibration=calibration), LoadConfig(offline=True))
    healed = PruneConfig(k=1, heal=HealConfig(steps=2, train_norms=True))
    with pytest.raises(PCError, match="--heal-norms trains base weights that a delta checkpoint does not store"):
        prune_and_save(missing_model, healed, SaveConfig(tmp_path / "out", mode="delta"))
    assert not (tmp_path / "out").exists() and (taken / "keep.txt").read_text() == "mine"
