"""Benchmarks live by area (scripts, results and a README each), share one result writer that
records each run's settings inside its file, and read the TOFU CPU settings from one YAML."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.common import AREAS, keep, results_dir, write_result
from benchmarks.tofu.cpu_settings import overrides

ROOT = Path(__file__).resolve().parents[1]


def test_every_result_file_sits_in_an_area() -> None:
    for area in AREAS:
        assert (ROOT / "benchmarks" / area / "README.md").is_file(), area
        assert any(results_dir(area).iterdir()), area
    stray = [p.name for p in (ROOT / "benchmarks").glob("*.json")] + [
        p.name for p in (ROOT / "benchmarks").glob("*/*.json")
    ]
    assert stray == []  # result files only under <area>/results/


def test_write_result_records_the_settings_and_command(tmp_path: Path) -> None:
    args = argparse.Namespace(k=3, data_dir=Path("/somewhere/data"), out=tmp_path / "x", lr=1e-3)
    path = write_result(tmp_path / "deep" / "result.json", {"rows": [1, 2]}, args)
    document = json.loads(path.read_text())
    assert document["settings"] == {"data_dir": "DIR", "k": 3, "lr": 1e-3, "out": str(tmp_path / "x")}
    assert document["rows"] == [1, 2] and document["command"].startswith("python")
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left behind
    kept = write_result(tmp_path / "kept.json", {"command": "python -m benchmarks.core.x --k 3"})
    assert json.loads(kept.read_text())["command"] == "python -m benchmarks.core.x --k 3"


def test_tofu_cpu_settings_expand_named_lists_in_order() -> None:
    model = ["model.se_layers=3", "model.gp_layers=2", "train.batch_size=32", "structure.max_nodes_per_hop=16"]
    assert overrides("model") == model
    transductive = overrides("transductive")
    assert transductive[:4] == model and transductive[-2:] == ["eval.test_triples=0", "model.unreached_prior=true"]
    assert overrides("ablation") == [*transductive, "model.gp_layers=4", "train.max_steps=1000"]  # the later key wins
    with pytest.raises(SystemExit, match="no TOFU CPU settings named 'gpu'"):
        overrides("gpu")


def test_tofu_scripts_read_the_one_settings_file() -> None:
    for script in (ROOT / "benchmarks" / "tofu").glob("*.sh"):
        text = script.read_text()
        if "pc run tofu" in text and "${CPU[@]}" in text:
            assert "python -m benchmarks.tofu.cpu_settings" in text, script.name
            assert "model.se_layers=" not in text, f"{script.name} repeats a CPU setting of cpu.yaml"


def test_tables_select_on_the_run_record_not_the_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOFU table built from the same files under meaningless names is the same table; a file
    whose run record says another seed moves its row."""
    import shutil

    from tools import results_table as tool

    expected = tool.tofu_block()
    for index, path in enumerate(sorted(results_dir("tofu").glob("*.json"))):
        shutil.copy(path, tmp_path / f"result{index:03d}.json")
    monkeypatch.setattr(tool, "TOFU", tmp_path)
    assert tool.tofu_block() == expected
    kept = keep(results_dir("tofu") / "rotate_MKG-Y_seed1.json", tmp_path / "x.json", {"kind": "other"})
    assert json.loads(kept.read_text())["run"] == {"kind": "other"}  # keep records what the run was


def test_recipe_baselines_come_from_the_folder_given(tmp_path: Path) -> None:
    """``pc run elmm|tofu --baselines DIR`` reads the baselines there; none without the flag; a
    path that is no folder is one line before the run starts."""
    from conftest import cli_error

    from prune_compensate_recipes.mkgc.evaluate import committed_baselines

    rows = committed_baselines("MKG-Y", results_dir("tofu"), models=("rotate",))
    assert list(rows) == ["rotate MKG-Y (baseline)"] and rows["rotate MKG-Y (baseline)"]["test"]
    assert committed_baselines("MKG-Y", None) == {}
    for recipe, config in (("elmm", "elmm_minilm_umls"), ("tofu", "tofu_umls")):
        error = cli_error(["run", recipe, "--baselines", str(tmp_path / "none"), "--config", config])
        assert f"--baselines {tmp_path / 'none'} is not a folder" in error
