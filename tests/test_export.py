"""``pc export``: a pruned tiny Llama as a DeciLM folder and a GGUF file, checked against the
pruned model and against the layouts' own conventions; what the formats cannot hold is refused in
one line, before anything is written. (llama.cpp running the files: ``test_export_llamacpp.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cli_error
from safetensors.torch import load_file

from pc_testkit.tiny_models import build_llama
from prune_compensate import (
    CalibrationSample,
    ExportConfig,
    PCError,
    PruneConfig,
    export_,
    export_model,
    load_model,
    load_pruned,
    prune_,
    save_pruned,
)
from prune_compensate.export.decilm import read_decilm
from prune_compensate.export.plan import plan_decoder
from prune_compensate.export.verify import reference_logits

SAMPLES = [CalibrationSample(f"note {i}: the river {i % 5} runs past {i * 7} old mills") for i in range(24)]
IDS = torch.tensor([5, 17, 3, 42, 8, 23, 11, 30, 2, 19])


def pruned_llama(tmp_path: Path, *, bias: bool = False, width: int = 256):
    """Layer 1 with a fitted map, layer 2 with none (two prunes), layers 0 and 3 intact."""
    loaded = load_model(build_llama(tmp_path / "llama", layers=4, intermediate_size=width))
    prune_(loaded, PruneConfig(layers=[1], init="lstsq", bias=bias, show_progress=False), SAMPLES)
    prune_(loaded, PruneConfig(layers=[2], init="none", show_progress=False), SAMPLES)
    return loaded


def saved(loaded, tmp_path: Path) -> Path:  # noqa: ANN001
    return save_pruned(loaded.model, loaded.processor, tmp_path / "pruned", {"init": "lstsq"})


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS[None]).logits[0]


def test_decilm_folder_holds_the_pruned_model(tmp_path: Path) -> None:
    loaded = pruned_llama(tmp_path)
    checkpoint = saved(loaded, tmp_path)
    result = export_model(str(checkpoint), ExportConfig(tmp_path / "decilm", format="decilm"))
    assert result.layers == {"attention": [0, 3], "linear": [1], "no_op": [2], "no_ffn": [], "merged": []}
    folder = tmp_path / "decilm"
    config = json.loads((folder / "config.json").read_text())
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    attention = [block["attention"] for block in config["block_configs"]]
    assert attention[0] == {
        "n_heads_in_group": heads // kv,
        "no_op": False,
        "replace_with_linear": False,
        "sparsify": None,
    }
    assert attention[1]["replace_with_linear"] and attention[1]["n_heads_in_group"] is None
    assert attention[2]["no_op"] and not attention[2]["replace_with_linear"]
    mult = config["block_configs"][0]["ffn"]["ffn_mult"]
    assert int(2 * mult * config["hidden_size"] / 3) == config["intermediate_size"] == 256  # DeciLM's own rule
    weights = load_file(str(folder / "model.safetensors"))
    module = loaded.model.model.layers[1].self_attn
    # nn.Linear orientation (out, in): F.linear(x, weight) is the map's x W
    x = torch.randn(3, module.dim_in)
    assert torch.allclose(
        torch.nn.functional.linear(x, weights["model.layers.1.self_attn.linear_attn.weight"]), x @ module.weight
    )
    assert not any(
        k.startswith("model.layers.2.self_attn") or k == "model.layers.2.input_layernorm.weight" for k in weights
    )
    assert (
        "model.layers.1.self_attn.q_proj.weight" not in weights and "model.layers.0.self_attn.q_proj.weight" in weights
    )
    # the folder, read back, computes what load_pruned computes
    expected = logits(load_pruned(checkpoint).model)
    assert torch.allclose(reference_logits(read_decilm(folder), IDS), expected, atol=1e-4, rtol=1e-4)
    assert (folder / "tokenizer_config.json").is_file() and (folder / "export_manifest.json").is_file()


def test_gguf_file_layout(tmp_path: Path) -> None:
    import gguf

    loaded = pruned_llama(tmp_path)
    result = export_(loaded, ExportConfig(tmp_path / "m.gguf", vocab_from="none", outtype="f32"))
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    config = loaded.model.config
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "deci"
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    assert fields["deci.attention.head_count"] == [heads, heads, 0, heads]
    assert fields["deci.attention.head_count_kv"] == [kv, 0, 0, kv]
    assert fields["tokenizer.ggml.model"] == "none"
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    assert "blk.2.attn_norm.weight" not in tensors and "blk.2.attn_q.weight" not in tensors
    assert "blk.1.attn_q.weight" not in tensors
    module = loaded.model.model.layers[1].self_attn
    assert torch.equal(tensors["blk.1.attn_output.weight"], module.weight.detach().T)  # numpy (out, in)
    # q rows regrouped from rotate-half (d, d + head/2) pairs to interleaved (2i, 2i + 1) pairs, per head
    q = loaded.model.model.layers[0].self_attn.q_proj.weight.detach()
    head_dim = q.shape[0] // heads
    half = head_dim // 2
    order = [h * head_dim + j + offset for h in range(heads) for j in range(half) for offset in (0, half)]
    assert torch.equal(tensors["blk.0.attn_q.weight"], q[order])
    assert result.bytes == (tmp_path / "m.gguf").stat().st_size


def test_a_bias_is_never_dropped_silently(tmp_path: Path) -> None:
    loaded = pruned_llama(tmp_path, bias=True)
    with pytest.raises(PCError, match="map of layer 1 has a bias.*--no-bias.*--drop-bias"):
        export_(loaded, ExportConfig(tmp_path / "m.gguf", vocab_from="none"))
    assert not (tmp_path / "m.gguf").exists()
    result = export_(loaded, ExportConfig(tmp_path / "m.gguf", vocab_from="none", drop_bias=True))
    assert result.dropped_bias == [1]


def test_what_the_formats_cannot_hold_is_refused(tmp_path: Path) -> None:
    loaded = pruned_llama(tmp_path, width=128)  # 128 is no multiple of 256: DeciLM's ffn_mult cannot say it
    with pytest.raises(PCError, match="ffn_mult.*--format gguf"):
        export_(loaded, ExportConfig(tmp_path / "decilm", format="decilm"))
    assert not (tmp_path / "decilm").exists()
    export_(loaded, ExportConfig(tmp_path / "ok.gguf", vocab_from="none"))  # GGUF stores the width itself
    blocks = load_model(build_llama(tmp_path / "blocks", layers=4))
    prune_(blocks, PruneConfig(layers=[1], unit="block", show_progress=False), SAMPLES)
    with pytest.raises(PCError, match="whole block replaced by a linear map"):
        export_(blocks, ExportConfig(tmp_path / "b.gguf", vocab_from="none"))
    first = load_model(build_llama(tmp_path / "first", layers=4))
    prune_(first, PruneConfig(layers=[0], init="none", show_progress=False), SAMPLES)
    with pytest.raises(PCError, match="layer 0 has no attention"):
        export_(first, ExportConfig(tmp_path / "f.gguf", vocab_from="none"))
    with pytest.raises(PCError, match="tokenizer.*not pruned from a .gguf.*--vocab-from"):
        export_(first, ExportConfig(tmp_path / "f.gguf"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gguf") == ["ok.gguf"]


def test_an_identity_block_is_a_layer_without_attention_or_mlp(tmp_path: Path) -> None:
    loaded = load_model(build_llama(tmp_path / "llama", layers=4))
    prune_(loaded, PruneConfig(layers=[2], unit="block", init="none", show_progress=False), SAMPLES)
    plan = plan_decoder(loaded.model)
    assert [(layer.attention, layer.ffn) for layer in plan.layers][2] == ("no_op", False)
    assert torch.allclose(reference_logits(plan, IDS), logits(loaded.model), atol=1e-5, rtol=1e-5)


def test_a_model_that_computes_otherwise_is_refused(tmp_path: Path) -> None:
    """A LayerNorm with one weight passes every layout check; only running the plan against the
    model shows the formats would compute something else."""
    loaded = load_model(build_llama(tmp_path / "llama", layers=2))
    hidden = loaded.model.config.hidden_size
    loaded.model.model.norm = torch.nn.LayerNorm(hidden, bias=False)
    with pytest.raises(PCError, match="computes something else"):
        export_(loaded, ExportConfig(tmp_path / "m.gguf", vocab_from="none"))
    assert not (tmp_path / "m.gguf").exists()


def test_cli_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prune_compensate.cli import app

    checkpoint = saved(pruned_llama(tmp_path), tmp_path)
    error = cli_error(["export", str(checkpoint), "--out", str(tmp_path / "m.gguf")])
    assert "--vocab-from" in error
    error = cli_error(["export", str(checkpoint), "--out", str(tmp_path / "m.bin")])
    assert "does not end in .gguf" in error
    args = ["export", str(checkpoint), "--out", str(tmp_path / "m.gguf"), "--vocab-from", "none"]
    result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "│ 0, 3 " in result.output  # the attention layers; 1 has a map and 2 none
    assert json.loads((tmp_path / "r.json").read_text())["layers"]["linear"] == [1]
    assert "already exists" in cli_error(args)
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    error = cli_error(["export", str(tmp_path / "llama"), "--out", str(tmp_path / "x.gguf")])
    assert "not a pruned checkpoint" in error


@pytest.mark.parametrize(
    ("model_type", "why"),
    [
        ("qwen2", "no bias-free nn.Linear 'q_proj'"),  # q/k/v biases: no place for them in DeciLM
        ("gemma", "MLP activation is gelu"),  # GeGLU, 1 + w norms, a scaled embedding
        ("phi3", "also has"),  # fused qkv / gate_up projections (and more children)
        ("mistral", "sliding window"),  # llama.cpp's deci graph has no sliding window
    ],
)
def test_other_families_are_refused_by_structure(model_type: str, why: str) -> None:
    from transformers import AutoModelForCausalLM

    from pc_testkit.shrink import tiny_config
    from prune_compensate.export.plan import plan_decoder

    model = AutoModelForCausalLM.from_config(tiny_config(model_type))
    with pytest.raises(PCError, match=why):
        plan_decoder(model)
