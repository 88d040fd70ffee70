"""The results tables in the docs are what tools/results_table.py prints from the committed files,
and the README stays a user's document (short, no paths outside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_tool("results_table")


def test_generated_tables_match_the_result_files() -> None:
    tool = _tool()
    for doc in tool.DOCS:
        text = doc.read_text(encoding="utf-8")
        names = (
            ("decodersummary", "engine")
            if doc.parent == ROOT
            else ("decoder", "ranking", "core", "exportbias", "engineequal", "engine")
        )
        for name in names:
            assert f"<!-- results:{name} -->" in text, (doc, name)
        assert tool.rewrite(text) == text, f"{doc.name} is stale: run python tools/results_table.py --write"


def test_core_table_is_computed_from_the_files() -> None:
    """One cell recomputed by hand: lstsq's error over none's at K = 3."""
    import json

    error = json.loads((ROOT / "benchmarks" / "core" / "results" / "prune_error.json").read_text())["minilm"][
        "downstream"
    ]
    ratio = error["lstsq"]["relative"] / error["none"]["relative"]
    row = next(line for line in _tool().core_block() if line.startswith("| lstsq |"))
    assert f"| {ratio:.4f} |" in row


def test_core_table_averages_the_seeds_of_one_heal_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two seeds of one run make one row of mean ± half-range, computed here by hand, never the
    luckier seed; a run with other settings, or with more long samples (``--extra-triples``), stays apart."""
    import json
    import shlex

    from benchmarks.common import settings_of
    from benchmarks.core.heal_minilm import options

    tool = _tool()
    errors = {init: {"relative": value} for init, value in (("none", 0.5), ("mean", 0.3), ("lstsq", 0.1))}
    (tmp_path / "prune_error.json").write_text(json.dumps({"minilm": {"downstream": errors}}))
    runs = [{"k": 3, "init": init, "mrr_retention": 0.9} for init in errors]
    (tmp_path / "minilm_retrieval_sweep.json").write_text(json.dumps({"runs": runs}))
    command = "python -m benchmarks.core.heal_minilm --data-dir DIR --k 3 --calib mix --task-texts 750"
    for name, extra, (relative, retention) in (
        ("a", " --seed 0 --tag a", (0.070, 0.950)),
        ("b", " --seed 1 --tag b", (0.080, 0.970)),
        ("c", " --lr 5e-1", (0.060, 0.5)),  # other settings: its own run, the lowest error
        ("d", " --extra-triples 1000", (0.010, 0.99)),  # another mix: never in the 750 row
    ):
        row = {
            "start": "zero",
            "objective": "hidden",
            "layers": [1, 2, 3],
            "relative": {"none": 0.5, "heal": relative},
            "heal_over_none": relative / 0.5,
            "mrr_retention": retention,
            "heal": {"steps_run": 10, "best_step": 10},
        }
        settings = settings_of(options().parse_args(shlex.split(command + extra)[3:]))  # as the script records
        document = {"command": command + extra, "settings": settings, "calibration": "mix", "rows": [row]}
        (tmp_path / f"heal_minilm_{name}.json").write_text(json.dumps(document))
    monkeypatch.setattr(tool, "CORE", tmp_path)
    (row,) = [line for line in tool.core_block() if "mix of 750" in line]
    assert "lr 5e-1" in row and "| 0.060 | 0.1200 | 0.500 |" in row  # the lowest mean error wins
    (tmp_path / "heal_minilm_c.json").unlink()
    (row,) = [line for line in tool.core_block() if "mix of 750" in line]
    assert "2 seeds" in row and "| 0.075 ± 0.005 | 0.1500 ± 0.0100 | 0.960 ± 0.010 |" in row


def test_decoder_tables_are_computed_from_the_files() -> None:
    """One cell of each decoder table recomputed by hand from its result file: K = 8, lstsq."""
    import json

    tool = _tool()
    rows = [
        row
        for path in sorted((ROOT / "benchmarks" / "core" / "results").glob("decoder_sweep*.json"))
        for row in json.loads(path.read_text())["rows"]
    ]
    (row,) = [r for r in rows if (r["unit"], r["k"], r["init"]) == ("attention", 8, "lstsq")]
    held = row["held_out"]
    cell = f"{held['kl']:.3f} · {held['top1_agreement']:.3f} · {held['perplexity_retention']:.3f}"
    (line,) = [line for line in tool.decoder_summary_block() if line.startswith("| 8 |")]
    assert line.split(" | ")[3] == cell  # none, mean, then lstsq
    ranking = json.loads((ROOT / "benchmarks" / "core" / "results" / "decoder_ranking.json").read_text())
    for row in ranking["rows"]:
        line = next(
            line
            for line in tool.ranking_block()
            if line.startswith(f"| {row['ranking']} (") and f"| {row['init']} |" in line
        )
        assert f"| {row['valid']['kl']:.3f} | {row['valid']['top1_agreement']:.3f} |" in line
    for path in sorted((ROOT / "benchmarks" / "core" / "results").glob("decoder_heal*.json")):
        for row in json.loads(path.read_text())["rows"]:
            steps = f"{row['heal']['best_step']} / {row['heal']['steps_run']}, " if "heal" in row else "—"
            start = f"| {row['k']} | {row['init']} "  # then "|", or what the heal trained: "(maps, norms) |"
            lines = [line for line in tool.heal_block() if line.startswith(start) and steps in line]
            assert any(f"| {row['valid']['kl']:.3f} | {row['held_out']['kl']:.3f} |" in line for line in lines)


def test_readme_is_short_and_self_contained() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for phrase in ("../shared", "this machine", "this session"):
        assert phrase not in text, phrase


def test_engine_tables_are_computed_from_the_files() -> None:
    """The decode speed-up at 16k and the bias cost, recomputed by hand from the result files."""
    import json

    tool = _tool()
    results = ROOT / "benchmarks" / "core" / "results"
    speed = json.loads((results / "engine_speed.json").read_text())["tokens_per_second_median"]
    ratio = speed["k15-linear"]["decode_at_16384"] / speed["dense"]["decode_at_16384"]
    ceiling = speed["k15-linear"]["decode_at_16384"] / speed["k15-no_op"]["decode_at_16384"]
    (line,) = [line for line in tool.engine_block() if line.startswith("| K = 15, linear maps |")]
    assert line.split(" | ")[5:7] == [f"{ratio:.2f}", f"{ceiling:.2f}"]
    rows = json.loads((results / "export_llamacpp.json").read_text())["rows"]
    (row,) = [r for r in rows if (r["k"], r["variant"]) == (8, "lstsq --no-bias")]
    (line,) = [line for line in tool.export_bias_block() if line.startswith("| 8 | lstsq --no-bias |")]
    assert f"| {row['held_out']['kl']:.3f} |" in line
