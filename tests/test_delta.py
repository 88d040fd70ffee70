"""Change-only checkpoints: the maps alone reload on the base to the full checkpoint's outputs,
in a fraction of its size, and a changed base is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import TEXTS, cli_error
from typer.testing import CliRunner

from prune_compensate import CalibrationConfig, PruneConfig, load_model, load_pruned, prune_, read_samples
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.sources import CalibrationSample
from prune_compensate.checkpoint.delta import save_delta
from prune_compensate.checkpoint.save import save_pruned
from prune_compensate.cli import app

runner = CliRunner()


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_delta_reloads_like_the_full_checkpoint(minilm_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "minilm"
    shutil.copytree(minilm_dir, base)
    loaded = load_model(base)
    samples = read_samples(CalibrationConfig(n_samples=40))
    result = prune_(loaded, PruneConfig(k=3, held_out=0, show_progress=False), samples)
    full = save_pruned(loaded.model, loaded.processor, tmp_path / "full", result.to_manifest())
    delta = save_delta(loaded.model, loaded.processor, tmp_path / "delta", result.to_manifest(), loaded.origin)
    assert _folder_bytes(delta) < _folder_bytes(full) / 5
    inputs = BatchEncoder(loaded.processor, 64)([CalibrationSample(t) for t in TEXTS])
    with torch.no_grad():
        from_full = load_pruned(full).model(**inputs).last_hidden_state
        from_delta = load_pruned(delta).model(**inputs).last_hidden_state
    assert from_full.dtype == torch.float32 and float((from_full - from_delta).abs().max()) <= 1e-6
    manifest = json.loads((delta / "prune_manifest.json").read_text())
    assert manifest["save"] == "delta" and set(manifest["base"]["sha256"]) == {"config.json", "model.safetensors"}

    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}))  # the base changed
    msg = cli_error(["profile", str(delta), "--quiet"])
    assert "changed since the maps were fitted (config.json differ)" in msg and "--allow-base-change" in msg
    result = runner.invoke(app, ["profile", str(delta), "--allow-base-change", "--n-samples", "4", "--quiet"])
    assert result.exit_code == 0, result.output


def test_pc_prune_save_delta(family_dirs: dict, tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = ["prune", str(family_dirs["llama"]), "--k", "1", "--n-samples", "6", "--save", "delta", "--out", str(out)]
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"compensation.safetensors", "prune_delta.json", "prune_manifest.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names  # nothing of the base is copied
    replaced = next(iter(json.loads((out / "prune_delta.json").read_text())["replaced"]))
    assert type(load_pruned(out).model.get_submodule(replaced)).__name__ == "LinearCompensation"
    assert "unknown --save 'half'" in cli_error([*args[:-2], "--save", "half", "--out", str(tmp_path / "x")])
