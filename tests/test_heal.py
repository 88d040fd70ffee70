"""Heal: its objectives equal by-hand formulas, it trains only the maps, and distillation from zero
maps learns what dropping the attention lost (tiny Llama, next-token KL)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import torch
from conftest import TEXTS
from typer.testing import CliRunner

from prune_compensate import CalibrationSample, PCError, PruneConfig, load_model, prune_
from prune_compensate.cli import app
from prune_compensate.model.locate import find_decoder
from prune_compensate.pruning.compensation import LinearCompensation
from prune_compensate.pruning.error import FinalOutputs
from prune_compensate.pruning.heal import HealConfig, objective_loss

runner = CliRunner()


def test_objectives_match_hand_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    hidden_a, hidden_b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    logits_a, logits_b = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    a, b = FinalOutputs(hidden_a, logits_a), FinalOutputs(hidden_b, logits_b)
    real = mask.bool().numpy()
    pooled = [np.stack([h[i][real[i]].mean(0) for i in range(2)]) for h in (hidden_a.numpy(), hidden_b.numpy())]
    cosine = (pooled[0] * pooled[1]).sum(1) / np.linalg.norm(pooled[0], axis=1) / np.linalg.norm(pooled[1], axis=1)
    assert float(objective_loss("embedding", a, b, mask)) == pytest.approx(float(np.mean(1 - cosine)), rel=1e-5)
    unit = [e / np.linalg.norm(e, axis=1, keepdims=True) for e in pooled]
    gram_gap = unit[1] @ unit[1].T - unit[0] @ unit[0].T
    assert float(objective_loss("similarity", a, b, mask)) == pytest.approx(float(np.mean(gram_gap**2)), rel=1e-5)
    p = scipy.special.softmax(logits_a.numpy()[real], axis=-1)
    q = scipy.special.softmax(logits_b.numpy()[real], axis=-1)
    kl = scipy.special.rel_entr(p, q).sum(-1).mean()
    assert float(objective_loss("kl", a, b, mask)) == pytest.approx(float(kl), rel=1e-5)
    diff = hidden_b.numpy()[real] - hidden_a.numpy()[real]
    relative = (diff**2).sum() / (hidden_a.numpy()[real] ** 2).sum()
    assert float(objective_loss("hidden", a, b, mask)) == pytest.approx(float(relative), rel=1e-5)


def test_heal_from_zero_maps_learns_and_touches_nothing_else(family_dirs: dict) -> None:
    loaded = load_model(family_dirs["llama"])
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 10)]
    heal = HealConfig(steps=40, lr=1e-2, batch_size=4, eval_every=10, patience=10)
    config = PruneConfig(layers=[1], init="none", held_out=0.25, heal=heal, show_progress=False)
    result = prune_(loaded, config, samples)
    # the held-out report (samples the heal never saw) against dropping the attention outright
    assert result.error["heal"]["kl"] < 0.9 * result.error["none"]["kl"]
    assert result.heal["objective"] == "kl" and result.heal["steps_run"] > 0
    assert result.heal["last_lr"] == heal.lr  # constant schedule (the default)
    assert (
        result.heal["curve"][0][0] == 0 and min(loss for _, loss in result.heal["curve"]) < result.heal["curve"][0][1]
    )
    core = find_decoder(loaded.model).core(1)
    assert isinstance(core, LinearCompensation) and core.kind == "linear"
    assert float(core.weight.detach().abs().sum()) > 0
    after = dict(loaded.model.named_parameters())
    untouched = [name for name in before if name in after]
    assert untouched and all(torch.equal(before[n], after[n]) for n in untouched)  # only the maps trained
    assert all(p.requires_grad for p in loaded.model.parameters())  # flags restored


def test_heal_needs_held_out_samples_and_valid_options(family_dirs: dict) -> None:
    with pytest.raises(PCError, match="--heal-steps must be non-negative"):
        HealConfig(steps=-1)
    with pytest.raises(PCError, match="unknown heal objective"):
        HealConfig(objective="mse")
    with pytest.raises(PCError, match="unknown heal schedule"):
        HealConfig(schedule="linear")


def test_pc_prune_heal_writes_the_curve(family_dirs: dict, tmp_path: Path) -> None:
    out = tmp_path / "healed"
    args = ["prune", str(family_dirs["llama"]), "--k", "1", "--n-samples", "16", "--heal-steps", "4", "--out", str(out)]
    result = runner.invoke(app, [*args, "--heal-schedule", "cosine", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Heal (kl)" in result.output
    manifest = json.loads((out / "prune_manifest.json").read_text())
    assert set(manifest["error"]) == {"none", "lstsq", "heal"}
    assert manifest["heal"]["steps_run"] == 4 and len(manifest["heal"]["curve"]) >= 2
    assert manifest["heal"]["last_lr"] == pytest.approx(0.0, abs=1e-12)  # cosine: decayed to zero at the last step


def test_auto_objective_is_kl_for_lms_and_hidden_for_encoders(family_dirs: dict) -> None:
    """Encoders distil every token's final state by default: on MiniLM it served retrieval better
    than the pooled embedding's cosine (benchmarks/core/heal_minilm.py)."""
    from prune_compensate.pruning.heal import resolve_objective

    assert resolve_objective(load_model().model, "auto") == "hidden"  # the embedded MiniLM
    assert resolve_objective(load_model(family_dirs["llama"]).model, "auto") == "kl"
    assert resolve_objective(load_model().model, "embedding") == "embedding"


def test_heal_of_base_weights_keeps_the_teacher_and_the_report_on_the_original_ones(family_dirs: dict) -> None:
    """Trained in place, the norms (``train_norms``) and MLPs (``train_mlps``) are shared with the
    teacher (the same model with the original cores swapped back in): the report's reference and its
    none row must still run with the original weights, so they equal those of a heal that trains the
    maps only; the model keeps the healed weights, and the CLI refuses a delta save that would drop them."""
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 10)]
    results, models = [], []
    for trained in ({}, {"train_norms": True}, {"train_mlps": True}):
        loaded = load_model(family_dirs["llama"])
        heal = HealConfig(steps=40, lr=3e-3, batch_size=4, eval_every=10, patience=10, **trained)
        config = PruneConfig(layers=[1], init="none", held_out=0.25, heal=heal, show_progress=False)
        results.append(prune_(loaded, config, samples))
        models.append(loaded.model)
    plain = results[0]
    original = dict(find_decoder(load_model(family_dirs["llama"]).model).blocks[1].named_parameters())
    for result, model, kind in zip(results[1:], models[1:], ("norm", "mlp"), strict=True):
        assert "none" in plain.error and set(plain.error) == set(result.error)
        for name in set(plain.error) - {"heal"}:
            assert result.error[name]["kl"] == pytest.approx(plain.error[name]["kl"], rel=1e-5, abs=1e-9)
        assert result.error["heal"]["kl"] < result.error["none"]["kl"]
        healed = dict(find_decoder(model).blocks[1].named_parameters())
        changed = {n for n in healed if n in original and not torch.equal(healed[n], original[n])}
        assert changed and all(kind in n for n in changed), changed  # only what was asked for moved
    assert results[2].heal["trained_parameters"] - results[0].heal["trained_parameters"] == sum(
        p.numel() for n, p in original.items() if n.startswith("mlp.")
    )
    for flag in ("--heal-norms", "--heal-mlps"):
        args = ["prune", str(family_dirs["llama"]), "--k", "1", "--heal-steps", "2", flag, "--save", "delta"]
        result = runner.invoke(app, [*args, "--out", str(Path(family_dirs["llama"]).parent / "never")])
        assert result.exit_code == 2 and flag in result.output and "--save full" in result.output


def test_base_parameters_are_the_blocks_norms_and_the_rest_but_the_core(family_dirs: dict) -> None:
    """Found by structure: in a Llama block, --heal-norms is the two RMSNorms, --heal-mlps the
    gate/up/down projections; the attention core (original or map) is never among them."""
    from prune_compensate.pruning.heal import _groups, trained_base

    layout = find_decoder(load_model(family_dirs["llama"]).model)
    block = dict(layout.blocks[0].named_parameters())

    def names(**flags: bool) -> set[str]:
        chosen = {id(p) for p in trained_base(layout, [0], HealConfig(**flags)).params}
        return {n for n, p in block.items() if id(p) in chosen}

    assert names() == set()
    assert names(train_norms=True) == {"input_layernorm.weight", "post_attention_layernorm.weight"}
    assert names(train_mlps=True) == {f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    assert not any(n.startswith("self_attn") for n in names(train_norms=True, train_mlps=True))
    # the maps and norms learn at lr, the pretrained MLP weights at the smaller mlp_lr
    config = HealConfig(train_norms=True, train_mlps=True, lr=1e-3, mlp_lr=1e-4)
    groups = _groups({0: LinearCompensation(8, 8)}, trained_base(layout, [0], config), config)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert {id(p) for p in groups[1]["params"]} == {id(block[f"mlp.{p}_proj.weight"]) for p in ("gate", "up", "down")}
    assert len(groups[0]["params"]) == 2 + 2  # the map's weight and bias, the two norms


PAIRS = [
    ("Denton", "city in Texas, United States"),
    ("The Rolling Stones", "English rock band"),
    ("Jeremy Irons", "English actor"),
    ("Missing", "1982 American drama film"),
    ("PolyGram Filmed Entertainment", "film production company"),
    ("University of North Texas", "public research university in Denton, Texas"),
    ("rock and roll", "genre of popular music"),
    ("Academy Award for Best Actor", "award presented annually by the Academy of Motion Picture Arts and Sciences"),
]


def test_heal_select_pairs_keeps_the_step_with_the_best_task_mrr(tmp_path: Path) -> None:
    """With ``select_pairs`` the kept step is the argmax of the task curve (step 0, the start,
    included), and the model left behind scores exactly that MRR when ``pc eval`` scores the same pairs."""
    from prune_compensate.eval import EvalConfig, evaluate

    pairs = tmp_path / "select.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "document": d}) + "\n" for q, d in PAIRS), encoding="utf-8")
    loaded = load_model()
    samples = [CalibrationSample(f"{t} {i}") for i, t in enumerate(TEXTS * 10)]
    heal = HealConfig(steps=30, lr=3e-3, batch_size=4, eval_every=5, patience=10, select_pairs=str(pairs))
    result = prune_(
        loaded, PruneConfig(layers=[1, 2, 3, 4, 5], init="none", held_out=0.25, heal=heal, show_progress=False), samples
    )
    report = result.heal
    assert report["selected_by"] == "task score"
    steps = [step for step, _ in report["task_curve"]]
    assert steps == [step for step, _ in report["curve"]] and steps[0] == 0 and len(steps) >= 4
    scores = [score for _, score in report["task_curve"]]
    assert report["best_step"] == steps[scores.index(max(scores))]
    losses = [loss for _, loss in report["curve"]]
    assert report["best_step"] != steps[losses.index(min(losses))]  # here the task and the loss disagree
    found = {m.metric: m.pruned for m in evaluate(loaded, None, EvalConfig(text=None, pairs=str(pairs))).metrics}
    assert found["mrr"] == pytest.approx(max(scores), abs=1e-9)


def test_heal_select_pairs_fails_before_any_fit_on_a_bad_file(tmp_path: Path) -> None:
    heal = HealConfig(steps=5, select_pairs=str(tmp_path / "absent.jsonl"))
    config = PruneConfig(layers=[1], init="none", heal=heal, show_progress=False)
    with pytest.raises(PCError, match="absent.jsonl"):
        prune_(load_model(), config, [CalibrationSample(t) for t in TEXTS * 3])


def test_pc_prune_heal_select_pairs_shows_the_task_curve(minilm_dir: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "select.jsonl"
    pairs.write_text("".join(json.dumps({"query": q, "document": d}) + "\n" for q, d in PAIRS), encoding="utf-8")
    out = tmp_path / "healed"
    args = ["prune", str(minilm_dir), "--layers", "1", "--n-samples", "24", "--heal-steps", "4", "--out", str(out)]
    result = runner.invoke(app, [*args, "--heal-select-pairs", str(pairs), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "task MRR" in result.output and "by task score" in result.output
    manifest = json.loads((out / "prune_manifest.json").read_text())
    assert len(manifest["heal"]["task_curve"]) == len(manifest["heal"]["curve"]) >= 2
