"""llama.cpp (llama-cpp-python, the ``serve`` extra) runs what ``pc export --format gguf`` writes:
a pruned tiny Llama with normal, linear-map, no-attention, merged-map (``ffn_down.bias``) and
identity layers gives the logits and the greedy tokens of ``load_pruned``. ``.ci/run`` installs the engine and sets
``PC_REQUIRE_LLAMA_CPP=1``, so there these tests never skip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pc_testkit.tiny_models import build_llama
from prune_compensate import (
    CalibrationSample,
    ExportConfig,
    PruneConfig,
    export_,
    load_model,
    load_pruned,
    prune_,
    save_pruned,
)
from prune_compensate.export.gguf_file import write_gguf
from prune_compensate.export.plan import plan_decoder
from prune_compensate.export.vocab import read_vocab

if os.environ.get("PC_REQUIRE_LLAMA_CPP") != "1":
    pytest.importorskip("llama_cpp", reason="llama.cpp comes with the serve extra: pip install -e '.[serve]'")
from llama_cpp import Llama  # noqa: E402

SAMPLES = [CalibrationSample(f"note {i}: the river {i % 5} runs past {i * 7} old mills") for i in range(24)]
PROMPT = [5, 17, 3, 42, 8, 23, 11, 30, 2, 19, 7, 13]
PROMPTS = 8


def engine(path: Path) -> Llama:
    return Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=1, seed=0)


def engine_greedy(llm: Llama, ids: list[int], new_tokens: int) -> tuple[np.ndarray, list[int]]:
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    out = []
    for _ in range(new_tokens):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return logits, out


@pytest.mark.parametrize("unit", ["attention", "merged", "block"])
def test_llamacpp_runs_the_export_like_load_pruned(tmp_path: Path, unit: str) -> None:
    loaded = load_model(build_llama(tmp_path / "llama", layers=5))
    if unit == "attention":  # a fitted map at 1 and 3, no attention at 2
        prune_(loaded, PruneConfig(layers=[1, 3], bias=False, show_progress=False), SAMPLES)
        prune_(loaded, PruneConfig(layers=[2], init="none", show_progress=False), SAMPLES)
    elif unit == "merged":  # maps of 2 and 3 merged, with their biases, into the MLPs of 1 and 2
        prune_(loaded, PruneConfig(layers=[2, 3], init="merged", show_progress=False), SAMPLES)
    else:  # an identity block at 2
        prune_(loaded, PruneConfig(layers=[2], unit="block", init="none", show_progress=False), SAMPLES)
    checkpoint = save_pruned(loaded.model, loaded.processor, tmp_path / "pruned", {})
    model = load_pruned(checkpoint).model
    export_(loaded, ExportConfig(tmp_path / "m.gguf", outtype="f32", vocab_from="none"))
    llm = engine(tmp_path / "m.gguf")
    compared = 0
    for shift in range(PROMPTS):
        prompt = [(token * (shift + 1) + shift) % model.config.vocab_size for token in PROMPT]
        logits, tokens = engine_greedy(llm, prompt, 16)
        compared += compare_greedy(model, prompt, logits, tokens)
    llm.close()
    assert compared >= 16, f"only {compared} greedy steps were clear of near-ties"


def compare_greedy(model: torch.nn.Module, prompt: list[int], logits: np.ndarray, tokens: list[int]) -> int:
    """Assert the engine's prompt logits equal the model's, and its greedy tokens up to the first
    step whose top-2 margin is within 10× the engines' difference (a near-tie of a random tiny
    model, where float rounding may pick either); returns how many steps were compared."""
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([prompt])).logits[0].numpy()
        generated = model.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=len(tokens), min_new_tokens=len(tokens), do_sample=False
        )
        steps = model(input_ids=generated[:, :-1]).logits[0, len(prompt) - 1 :]
    difference = float(np.abs(logits - expected).max())
    assert difference <= 1e-3 * np.abs(expected).max()
    margins = steps.topk(2, dim=-1).values.diff(dim=-1).abs()[:, 0]
    clear = int(torch.cumprod((margins > 10 * difference).int(), 0).sum())
    assert tokens[:clear] == generated[0, len(prompt) : len(prompt) + clear].tolist()
    return clear


def test_llamacpp_quantised_export_generates(tmp_path: Path) -> None:
    loaded = load_model(build_llama(tmp_path / "llama", layers=4))
    prune_(loaded, PruneConfig(layers=[1, 2], bias=False, show_progress=False), SAMPLES)
    export_(loaded, ExportConfig(tmp_path / "m.gguf", outtype="q8_0", vocab_from="none"))
    llm = engine(tmp_path / "m.gguf")
    logits, tokens = engine_greedy(llm, PROMPT, 8)
    llm.close()
    with torch.no_grad():
        expected = loaded.model(input_ids=torch.tensor([PROMPT])).logits[0].numpy()
    assert len(tokens) == 8 and np.isfinite(logits).all()
    assert (logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.75  # 8-bit weights: close, not equal


def test_llamacpp_cannot_load_a_model_without_attention_at_layer_0(tmp_path: Path) -> None:
    """Why ``pc export`` refuses a layer-0 ``no_op`` (``check_gguf``): llama.cpp reads the head
    size from layer 0. The file is written past that check here; when llama.cpp loads it, lift
    the refusal."""
    loaded = load_model(build_llama(tmp_path / "llama", layers=3))
    prune_(loaded, PruneConfig(layers=[0], init="none", show_progress=False), SAMPLES)
    write_gguf(plan_decoder(loaded.model), read_vocab("none"), tmp_path / "m.gguf", "f32")
    with pytest.raises(ValueError, match="Failed to load model"):
        engine(tmp_path / "m.gguf")
