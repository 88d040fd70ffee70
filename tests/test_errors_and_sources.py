"""Bad input gives one clear line (problem — fix) and exit code 2; every calibration source works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, cli_error, write_jsonl
from typer.testing import CliRunner

from prune_compensate import CalibrationConfig, PCError, find_decoder, read_samples
from prune_compensate.calibration.encode import BatchEncoder, batches
from prune_compensate.calibration.sources import CalibrationSample
from prune_compensate.cli import app
from prune_compensate.pruning.profile import ProfileResult

runner = CliRunner()


def test_missing_model(tmp_path: Path) -> None:
    msg = cli_error(["profile", "no-such-org/no-such-model", "--offline", "--quiet"])
    assert "is not in the Hugging Face cache and --offline forbids downloading it" in msg
    assert "local model directory" in msg
    assert "model folder ./no-such-dir does not exist" in cli_error(["profile", "./no-such-dir", "--quiet"])


def test_directory_without_config(tmp_path: Path) -> None:
    msg = cli_error(["profile", str(tmp_path), "--quiet"])
    assert "has no config.json" in msg


def test_no_decoder_names_model_class() -> None:
    with pytest.raises(PCError, match="no decoder found in Sequential"):
        find_decoder(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_negative_k() -> None:
    assert "--k must be at least 0, got -1" in cli_error(["profile", "--k", "-1", "--quiet"])


def test_empty_calibration_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "holds no samples" in cli_error(["profile", "--calib", str(empty), "--quiet"])


def test_corrupt_calibration_line_names_the_sample(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    assert f"sample {bad}:2 is not valid JSON" in cli_error(["profile", "--calib", str(bad), "--quiet"])


def test_missing_text_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "x"}\n')
    assert "has no string field 'text'" in cli_error(["profile", "--calib", str(bad), "--quiet"])


def test_wrong_dataset_column(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"sentence": TEXTS}).save_to_disk(str(tmp_path / "ds"))
    msg = cli_error(["profile", "--calib", str(tmp_path / "ds"), "--quiet"])
    assert "has no column 'text' (columns: sentence)" in msg


def test_unreadable_image_names_the_sample(family_dirs: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    calib = write_jsonl(tmp_path / "c.jsonl", TEXTS[:1], [str(broken)])
    msg = cli_error(["profile", str(family_dirs["llava"]), "--calib", str(calib), "--quiet"])
    assert f"image {broken} of sample {calib}:1 cannot be read" in msg


def test_images_for_a_text_only_model(tmp_path: Path, image_paths: list[str]) -> None:
    calib = write_jsonl(tmp_path / "c.jsonl", TEXTS[:1], image_paths[:1])
    assert "has images but the model has no image processor" in cli_error(["profile", "--calib", str(calib), "--quiet"])


def test_bad_dtype_and_sizes() -> None:
    assert "unknown dtype 'int8'" in cli_error(["profile", "--dtype", "int8", "--quiet"])
    assert "--n-samples must be at least 1" in cli_error(["profile", "--n-samples", "0", "--quiet"])


def test_dataset_source_with_images_and_seeded_draw(tmp_path: Path, image_paths: list[str], family_dirs) -> None:
    import datasets

    datasets.Dataset.from_dict(
        {"caption": TEXTS, "picture": [image_paths[i % len(image_paths)] for i in range(len(TEXTS))]}
    ).save_to_disk(str(tmp_path / "ds"))
    config = CalibrationConfig(source=str(tmp_path / "ds"), text_column="caption", image_column="picture", n_samples=3)
    samples = read_samples(config)
    assert len(samples) == 3 and all(len(s.images) == 1 for s in samples)
    assert [s.text for s in samples] == [s.text for s in read_samples(config)]  # seeded
    out = tmp_path / "p.json"
    result = runner.invoke(
        app,
        [
            "profile",
            str(family_dirs["llava"]),
            "--calib",
            str(tmp_path / "ds"),
            "--text-column",
            "caption",
            "--image-column",
            "picture",
            "--json",
            str(out),
            "--quiet",
            "--k",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["n_samples"] == 4


def test_embedded_default_and_profile_json_roundtrip(tmp_path: Path) -> None:
    samples = read_samples(CalibrationConfig())
    assert len(samples) == 1000 and all(s.text for s in samples)
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["profile", "--n-samples", "16", "--k", "3", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Attention redundancy" in result.output
    data = json.loads(out.read_text())
    assert data["model_class"] == "BertModel" and len(data["layers"]) == 6 and len(data["chosen"]) == 3
    assert ProfileResult.from_json(out).to_dict() == data


def test_default_k_is_half_the_layers(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["profile", "--n-samples", "4", "--json", str(out), "--quiet"])
    assert result.exit_code == 0
    data = json.loads(out.read_text())
    assert data["k"] == 3 and len(data["chosen"]) == 3  # half of MiniLM's 6 attention layers


def test_batches_never_mix_image_and_text_samples() -> None:
    samples = [CalibrationSample("a"), CalibrationSample("b", ["x.png"]), CalibrationSample("c")]
    assert [[s.text for s in b] for b in batches(samples, 8)] == [["a", "c"], ["b"]]


def test_text_truncation_keeps_max_length(minilm_dir: Path) -> None:
    from transformers import AutoTokenizer

    encoder = BatchEncoder(AutoTokenizer.from_pretrained(str(minilm_dir)), max_length=8)
    inputs = encoder([CalibrationSample(" ".join(["word"] * 50))])
    assert inputs["input_ids"].shape[1] == 8


def test_device_auto_loads_through_accelerate(minilm_dir: Path) -> None:
    """device="auto" hands placement to accelerate's device map; on a CPU-only machine that is the CPU."""
    from prune_compensate import load_model

    loaded = load_model(minilm_dir, device="auto", dtype="bfloat16")
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    inputs = BatchEncoder(loaded.processor, 16)([CalibrationSample(TEXTS[0])])
    assert loaded.model(**inputs).last_hidden_state.shape[-1] == 384


def test_cuda_without_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert "no CUDA device is visible" in cli_error(["profile", "--device", "cuda", "--quiet"])


def test_configs_refuse_bad_values_when_built() -> None:
    """Validation lives in the configs, before any model is loaded: one rule and one message for
    ``k`` (at least 0 to profile, 1 to prune), and ``rank`` below 1 refused at once."""
    from prune_compensate import PCError, ProfileConfig, PruneConfig, SaveConfig

    with pytest.raises(PCError, match=r"--k must be at least 1, got 0"):
        PruneConfig(k=0)
    with pytest.raises(PCError, match=r"--k must be at least 0, got -1"):
        ProfileConfig(k=-1)
    assert ProfileConfig(k=0).k == 0
    with pytest.raises(PCError, match=r"--rank must be at least 1, got 0"):
        PruneConfig(rank=0)
    with pytest.raises(PCError, match=r"unknown --save 'half'"):
        SaveConfig("out", mode="half")


def test_a_datasets_id_is_a_calibration_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--calib NAME[:CONFIG]`` (with ``--calib-split``) reads that split through
    ``datasets.load_dataset``, the way online users calibrate on WikiText or C4; blank rows (WikiText
    keeps empty lines between paragraphs) are left out. A file name that does not exist is still
    a missing file, not a dataset id."""
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):  # noqa: ANN001, ANN202 - datasets' signature
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"text": [" = A river = \n", "", "  \n", " It flows south . \n"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    config = CalibrationConfig(source="wikitext:wikitext-2-raw-v1", n_samples=10, split="validation")
    with pytest.warns(UserWarning, match="holds 2 samples"):
        samples = read_samples(config)
    assert calls == [("wikitext", "wikitext-2-raw-v1", "validation")]
    assert [s.text for s in samples] == [" = A river = \n", " It flows south . \n"]
    assert samples[1].origin == "wikitext:wikitext-2-raw-v1:validation[3]"
    with pytest.raises(PCError, match="calibration source missing.jsonl does not exist"):
        read_samples(CalibrationConfig(source="missing.jsonl"))


def test_an_unreadable_datasets_id_is_one_line() -> None:
    assert "cannot read calibration dataset 'no-such-org/no-such-set'" in cli_error(
        ["profile", "--calib", "no-such-org/no-such-set", "--quiet"]
    )
