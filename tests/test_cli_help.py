"""The CLI reads at 80 columns: ``--help`` cuts no option name or text, the options a user needs
first come first, and the profile table keeps one line per layer."""

from __future__ import annotations

import io
import re

import pytest
import typer
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from prune_compensate.cli import app
from prune_compensate.pruning.profile import LayerProfile, ProfileResult
from prune_compensate.report import profile_table

FIRST = {
    "prune": ["--out", "--k", "--init", "--calib", "--eval"],
    "profile": ["--calib", "--k", "--n-samples", "--json", "--plot"],
    "eval": ["--against", "--text", "--pairs", "--tasks", "--json"],
}


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def _option_names(command: str) -> list[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return [name for param in click_command.params for name in (*param.opts, *param.secondary_opts)]


@pytest.mark.parametrize("command", sorted(FIRST))
def test_help_cuts_nothing_at_80_columns(command: str) -> None:
    text = _help(command)
    assert "…" not in text
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    for name in _option_names(command):
        if name.startswith("--"):
            assert any(f" {name} " in f" {line} " for line in lines), f"{name} is not shown whole"


@pytest.mark.parametrize("command", sorted(FIRST))
def test_first_panel_holds_the_first_options(command: str) -> None:
    """The default panel comes first in ``--help``; it holds the five options a user reaches for
    first (and --help), the rest sit in named panels below it."""
    text = _help(command)
    first = text.split("╭─ Options")[1].split("╰")[0]
    names = [m.group(1) for line in first.splitlines() if (m := re.match(r"│ [ *]{0,3}(--[a-z-]+) ", line))]
    assert [name for name in names if name != "--help"] == FIRST[command]


def test_profile_table_keeps_one_line_per_layer_at_80_columns() -> None:
    layers = [LayerProfile(i, 0.987654 - i / 1000, 0.012345, 0.4321, 4096, 0.912345, 0.054321) for i in range(30)]
    result = ProfileResult(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        model_class="LlamaForCausalLM",
        n_samples=1000,
        n_tokens=123456,
        layers=layers,
        ranking=list(range(30)),
        k=15,
        decoder={},
        calibration={},
    )
    out = io.StringIO()
    Console(file=out, width=80).print(profile_table(result))
    lines = out.getvalue().splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    rows = [line for line in lines if "0.9123 ± 0.0543" in line]
    assert len(rows) == 30  # every layer on one line, both cosines and the time share beside it
    assert all("43.2%" in row for row in rows)
    assert sum("✔" in row for row in rows) == 15
