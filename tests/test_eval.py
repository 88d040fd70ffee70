"""pc eval: every number checked against an independent computation (transformers' own loss, the
perplexity guide's loop, sentence-transformers + scipy ranks, a by-hand lm-eval log-likelihood)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import TEXTS, cli_error, write_jsonl
from typer.testing import CliRunner

from prune_compensate import CalibrationSample, PCError, PruneConfig, load_model, load_pruned, prune_, save_pruned
from prune_compensate.cli import app
from prune_compensate.eval import EvalConfig, evaluate
from prune_compensate.eval.data import Caption
from prune_compensate.eval.lm import caption_inputs, windows
from prune_compensate.scoring.pairs import read_pairs
from prune_compensate.scoring.retrieval import realistic_ranks

runner = CliRunner()
SAMPLES = [CalibrationSample(f"{t} ({i})") for i, t in enumerate(TEXTS * 2)]


def _text_config(tmp_path: Path, **overrides: object) -> EvalConfig:
    corpus = write_jsonl(tmp_path / "text.jsonl", TEXTS * 3)
    return EvalConfig(text=str(corpus), pairs=None, max_length=24, stride=10, show_progress=False, **overrides)


def _guide_perplexity(model: torch.nn.Module, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """The transformers perplexity guide's loop with the model's own (mean) loss, weighted by the
    number of targets it really scored (the guide subtracts one per window, which is exact only
    for the first window)."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + max_length, ids.numel())
        trg_len = end - prev_end
        input_ids = ids[begin:end][None]
        target = input_ids.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids=input_ids, labels=target).loss
        valid = int((target[:, 1:] != -100).sum())  # the loss shifts labels: position 0 is never a target
        nll_sum += float(loss) * valid
        n_tokens += valid
        prev_end = end
        if end == ids.numel():
            break
    return math.exp(nll_sum / n_tokens)


def test_windows_score_every_token_once() -> None:
    for n, length, stride in ((50, 16, 5), (16, 16, 16), (7, 16, 4), (100, 32, 31)):
        scored = [t for _, end, first in windows(n, length, stride) for t in range(first, end)]
        assert scored == list(range(1, n))
        assert all(end - begin <= length for begin, end, _ in windows(n, length, stride))
    # without overlap a window's first token has no context inside it and is skipped, as in the guide
    scored = [t for _, end, first in windows(100, 32, 32) for t in range(first, end)]
    assert scored == [t for t in range(1, 100) if t % 32]


def test_perplexity_equals_transformers_loss_and_self_retention_is_one(family_dirs: dict, tmp_path: Path) -> None:
    a, b = load_model(family_dirs["llama"]), load_model(family_dirs["llama"])
    config = _text_config(tmp_path)
    result = evaluate(a, b, config)
    ppl = result.value("text", "perplexity")
    ids = a.tokenizer("\n\n".join(TEXTS * 3), return_tensors="pt")["input_ids"][0]
    assert ppl.pruned == pytest.approx(_guide_perplexity(a.model, ids, 24, 10), rel=1e-5)
    assert ppl.n == ids.numel() - 1 and ppl.original == ppl.pruned and ppl.retention == 1.0
    assert result.value("text", "kl(original||pruned)").pruned == pytest.approx(0.0, abs=1e-9)
    assert result.value("text", "top1_agreement").pruned == 1.0


def test_pruning_costs_perplexity_and_agreement(family_dirs: dict, tmp_path: Path) -> None:
    original, pruned = load_model(family_dirs["llama"]), load_model(family_dirs["llama"])
    prune_(pruned, PruneConfig(layers=[1], init="none", held_out=0, show_progress=False), SAMPLES)
    result = evaluate(pruned, original, _text_config(tmp_path))
    assert result.value("text", "kl(original||pruned)").pruned > 1e-4
    assert 0.0 <= result.value("text", "top1_agreement").pruned <= 1.0
    ppl = result.value("text", "perplexity")
    assert ppl.retention == pytest.approx(ppl.original / ppl.pruned)


def test_caption_loss_is_on_caption_tokens_only(family_dirs: dict, image_paths: list[str], tmp_path: Path) -> None:
    loaded = load_model(family_dirs["llava"])
    caption = "a plot of a curve with labelled axes"
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"caption": caption, "images": [image_paths[0]]}) + "\n")
    config = EvalConfig(text=None, pairs=None, captions=str(captions), show_progress=False)
    ppl = evaluate(loaded, None, config).value("captions", "perplexity")
    inputs, start = caption_inputs(loaded.processor, Caption(caption, [image_paths[0]], "x"))
    labels = inputs["input_ids"].clone()
    labels[:, :start] = -100  # transformers' own loss over the caption tokens only
    with torch.no_grad():
        loss = loaded.model(**inputs, labels=labels).loss
    assert ppl.pruned == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert ppl.n == inputs["input_ids"].shape[1] - start == len(loaded.tokenizer(caption, add_special_tokens=False)[0])


def test_retrieval_matches_sentence_transformers_and_scipy(minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    pairs = read_pairs("embedded")[:40]
    distractors = [d for _, d in read_pairs("embedded")[40:50]]  # documents without a query: negatives
    file = tmp_path / "pairs.jsonl"
    lines = [{"query": q, "document": d} for q, d in pairs[:20]] + [{"document": d} for d in distractors]
    lines += [{"query": q, "document": d} for q, d in pairs[20:]]
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    a, b = load_model(minilm_dir), load_model(minilm_dir)
    result = evaluate(a, b, EvalConfig(text=None, pairs=str(file), show_progress=False))
    st = SentenceTransformer(str(minilm_dir), device="cpu")
    q = st.encode([p[0] for p in pairs], normalize_embeddings=True)
    d = st.encode([p[1] for p in pairs] + distractors, normalize_embeddings=True)
    scores = q @ d.T
    ranks = np.array([scipy.stats.rankdata(-row, method="average")[i] for i, row in enumerate(scores)])
    assert result.value("retrieval", "mrr").pruned == pytest.approx(float(np.mean(1 / ranks)), rel=1e-4)
    assert result.value("retrieval", "recall@10").pruned == pytest.approx(float(np.mean(ranks <= 10)))
    assert result.value("retrieval", "mrr").retention == 1.0 and result.value("retrieval", "mrr").n == 40
    assert result.value("retrieval", "embedding_cosine").pruned == pytest.approx(1.0, abs=1e-6)


def test_realistic_ranks_split_ties() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1], [0.9, 0.2, 0.2, 0.2]], dtype=torch.float64)
    assert realistic_ranks(scores, torch.tensor([0, 2])).tolist() == [2.0, 3.0]


def _local_task(tmp_path: Path) -> Path:
    words = ["red apple", "blue sky", "green grass", "dark night", "warm sun", "cold snow"]
    rows = [
        {"question": f"Question {i}: {TEXTS[i % 4]}", "choices": [words[i % 6], words[(i + 2) % 6]], "answer": i % 2}
        for i in range(10)
    ]
    write = tmp_path / "tasks"
    write.mkdir()
    (write / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (write / "tiny_mc.yaml").write_text(
        "task: pc_tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {write / 'data.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: choices\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n"
    )
    return write


def _by_hand_accuracy(loaded, task_dir: Path) -> float:
    """lm-eval's multiple-choice rule by hand: argmax over choices of log P(" " + choice | question)."""
    tok = loaded.tokenizer
    correct = 0
    rows = [json.loads(line) for line in (task_dir / "data.jsonl").read_text().splitlines()]
    for row in rows:
        lls = []
        for choice in row["choices"]:
            context = tok(row["question"], add_special_tokens=False)["input_ids"]
            whole = tok(row["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(whole)[None]
            with torch.no_grad():
                logp = torch.log_softmax(loaded.model(input_ids=ids[:, :-1]).logits.double(), -1)[0]
            lls.append(sum(float(logp[p - 1, whole[p]]) for p in range(len(context), len(whole))))
        correct += int(np.argmax(lls) == row["answer"])
    return correct / len(rows)


def test_lm_eval_on_a_local_task(family_dirs: dict, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    task_dir = _local_task(tmp_path)
    original, pruned = load_model(family_dirs["llama"]), load_model(family_dirs["llama"])
    prune_(pruned, PruneConfig(layers=[0], init="none", held_out=0, show_progress=False), SAMPLES)
    config = EvalConfig(text=None, pairs=None, tasks=("pc_tiny_mc",), include_path=str(task_dir), show_progress=False)
    acc = evaluate(pruned, original, config).value("pc_tiny_mc", "acc")
    assert acc.n == 10
    assert acc.original == pytest.approx(_by_hand_accuracy(original, task_dir))
    assert acc.pruned == pytest.approx(_by_hand_accuracy(pruned, task_dir))
    assert acc.retention == pytest.approx(acc.pruned / acc.original)
    # lm-eval's task index (every task YAML it ships) is built once per include path, not per model
    from prune_compensate.eval.harness import check_tasks

    assert check_tasks(["pc_tiny_mc"], str(task_dir)) is check_tasks(["pc_tiny_mc"], str(task_dir))


def test_pc_eval_cli_uses_the_recorded_base(family_dirs: dict, tmp_path: Path) -> None:
    loaded = load_model(family_dirs["llama"])
    result = prune_(loaded, PruneConfig(layers=[1], held_out=0, show_progress=False), SAMPLES)
    manifest = result.to_manifest() | {"base": loaded.origin.to_manifest()}
    out = save_pruned(loaded.model, loaded.processor, tmp_path / "pruned", manifest)
    corpus = write_jsonl(tmp_path / "t.jsonl", TEXTS)
    args = ["eval", str(out), "--text", str(corpus), "--max-length", "16", "--stride", "8", "--quiet"]
    cli = runner.invoke(app, [*args, "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")])
    assert cli.exit_code == 0, cli.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["against"] == str(Path(family_dirs["llama"]).resolve()) and data["schema"] == 1
    assert {m["metric"] for m in data["metrics"]} == {"perplexity", "kl(original||pruned)", "top1_agreement"}
    assert (tmp_path / "e.png").stat().st_size > 0
    assert "needs an original" in cli_error([*args, "--alone", "--plot", str(tmp_path / "x.png")])


def test_eval_refuses_the_calibration_file(family_dirs: dict, tmp_path: Path) -> None:
    calib = write_jsonl(tmp_path / "calib.jsonl", TEXTS * 2)
    out = tmp_path / "p"
    args = ["prune", str(family_dirs["llama"]), "--k", "1", "--calib", str(calib), "--out", str(out), "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    assert "is the calibration data" in cli_error(["eval", str(out), "--text", str(calib), "--quiet"])


def test_bad_eval_options_fail_before_scoring(family_dirs: dict, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    llama = str(family_dirs["llama"])
    assert "--stride 64 is above --max-length 32" in cli_error(
        ["eval", llama, "--max-length", "32", "--stride", "64", "--quiet"]
    )
    original, pruned = load_model(family_dirs["llama"]), load_model(family_dirs["llama"])

    def no_forward(*_: object) -> None:
        raise AssertionError("a forward pass ran before the task names were checked")

    pruned.model.register_forward_pre_hook(no_forward)
    with pytest.raises(PCError, match="lm-eval knows no task 'no_such_task'"):
        evaluate(pruned, original, _text_config(tmp_path, tasks=("no_such_task",)))


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch, family_dirs: dict) -> None:
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name: str, *args: object, **kwargs: object):
        if name == "lm_eval" or name.startswith("lm_eval."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    msg = cli_error(["eval", str(family_dirs["llama"]), "--text", "none", "--tasks", "piqa", "--quiet"])
    assert "lm-eval is not installed" in msg and "prune-compensate[eval]" in msg


def test_prune_eval_writes_quality_into_the_manifest(family_dirs: dict, tmp_path: Path) -> None:
    out = tmp_path / "p"
    args = ["prune", str(family_dirs["llama"]), "--k", "1", "--n-samples", "6", "--out", str(out), "--eval", "--quiet"]
    result = runner.invoke(app, [*args, "--eval-max-examples", "2"])
    assert result.exit_code == 0, result.output
    assert "What pruning cost" in result.output
    quality = json.loads((out / "prune_manifest.json").read_text())["eval"]
    rows = {m["metric"]: m for m in quality["metrics"]}
    assert rows["perplexity"]["original"] > 0 and rows["perplexity"]["retention"] > 0
    assert quality["data"]["text"]["source"] == "embedded"
    # the quick look: exactly the first 2 held-out texts, scored as `pc eval --max-examples 2` scores them
    alone = evaluate(
        load_pruned(out), load_model(family_dirs["llama"]), EvalConfig(max_examples=2, show_progress=False)
    )
    perplexity = next(m for m in alone.metrics if m.metric == "perplexity")
    assert (perplexity.pruned, perplexity.n) == (
        pytest.approx(rows["perplexity"]["pruned"], rel=1e-5),
        rows["perplexity"]["n"],
    )
    assert "--eval is not" in cli_error([*args[:-2], "--eval-max-examples", "8"])
    assert "at least 1" in cli_error([*args[:-2], "--eval", "--eval-max-examples", "0"])


def test_stride_defaults_to_half_the_window() -> None:
    """--max-length alone never trips the stride check (its default was a fixed 256)."""
    assert EvalConfig(max_length=128).stride == 64 and EvalConfig().stride == 256
    with pytest.raises(PCError, match="--stride 200 is above --max-length 128"):
        EvalConfig(max_length=128, stride=200)
