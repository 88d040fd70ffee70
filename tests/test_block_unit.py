"""--unit block: whole decoder blocks ranked by the residual cosine across the block, each replaced by
``x + (x W + b)`` fitted to the block's residual update, on every tiny family the tests cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import TEXTS
from test_prune import _samples, check_reload_cache_and_generate

from pc_testkit import FAMILIES, Family
from prune_compensate import CalibrationConfig, CalibrationSample, PCError, load_model, load_pruned
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.checkpoint.save import save_pruned
from prune_compensate.model.locate import block_units, find_decoder, replaced_layers
from prune_compensate.pruning.compensation import BlockCompensation, LinearCompensation
from prune_compensate.pruning.config import PruneConfig
from prune_compensate.pruning.profile import ProfileConfig, profile
from prune_compensate.pruning.prune import prune_


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_block_prune_save_reload_generate(family: Family, family_dirs: dict, image_paths: list[str], tmp_path: Path):
    loaded = load_model(family_dirs[family.name])
    samples = _samples(family, image_paths)
    config = PruneConfig(
        layers=[0], unit="block", held_out=0.2, show_progress=False, calibration=CalibrationConfig(batch_size=4)
    )
    result = prune_(loaded, config, samples)
    layout = find_decoder(loaded.model)
    assert isinstance(layout.blocks[0], BlockCompensation) and result.unit == "block"
    assert result.error["lstsq"]["relative"] < result.error["none"]["relative"]
    # the attention view of the pruned stack no longer sees block 0 as attention
    assert 0 not in layout.attention_layers and replaced_layers(block_units(layout)) == [0]
    out = save_pruned(loaded.model, loaded.processor, tmp_path / "pruned", result.to_manifest())
    reloaded = load_pruned(out)
    assert isinstance(find_decoder(reloaded.model).blocks[0], BlockCompensation)

    check_reload_cache_and_generate(family, loaded, reloaded, layout, samples, result)


def test_block_fit_is_least_squares_of_the_block_update(family_dirs: dict) -> None:
    """By hand: record block 1's input x and output y on the fitting samples, solve
    ``[x, 1] [W; b] ≈ y − x`` with scipy, and compare with the fitted BlockCompensation."""
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 4)]
    reference = load_model(family_dirs["llama"])
    block = find_decoder(reference.model).blocks[1]
    xs, ys = [], []

    def hook(_m, args, kwargs, output):  # noqa: ANN001, ANN202
        hidden = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        xs.append(hidden[mask].double())
        ys.append(out[mask].double())

    encoder = BatchEncoder(reference.processor, 128)
    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        for start in range(0, len(samples), 8):
            inputs = encoder(samples[start : start + 8])
            mask = inputs["attention_mask"].bool()
            with torch.no_grad():
                reference.model(**inputs, use_cache=False)
    finally:
        handle.remove()
    x, y = torch.cat(xs), torch.cat(ys)
    design = np.hstack([x.numpy(), np.ones((x.shape[0], 1))])
    expected, *_ = scipy.linalg.lstsq(design, (y - x).numpy())

    loaded = load_model(family_dirs["llama"])
    config = PruneConfig(
        layers=[1], unit="block", ridge=0.0, held_out=0, compare=(), show_progress=False,
        calibration=CalibrationConfig(batch_size=8, max_length=128),
    )  # fmt: skip
    prune_(loaded, config, samples)
    module = find_decoder(loaded.model).blocks[1]
    assert isinstance(module, BlockCompensation)
    np.testing.assert_allclose(module.weight.detach().double().numpy(), expected[:-1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(module.bias.detach().double().numpy(), expected[-1], rtol=1e-3, atol=1e-4)
    # and the module computes x + x W + b
    z = torch.randn(2, 3, x.shape[1])
    torch.testing.assert_close(module(z), z + z @ module.weight + module.bias)


def test_block_profile_ranks_by_the_cosine_across_the_block(minilm_dir: Path) -> None:
    """A profile reports both cosines per layer; --unit block ranks by the block column, and the
    block cosine is by hand the mean cosine of a block's input and output rows."""
    samples = [CalibrationSample(t) for t in TEXTS * 3]
    loaded = load_model(minilm_dir)
    attention = profile(loaded, ProfileConfig(time_layers=False, show_progress=False), samples)
    block = profile(loaded, ProfileConfig(unit="block", time_layers=False, show_progress=False), samples)
    assert block.unit == "block" and attention.unit == "attention"
    for a, b in zip(attention.layers, block.layers, strict=True):
        assert a.block_cosine_mean == pytest.approx(b.cosine_mean, abs=1e-9)
    assert block.ranking == sorted(range(6), key=lambda i: (-block.layers[i].cosine_mean, i))

    layout = find_decoder(loaded.model)
    cosines: list[torch.Tensor] = []

    def hook(_m, args, kwargs, output):  # noqa: ANN001, ANN202
        hidden = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        cosines.append(torch.nn.functional.cosine_similarity(hidden[mask].double(), out[mask].double(), dim=-1))

    encoder = BatchEncoder(loaded.processor, 512)
    handle = layout.blocks[2].register_forward_hook(hook, with_kwargs=True)
    try:
        for start in range(0, len(samples), 8):
            inputs = encoder(samples[start : start + 8])
            mask = inputs["attention_mask"].bool()
            with torch.no_grad():
                loaded.model(**inputs)
    finally:
        handle.remove()
    assert float(torch.cat(cosines).mean()) == pytest.approx(block.layers[2].cosine_mean, abs=1e-6)


def test_attention_then_block_pruning_and_mismatched_profile(family_dirs: dict, tmp_path: Path) -> None:
    """Attention pruning and block pruning compose (a block whose attention is a compensation can
    still be dropped whole), and a profile of the other unit is refused in one line."""
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 3)]
    loaded = load_model(family_dirs["llama"])
    prune_(loaded, PruneConfig(layers=[1], held_out=0, compare=(), show_progress=False), samples)
    assert isinstance(find_decoder(loaded.model).core(1), LinearCompensation)
    attention_profile = profile(loaded, ProfileConfig(time_layers=False, show_progress=False), samples)
    with pytest.raises(PCError, match="ranks attention units"):
        prune_(loaded, PruneConfig(k=1, unit="block", profile=attention_profile, show_progress=False), samples)
    result = prune_(loaded, PruneConfig(layers=[1], unit="block", compare=(), show_progress=False), samples)
    layout = find_decoder(loaded.model)
    assert isinstance(layout.blocks[1], BlockCompensation) and layout.attention_layers == [0]
    out = save_pruned(loaded.model, loaded.processor, tmp_path / "both", result.to_manifest())
    reloaded = load_pruned(out)
    ids = loaded.processor(text=["a test"], return_tensors="pt") if hasattr(loaded.processor, "tokenizer") else None
    ids = ids or loaded.processor(["a test"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(loaded.model(**ids).logits, reloaded.model(**ids).logits)
    with pytest.raises(PCError, match="pruning all 1 remaining blocks"):
        prune_(reloaded, PruneConfig(layers=[0], unit="block", show_progress=False), samples)
    # attention 0 pruned, then block 1 dropped: block 0 is left, but with no attention to cache
    other = load_model(family_dirs["llama"])
    prune_(other, PruneConfig(layers=[0], held_out=0, compare=(), show_progress=False), samples)
    with pytest.raises(PCError, match="no block with attention"):
        prune_(other, PruneConfig(layers=[1], unit="block", show_progress=False), samples)
    with pytest.raises(PCError, match="unknown --unit"):
        PruneConfig(unit="head")


def test_pc_prune_unit_block_full_and_delta(minilm_dir: Path, tmp_path: Path) -> None:
    """The CLI end to end on the real MiniLM: a block-pruned full and delta checkpoint reload to the
    same outputs; the profile JSON says which unit it ranks; a bad --unit is one line."""
    import json
    import shutil

    from conftest import cli_error
    from typer.testing import CliRunner

    from prune_compensate.cli import app

    runner = CliRunner()
    base = tmp_path / "minilm"
    shutil.copytree(minilm_dir, base)
    common = ["--k", "1", "--unit", "block", "--n-samples", "40", "--quiet"]
    for save in ("full", "delta"):
        result = runner.invoke(app, ["prune", str(base), *common, "--save", save, "--out", str(tmp_path / save)])
        assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "full" / "prune_manifest.json").read_text())
    assert manifest["unit"] == "block" and manifest["k"] == 1
    inputs = BatchEncoder(load_model(base).processor, 64)([CalibrationSample(t) for t in TEXTS])
    with torch.no_grad():
        full = load_pruned(tmp_path / "full").model
        delta = load_pruned(tmp_path / "delta").model
        assert float((full(**inputs).last_hidden_state - delta(**inputs).last_hidden_state).abs().max()) <= 1e-6
    (dropped,) = manifest["pruned_layers"]
    assert isinstance(find_decoder(full).blocks[dropped], BlockCompensation)
    profile_json = tmp_path / "profile.json"
    result = runner.invoke(
        app, ["profile", str(base), "--unit", "block", "--n-samples", "8", "--json", str(profile_json)]
    )
    assert result.exit_code == 0, result.output
    assert "Block redundancy" in result.output and json.loads(profile_json.read_text())["unit"] == "block"
    assert "unknown --unit 'head'" in cli_error(["prune", str(base), "--unit", "head", "--out", str(tmp_path / "x")])


def test_heal_trains_block_maps_only(family_dirs: dict) -> None:
    """Heal works on whole-block units: from zero maps (none) it beats dropping the block outright
    on held-out samples, and trains nothing but the replacement map."""
    from prune_compensate.pruning.heal import HealConfig

    loaded = load_model(family_dirs["llama"])
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 10)]
    heal = HealConfig(steps=40, lr=1e-2, batch_size=4, eval_every=10, patience=10, train_norms=True)
    config = PruneConfig(layers=[1], unit="block", init="none", held_out=0.25, heal=heal, show_progress=False)
    result = prune_(loaded, config, samples)
    assert result.error["heal"]["kl"] < 0.9 * result.error["none"]["kl"]
    block = find_decoder(loaded.model).blocks[1]
    assert isinstance(block, BlockCompensation) and float(block.weight.detach().abs().sum()) > 0
    after = dict(loaded.model.named_parameters())
    kept = [name for name in before if name in after]
    assert kept and all(torch.equal(before[n], after[n]) for n in kept)
