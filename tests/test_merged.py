"""``--init merged``: an attention's map fitted on the MLP output below it and folded into that
MLP's down-projection; checked against scipy's least squares, through save / reload / generate,
into a GGUF, and refused where the block is not ``x + attention + MLP``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import TEXTS

from pc_testkit.tiny_models import build_llama
from prune_compensate import (
    CalibrationSample,
    ExportConfig,
    PCError,
    PruneConfig,
    export_,
    load_model,
    load_pruned,
    prune_,
    save_pruned,
)
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.sources import CalibrationConfig
from prune_compensate.checkpoint.delta import load_delta, save_delta
from prune_compensate.pruning.compensation import LinearCompensation, MergedProjection

SAMPLES = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 4)]
DATA = CalibrationConfig(batch_size=8, max_length=128)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("merged") / "llama", layers=4, intermediate_size=96)


def test_merged_map_is_least_squares_on_the_mlp_output_folded_into_it(llama_dir: Path) -> None:
    """By hand: record block 1's MLP output m and layer 2's attention output a on the fitting
    samples, solve ``[m, 1] [T; b] ≈ a`` with scipy; the pruned model's block-1 down-projection must
    be ``W_dᵀ (I + T)`` with bias ``b``, and layer 2's attention gone (a ``none`` core)."""
    reference = load_model(llama_dir)
    layers = reference.model.model.layers
    rows: dict[str, list[torch.Tensor]] = {"m": [], "a": []}
    mask = torch.empty(0)

    def keep(key: str):  # noqa: ANN202
        def hook(_m, _args, output):  # noqa: ANN001, ANN202
            out = output[0] if isinstance(output, tuple) else output
            rows[key].append(out[mask].double())

        return hook

    handles = [
        layers[1].mlp.down_proj.register_forward_hook(keep("m")),
        layers[2].self_attn.register_forward_hook(keep("a")),
    ]
    encoder = BatchEncoder(reference.processor, 128)
    try:
        for start in range(0, len(SAMPLES), 8):
            inputs = encoder(SAMPLES[start : start + 8])
            mask = inputs["attention_mask"].bool()
            with torch.no_grad():
                reference.model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    m, a = torch.cat(rows["m"]), torch.cat(rows["a"])
    design = np.hstack([m.numpy(), np.ones((m.shape[0], 1))])
    expected, *_ = scipy.linalg.lstsq(design, a.numpy())
    transform, bias = expected[:-1], expected[-1]
    down = layers[1].mlp.down_proj.weight.detach().double().numpy()

    loaded = load_model(llama_dir)
    config = PruneConfig(
        layers=[2], init="merged", ridge=0.0, held_out=0, compare=(), show_progress=False, calibration=DATA
    )
    prune_(loaded, config, SAMPLES)
    merged = loaded.model.model.layers[1].mlp.down_proj
    core = loaded.model.model.layers[2].self_attn
    assert isinstance(merged, MergedProjection) and merged.merged_layer == 2
    assert isinstance(core, LinearCompensation) and core.kind == "none"
    want = down.T @ (np.eye(transform.shape[0]) + transform)
    np.testing.assert_allclose(merged.weight.detach().double().numpy(), want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(merged.bias.detach().double().numpy(), bias, rtol=1e-3, atol=1e-4)


def test_merged_prune_reloads_generates_and_exports(llama_dir: Path, tmp_path: Path) -> None:
    """Layers 1 and 2 merged bottom-up (layer 2's map folds into the MLP of layer 1, whose own
    attention is gone): better than no map on held-out samples; full and delta checkpoints give the
    same logits; generation runs with two KV layers; the GGUF holds ffn_down.bias; DeciLM refuses."""
    import gguf

    loaded = load_model(llama_dir)
    config = PruneConfig(layers=[1, 2], init="merged", compare=("none", "lstsq"), show_progress=False, calibration=DATA)
    result = prune_(loaded, config, SAMPLES)
    assert result.error["merged"]["kl"] < result.error["none"]["kl"]
    ids = torch.tensor([[5, 17, 3, 42, 8, 23, 11, 30]])
    with torch.no_grad():
        want = loaded.model(input_ids=ids).logits
    full = save_pruned(loaded.model, loaded.processor, tmp_path / "full", {"init": "merged"})
    delta = save_delta(loaded.model, loaded.processor, tmp_path / "delta", {"init": "merged"}, loaded.origin)
    for reloaded in (load_pruned(full), load_delta(delta)):
        with torch.no_grad():
            torch.testing.assert_close(reloaded.model(input_ids=ids).logits, want)
        assert isinstance(reloaded.model.model.layers[0].mlp.down_proj, MergedProjection)
        out = reloaded.model.generate(ids, max_new_tokens=4, do_sample=False)
        assert out.shape == (1, ids.shape[1] + 4)
    exported = export_(loaded, ExportConfig(tmp_path / "m.gguf", vocab_from="none", outtype="f32"))
    assert exported.layers["no_op"] == [1, 2] and exported.layers["merged"] == [1, 2]
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    assert torch.equal(tensors["blk.0.ffn_down.bias"], loaded.model.model.layers[0].mlp.down_proj.bias.detach())
    assert "blk.3.ffn_down.bias" not in tensors and "blk.1.attn_output.weight" not in tensors
    with pytest.raises(PCError, match="format gguf"):
        export_(loaded, ExportConfig(tmp_path / "folder", format="decilm"))


def test_what_merged_cannot_do_is_refused(llama_dir: Path, family_dirs: dict) -> None:
    """Layer 0 has no MLP below; a heal trains maps, and a merged one is in an MLP; a whole block
    has no MLP to fold into; Gemma 3's block normalises its attention (and MLP) output before the
    residual, so a map fitted on the MLP output cannot stand in for it (found on a real forward)."""
    for kwargs, words in (
        ({"layers": [0]}, "layer 0"),
        ({"unit": "block"}, "whole block"),
        ({"rank": 4}, "--rank"),
        ({"heal": {"steps": 5}}, "heal"),
    ):
        if "heal" in kwargs:
            from prune_compensate.pruning.heal import HealConfig

            kwargs = {"heal": HealConfig(**kwargs["heal"])}
        with pytest.raises(PCError, match=words):
            PruneConfig(init="merged", **kwargs)
    config = PruneConfig(k=1, init="merged", compare=(), show_progress=False, calibration=DATA)
    with pytest.raises(PCError, match="nonlinear output map"):
        prune_(load_model(family_dirs["gemma3"]), config, SAMPLES[:8])
    # a norm after the MLP's projection (built by hand): the residual does not get what the map is fitted on
    loaded = load_model(llama_dir)
    mlp = loaded.model.model.layers[1].mlp
    mlp.down_proj = torch.nn.Sequential(mlp.down_proj, torch.nn.LayerNorm(mlp.down_proj.out_features))
    config = PruneConfig(layers=[2], init="merged", compare=(), show_progress=False, calibration=DATA)
    with pytest.raises(PCError, match="block 1 is not input \\+ attention \\+ MLP projection"):
        prune_(loaded, config, SAMPLES[:8])
    # ranked: layer 0 is never chosen for a merged map
    loaded = load_model(llama_dir)
    result = prune_(loaded, PruneConfig(k=3, init="merged", compare=(), show_progress=False, calibration=DATA), SAMPLES)
    assert result.pruned_layers == [1, 2, 3]
