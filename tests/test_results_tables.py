"""The results tables in the docs are what tools/results_table.py prints from the committed files,
and the README stays a user's document (short, no paths outside the repository)."""

from __future__ import annotations

from pathlib import Path

from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_tool("results_table")


def test_generated_tables_match_the_result_files() -> None:
    tool = _tool()
    for doc in tool.DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "<!-- results:core -->" in text, doc
        assert tool.rewrite(text) == text, f"{doc.name} is stale: run python tools/results_table.py --write"


def test_core_table_is_computed_from_the_files() -> None:
    """One cell recomputed by hand: lstsq's error over none's at K = 3."""
    import json

    error = json.loads((ROOT / "benchmarks" / "results" / "prune_error.json").read_text())["minilm"]["downstream"]
    ratio = error["lstsq"]["relative"] / error["none"]["relative"]
    row = next(line for line in _tool().core_block() if line.startswith("| lstsq |"))
    assert f"| {ratio:.3f} |" in row


def test_readme_is_short_and_self_contained() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for phrase in ("../shared", "this machine", "this session"):
        assert phrase not in text, phrase
