"""The family table cannot rot: it lists every family the installed transformers registers, the
markdown is what the tool renders from the committed run, and the survey itself works."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_tool

from prune_compensate.testing.survey import registered_families, shrink_config, survey_family

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_tool("family_table")


def test_table_lists_every_registered_family() -> None:
    data = json.loads((ROOT / "benchmarks" / "results" / "families.json").read_text())
    listed = {row["model_type"] for row in data["rows"]}
    missing = sorted(set(registered_families()) - listed)
    assert not missing, f"transformers registers families the table lacks: {missing}; run tools/family_table.py"
    assert {row["status"] for row in data["rows"]} <= {"supported", "refused", "error", "not built"}
    for row in data["rows"]:
        assert row["status"] == "supported" or row["reason"], row["model_type"]


def test_markdown_is_rendered_from_the_results() -> None:
    tool = _tool()
    data = json.loads(tool.RESULTS.read_text())
    assert tool.MARKDOWN.read_text() == tool.render(data), "run tools/family_table.py --markdown"


def test_shrink_config_reaches_sub_configs() -> None:
    from transformers import AutoConfig

    config = shrink_config(AutoConfig.for_model("llava"))
    assert config.text_config.hidden_size == 64 and config.vision_config.num_hidden_layers == 2


def test_survey_runs_a_generic_and_a_hand_built_family(image_paths: list[str]) -> None:
    generic = survey_family("vipllava", "VipLlavaForConditionalGeneration", image_paths[:1])
    assert (generic.status, generic.path, generic.decoder) == ("supported", "text", "model.language_model.layers")
    hand = survey_family("llava", "LlavaForConditionalGeneration", image_paths[:1])
    assert (hand.status, hand.path) == ("supported", "images")
