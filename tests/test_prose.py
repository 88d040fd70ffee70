"""The embedded prose for language models: what ships, how the tool cuts it, and who gets it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_tool

from pc_testkit.tiny_models import build_llama
from prune_compensate import CalibrationConfig, load_model, read_samples
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.forward import calibration_for
from prune_compensate.calibration.sources import DATA, EMBEDDED_PROSE, EMBEDDED_TRIPLES, for_model
from prune_compensate.eval.data import read_texts

BENCH_DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "core" / "data"


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_prose_parts_are_disjoint_articles() -> None:
    """No calibration sample occurs in an evaluation or validation article, and no article is in
    two parts (plain substring and title checks, independent of the tool)."""
    calibration = _texts(DATA / "default_calibration_prose.jsonl")
    evaluation = _texts(DATA / "default_eval_prose.jsonl")
    validation = _texts(BENCH_DATA / "wikitext2_valid_articles.jsonl")
    assert (len(calibration), len(evaluation), len(validation)) == (1257, 16, 15)
    assert max(len(t.split()) for t in calibration) <= 150
    held = evaluation + validation
    assert not [s for s in calibration if any(s in doc for doc in held)]
    titles = [doc.split("\n", 1)[0] for doc in held]
    assert all(t.startswith(" = ") for t in titles) and len(set(titles)) == len(titles)


def test_the_tool_cuts_by_article_and_sentence() -> None:
    tool = load_tool("make_default_prose")
    long = " . ".join(f"sentence {i} has exactly five words" for i in range(40)) + " ."
    body = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen"
    raw = "\r\n".join(
        [" = A = ", f" {body} alpha beta gamma", " = B = ", f" {body} delta x y z", " = C = ", f" {long}"]
        + [" = D = ", f" {body} omega a b c", " = E = ", " short line", " = F = ", f" {body} f g h"]
    )
    calibration, evaluation, validation = tool.split_prose(raw)
    assert evaluation == [" = B = \n" + f" {body} delta x y z", " = F = \n" + f" {body} f g h"]
    assert validation == [" = D = \n" + f" {body} omega a b c"]
    assert calibration[0] == f"{body} alpha beta gamma"  # article A; E's only line is too short
    chunks = calibration[1:]
    assert len(chunks) > 1 and all(len(c.split()) <= 150 for c in chunks)
    assert " ".join(chunks) == long.strip()  # cut at sentence ends, nothing lost


def test_embedded_picks_prose_for_a_token_predictor_and_triples_for_an_encoder(tmp_path: Path) -> None:
    prose = set(_texts(DATA / "default_calibration_prose.jsonl"))
    config = CalibrationConfig(n_samples=6)
    triples = read_samples(config)
    assert not prose & {s.text for s in triples}
    as_lm = for_model(triples, config, has_images=False, predicts_tokens=True)
    assert {s.text for s in as_lm} <= prose and len(as_lm) == 6
    assert for_model(triples, config, has_images=False, predicts_tokens=False) is triples
    named = CalibrationConfig(EMBEDDED_TRIPLES, n_samples=6)
    assert for_model(read_samples(named), named, has_images=False, predicts_tokens=True)[0].text not in prose
    assert {s.text for s in read_samples(CalibrationConfig(EMBEDDED_PROSE, n_samples=6))} <= prose
    llama = load_model(build_llama(tmp_path / "llama"))  # the model's own head decides
    chosen = calibration_for(llama.model, BatchEncoder(llama.processor, 32), config, triples)
    assert {s.text for s in chosen} <= prose


def test_embedded_evaluation_text_is_the_held_out_prose() -> None:
    assert read_texts("embedded") == _texts(DATA / "default_eval_prose.jsonl")
    assert len(read_texts("embedded:triples")) == 500


@pytest.mark.parametrize("name", ["default_calibration_prose.jsonl", "default_eval_prose.jsonl"])
def test_prose_ships_with_its_licence(name: str) -> None:
    licence = (DATA / "PROSE_LICENSE.md").read_text(encoding="utf-8")
    assert name in licence and "Attribution-ShareAlike 3.0" in licence
