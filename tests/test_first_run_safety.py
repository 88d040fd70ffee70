"""First-run safety: never destroy a user's files, fail before the work, keep the one-line promise."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, cli_error, write_jsonl
from typer.testing import CliRunner

from pc_testkit.tiny_models import build_llama
from prune_compensate import CalibrationSample, PCError, load_model, load_pruned, prune_, read_manifest
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.sources import CalibrationConfig, read_samples
from prune_compensate.checkpoint.format import MANIFEST
from prune_compensate.checkpoint.save import save_pruned
from prune_compensate.cli import app
from prune_compensate.model.locate import find_decoder
from prune_compensate.output_dir import MARKER, atomic_out_dir
from prune_compensate.pruning.compensation import LinearCompensation
from prune_compensate.pruning.config import PruneConfig
from prune_compensate.pruning.profile import ProfileConfig, profile

runner = CliRunner()
SAMPLES = [CalibrationSample(f"{t} ({i})") for i, t in enumerate(TEXTS * 2)]


def _pruned_llama(family_dirs: dict, tmp_path: Path, name: str = "ckpt") -> Path:
    loaded = load_model(family_dirs["llama"])
    result = prune_(loaded, PruneConfig(layers=[0], held_out=0, show_progress=False), SAMPLES)
    return save_pruned(loaded.model, loaded.processor, tmp_path / name, result.to_manifest())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class ForwardForbidden(AssertionError):
    pass


def _forbid_forward(model: torch.nn.Module) -> None:
    def hook(*_: object) -> None:
        raise ForwardForbidden("a forward pass ran before validation")

    model.register_forward_pre_hook(hook)


# 1. --overwrite never deletes a folder that is not ours, and swaps a checkpoint atomically


def test_overwrite_refuses_a_folder_that_is_not_a_checkpoint(family_dirs: dict, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("important")
    args = ["prune", str(family_dirs["llama"]), "--k", "1", "--n-samples", "4", "--out", str(precious)]
    msg = cli_error([*args, "--overwrite", "--quiet"])
    assert "is not a folder written by prune_compensate" in msg and "will not replace it" in msg
    assert (precious / "thesis.tex").read_text() == "important"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    assert "is not a folder written by prune_compensate" in cli_error(
        [*args[:-1], str(a_file), "--overwrite", "--quiet"]
    )
    assert a_file.read_text() == "keep"


def test_overwrite_replaces_a_checkpoint_and_a_failed_write_keeps_the_old(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    before = (out / "model.safetensors").read_bytes()

    class Killed(Exception):
        pass

    with pytest.raises(Killed), atomic_out_dir(out, overwrite=True, owned=MANIFEST) as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise Killed
    assert (out / "model.safetensors").read_bytes() == before  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # and nothing is left beside it

    args = ["prune", str(family_dirs["llama"]), "--layers", "1", "--n-samples", "4", "--out", str(out), "--quiet"]
    assert "already exists" in cli_error(args)
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["pruned_layers"] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_swap_killed_between_its_renames_is_recovered(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    os.replace(out, tmp_path / ".ckpt.old-x1y2")  # killed right after moving the old one aside
    loaded = load_model(family_dirs["llama"])
    result = prune_(loaded, PruneConfig(layers=[1], held_out=0, show_progress=False), SAMPLES)
    with pytest.raises(PCError, match="already exists"):  # the old checkpoint is back in place first
        save_pruned(loaded.model, loaded.processor, out, result.to_manifest())
    assert read_manifest(out)["pruned_layers"] == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# 5. stale partials: only ours, only when their writer is gone; normal permissions


def test_stale_partials_of_dead_runs_are_cleaned_and_nothing_else(family_dirs: dict, tmp_path: Path) -> None:
    dead = tmp_path / ".other.partial-dead"
    dead.mkdir()
    (dead / MARKER).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    (dead / "model.safetensors").write_bytes(b"x" * 1000)
    alive = tmp_path / ".busy.partial-live"
    alive.mkdir()
    (alive / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    foreign = tmp_path / ".cache.partial-mine"  # somebody else's folder with a similar name
    foreign.mkdir()
    (foreign / "data.bin").write_bytes(b"user data")
    out = _pruned_llama(family_dirs, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.partial-live", ".cache.partial-mine", "ckpt"]
    assert (foreign / "data.bin").read_bytes() == b"user data"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # like save_pretrained's folder, not 0700
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o666 & ~umask  # not 0600


# 2. validation before the work


def test_bad_k_is_refused_before_any_forward_pass(family_dirs: dict) -> None:
    loaded = load_model(family_dirs["llama"])  # 2 decoder layers
    _forbid_forward(loaded.model)
    for k, match in ((5, "--k 5 is out of range"), (3, "between 1 and 2")):
        with pytest.raises(PCError, match=match):
            prune_(loaded, PruneConfig(k=k, show_progress=False), SAMPLES)
    for k in (0, -1):
        with pytest.raises(PCError, match="--k must be at least 1"):
            PruneConfig(k=k)
    with pytest.raises(PCError, match="--k 3 is out of range"):
        profile(loaded, ProfileConfig(k=3, show_progress=False), SAMPLES)
    with pytest.raises(PCError, match="unknown layer index 5"):
        prune_(loaded, PruneConfig(layers=[0, 5], show_progress=False), SAMPLES)
    assert not any(isinstance(find_decoder(loaded.model).core(i), LinearCompensation) for i in range(2))


def test_default_k_fits_the_model(family_dirs: dict) -> None:
    loaded = load_model(family_dirs["llama"])
    result = prune_(loaded, PruneConfig(held_out=0, show_progress=False), SAMPLES)
    assert result.k == 1  # half of 2 layers


def test_profile_output_paths_are_checked_before_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import prune_compensate.model.load

    def no_load(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the output paths were checked")

    monkeypatch.setattr(prune_compensate.model.load, "load_model", no_load)
    assert "parent folder" in cli_error(["profile", "--json", str(tmp_path / "missing" / "p.json"), "--quiet"])
    assert "cannot write --plot into /proc" in cli_error(["profile", "--plot", "/proc/p.png", "--quiet"])
    assert "is a folder" in cli_error(["profile", "--json", str(tmp_path), "--quiet"])


# 3. one line, never a traceback


def test_binary_calibration_file_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "calib.jsonl"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    assert f"calibration file {binary} is not UTF-8 text" in cli_error(["profile", "--calib", str(binary), "--quiet"])


def test_truncated_checkpoint_names_the_file(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    msg = cli_error(["profile", str(out), "--quiet"])
    assert f"weights file {weights} is damaged or incomplete" in msg
    (out / "config.json").write_text("{trunc")
    assert "config.json is not valid JSON" in cli_error(["profile", str(out), "--quiet"])


def test_error_text_is_not_read_as_markup(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "x"}\n')
    assert '{"text": ..., "images": [paths]}' in cli_error(["profile", "--calib", str(bad), "--quiet"])


# 4. pruning a pruned checkpoint again


def test_repruning_prunes_the_layers_that_still_have_attention(tmp_path: Path) -> None:
    loaded = load_model(build_llama(tmp_path / "llama3", layers=3))
    result = prune_(loaded, PruneConfig(layers=[0], held_out=0, show_progress=False), SAMPLES)
    first = save_pruned(loaded.model, loaded.processor, tmp_path / "first", result.to_manifest())
    second = tmp_path / "second"
    result = runner.invoke(app, ["prune", str(first), "--k", "1", "--n-samples", "6", "--out", str(second), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(second)
    assert manifest["pruned_layers"] in ([1], [2]) and manifest["previously_pruned"] == [0]
    assert [step["pruned_layers"] for step in manifest["history"]] == [[0]]
    assert manifest["parameters"]["after"] < manifest["parameters"]["before"]
    reloaded = load_pruned(second)
    pruned = [0, *manifest["pruned_layers"]]
    assert all(isinstance(find_decoder(reloaded.model).core(i), LinearCompensation) for i in pruned)
    assert manifest["parameters"]["after"] == sum(p.numel() for p in reloaded.model.parameters())
    # the last layer with attention is the last with a KV cache: generate needs it
    msg = cli_error(["prune", str(second), "--n-samples", "4", "--out", str(tmp_path / "third"), "--quiet"])
    assert "pruning all 1 remaining attention layers of LlamaForCausalLM leaves no layer with a KV cache" in msg
    msg = cli_error(["prune", str(first), "--layers", "0", "--out", str(tmp_path / "x"), "--quiet"])
    assert "layer 0 of LlamaForCausalLM is already pruned" in msg


def test_profile_of_a_pruned_checkpoint_marks_only_live_layers(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    result = profile(load_pruned(out), ProfileConfig(show_progress=False), SAMPLES)
    assert result.replaced == [0] and result.chosen == [1]


# 6. files that say how the model is used travel with it


def test_sentence_transformers_loads_the_pruned_minilm(minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    loaded = load_model(minilm_dir)
    samples = read_samples(CalibrationConfig(n_samples=24))
    result = prune_(loaded, PruneConfig(k=1, held_out=0, show_progress=False), samples)
    out = save_pruned(loaded.model, loaded.processor, tmp_path / "minilm", result.to_manifest())
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").samefile(minilm_dir / "model.safetensors")
    sentences = [s.text for s in samples[:6]]
    original = SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, convert_to_tensor=True)
    pruned = SentenceTransformer(str(out), device="cpu").encode(sentences, convert_to_tensor=True)
    # independent: mean pooling over real tokens and L2 normalisation of our own reload
    reloaded = load_pruned(out)
    inputs = BatchEncoder(reloaded.processor, 256)([CalibrationSample(s) for s in sentences])
    with torch.no_grad():
        hidden = reloaded.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    by_hand = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(pruned, by_hand, atol=1e-5, rtol=1e-4)
    cosine = (original * pruned).sum(-1)
    assert cosine.min() > 0.9 and not torch.allclose(original, pruned)


# 7. and 9. cheap defaults, progress, small things


def test_one_overall_progress_bar_counts_every_pass(family_dirs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import prune_compensate.pruning.prune as prune_module
    from prune_compensate.progress import WorkProgress

    seen: list[WorkProgress] = []

    class Recording(WorkProgress):
        def __exit__(self, *exc: object) -> None:
            seen.append(self)
            super().__exit__(*exc)

    monkeypatch.setattr(prune_module, "WorkProgress", Recording)
    loaded = load_model(family_dirs["llama"])
    config = PruneConfig(k=1, held_out=0.25, compare=("none", "mean"), show_progress=True)
    prune_(loaded, config, SAMPLES)
    work = seen[0]
    task = work.progress.tasks[0]
    # 6 fitting samples: profile + lstsq fit + mean fit, 2 held-out samples
    assert task.total == 6 * 3 + 2 and task.completed == task.total


def test_version_and_short_file_warning(tmp_path: Path, family_dirs: dict) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("prune_compensate ")
    calib = write_jsonl(tmp_path / "c.jsonl", TEXTS)
    result = runner.invoke(app, ["profile", str(family_dirs["llama"]), "--calib", str(calib), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "warning: --n-samples 1000 asked for" in " ".join(result.output.split()) and "4 samples" in result.output


def test_stock_from_pretrained_says_to_import_the_package(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    code = f"from transformers import AutoModelForCausalLM as A; A.from_pretrained({str(out)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "run `import prune_compensate` before from_pretrained" in proc.stderr


def test_legacy_quant_method_still_loads(family_dirs: dict, tmp_path: Path) -> None:
    out = _pruned_llama(family_dirs, tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "prune_compensate"  # checkpoints of earlier versions
    (out / "config.json").write_text(json.dumps(config))
    assert isinstance(find_decoder(load_pruned(out).model).core(0), LinearCompensation)
