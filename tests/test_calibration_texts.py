"""The embedded calibration set and the extra long samples a heal benchmark may add (real FB15k-237)."""

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path

import pytest
from conftest import load_tool

from prune_compensate import CalibrationConfig, read_samples
from prune_compensate.calibration.sources import embedded_calibration_path
from prune_compensate_recipes.mkgc.staged import default_shared_root

SHARED = default_shared_root()
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="the staged datasets are not beside this checkout")


def _benchmark(name: str):  # noqa: ANN202 - the module
    return importlib.import_module(f"benchmarks.core.{name}")


def test_the_shipped_calibration_is_what_the_tool_verbalises() -> None:
    """The package's 1,500 samples are the first 1,500 triples of the tool's seeded order, so the
    benchmark's extra samples (drawn further along that order) come from the same distribution."""
    tool = load_tool("make_default_calibration")
    made = [text for _, _, text in itertools.islice(tool.verbalised_triples(SHARED / "FB15k-237"), 1500)]
    shipped = [json.loads(line)["text"] for line in embedded_calibration_path().read_text("utf-8").splitlines()]
    assert made == shipped


def test_extra_triples_name_no_scored_entity_and_repeat_no_embedded_sample(tmp_path: Path) -> None:
    """The extra fitting samples of ``heal_minilm.py --extra-triples`` must leave the scored pairs
    and the held-out samples what they are in every other run: no text names a scored query (checked
    here against the pairs file by plain substring search), none is an embedded sample."""
    heal = _benchmark("heal_minilm")
    samples = read_samples(CalibrationConfig(n_samples=1300))
    pairs = tmp_path / "pairs.jsonl"
    heal.write_pairs(SHARED, "\n".join(s.text for s in samples[:1000]), pairs)
    embedded = {s.text for s in read_samples(CalibrationConfig(n_samples=1500))}
    extra = heal.extra_triples(SHARED, pairs, embedded, 300)
    queries = [q for q in (json.loads(line).get("query") for line in pairs.read_text("utf-8").splitlines()) if q]
    assert len(queries) > 10_000 and len(extra) == len(set(extra)) == 300
    assert not embedded & set(extra)
    assert not [(q, text) for text in extra for q in queries if q in text]
