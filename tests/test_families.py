"""Every supported family through the user's path: ``pc profile DIR`` with image inputs, plus a
check that the located residual-after-attention equals one recomputed from the block's modules.

One table of cases (``pc_testkit.FAMILIES``) run through one shared tester, like peft's tuner tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, write_jsonl
from typer.testing import CliRunner

from pc_testkit import FAMILIES, Family
from prune_compensate import load_model
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.forward import TokenMask, find_residual_sites, run_forward
from prune_compensate.calibration.sources import CalibrationSample
from prune_compensate.cli import app
from prune_compensate.model.locate import block_input, find_decoder, residual_from_hook

runner = CliRunner()


def _samples(family: Family, images: list[str]) -> list[CalibrationSample]:
    imgs = images[:1] if family.vision else []
    return [CalibrationSample(text, imgs, f"s{i}") for i, text in enumerate(TEXTS[:2])]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_pc_profile_end_to_end(family: Family, family_dirs: dict, image_paths: list[str], tmp_path: Path) -> None:
    calib = write_jsonl(tmp_path / "calib.jsonl", TEXTS, image_paths[:1] if family.vision else None)
    out = tmp_path / "profile.json"
    plot = tmp_path / "profile.png"
    result = runner.invoke(
        app,
        [
            "profile",
            str(family_dirs[family.name]),
            "--calib",
            str(calib),
            "--k",
            "1",
            "--batch-size",
            "2",
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema"] == 1 and data["n_samples"] == len(TEXTS)
    assert len(data["layers"]) == 2 and sorted(data["ranking"]) == [0, 1]
    assert data["chosen"] == data["ranking"][:1]
    assert data["decoder"]["blocks"] == family.blocks_path
    assert data["decoder"]["residual_after_attention"]["module"] == family.expected_site
    for layer in data["layers"]:
        assert -1.0 <= layer["cosine_mean"] <= 1.0 and layer["cosine_std"] >= 0
        assert 0.0 < layer["attention_time_share"] < 1.0
    text_tokens = sum(len(t.split()) for t in TEXTS)
    if family.vision:  # image tokens are in the statistics, so there are more tokens than words
        assert data["n_tokens"] > text_tokens
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_residual_after_attention_matches_hand_recomputation(
    family: Family, family_dirs: dict, image_paths: list[str]
) -> None:
    loaded = load_model(family_dirs[family.name])
    model = loaded.model
    layout = find_decoder(model)
    encoder = BatchEncoder(loaded.processor, 64)
    encoder.decoder_text = layout.cross_attends
    inputs = encoder(_samples(family, image_paths))
    for name in family.extra_inputs:
        assert name in inputs, f"{family.name} needs {name} in forward"
    token_mask = TokenMask()
    sites = find_residual_sites(model, layout, inputs, token_mask)
    assert sites[0].module == family.expected_site

    located, block_in, attn_out = {}, {}, {}
    handles = []
    for i, block in enumerate(layout.blocks):

        def pre(_m, args, kwargs, i=i):
            block_in[i] = block_input(args, kwargs)

        def core(_m, args, kwargs, output, i=i):
            attn_out[i] = output[0]

        def site(_m, args, kwargs, output, i=i):
            located[i] = residual_from_hook(sites[i], args, kwargs, output, block_in[i])

        handles += [
            block.register_forward_pre_hook(pre, with_kwargs=True),
            layout.core(i).register_forward_hook(core, with_kwargs=True),
            block.get_submodule(sites[i].module).register_forward_hook(site, with_kwargs=True),
        ]
    try:
        run_forward(model, inputs, token_mask)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for i, block in enumerate(layout.blocks):
            if family.residual in ("add", "parallel"):
                expected = block_in[i] + attn_out[i]
            elif family.residual == "norm_of_add":
                expected = block.self_attn_layer_norm(block_in[i] + attn_out[i])
            else:
                expected = block_in[i] + block.post_attention_layernorm(attn_out[i])
            torch.testing.assert_close(located[i], expected, rtol=1e-5, atol=1e-5)


def test_minilm_post_norm_residual_matches_hand_recomputation(minilm_dir: Path) -> None:
    """BERT-style post-norm: residual after attention = LayerNorm(dense(self_attn(x)) + x)."""
    loaded = load_model(minilm_dir)
    layout = find_decoder(loaded.model)
    assert layout.blocks_path == "encoder.layer" and layout.core_names[0] == "attention.self"
    inputs = BatchEncoder(loaded.processor, 64)([CalibrationSample(t) for t in TEXTS])
    token_mask = TokenMask()
    sites = find_residual_sites(loaded.model, layout, inputs, token_mask)
    assert (sites[0].module, sites[0].where, sites[0].layout) == ("attention", "output", "post-norm")
    seen = {}
    block = layout.blocks[3]
    h1 = block.register_forward_pre_hook(lambda m, a, k: seen.update(x=block_input(a, k)), with_kwargs=True)
    h2 = layout.core(3).register_forward_hook(lambda m, a, k, o: seen.update(o=o[0]), with_kwargs=True)
    h3 = block.attention.register_forward_hook(
        lambda m, a, k, o: seen.update(site=residual_from_hook(sites[3], a, k, o)), with_kwargs=True
    )
    try:
        run_forward(loaded.model, inputs, token_mask)
    finally:
        for h in (h1, h2, h3):
            h.remove()
    out = block.attention.output
    with torch.no_grad():
        expected = out.LayerNorm(out.dense(seen["o"]) + seen["x"])
    torch.testing.assert_close(seen["site"], expected, rtol=1e-5, atol=1e-5)
