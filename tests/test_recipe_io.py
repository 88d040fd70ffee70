"""The recipes write folders through the core's one atomic writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from prune_compensate import PCError
from prune_compensate_recipes.io import atomic_dir_write, recover


def _writer(text: str):
    def write(tmp: Path) -> None:
        (tmp / "state.json").write_text(text)

    return write


def test_replaces_its_own_folder_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    target = tmp_path / "state"
    atomic_dir_write(target, _writer("1"), owned="state.json")
    atomic_dir_write(target, _writer("2"), owned="state.json")
    assert (target / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no partial or old folder left

    def failing(tmp: Path) -> None:
        (tmp / "state.json").write_text("3")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_dir_write(target, failing, owned="state.json")
    assert (target / "state.json").read_text() == "2"
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter.tex").write_text("keep")
    with pytest.raises(PCError, match="not a folder written by prune_compensate"):
        atomic_dir_write(foreign, _writer("x"), owned="state.json")
    assert (foreign / "chapter.tex").read_text() == "keep"


def test_recover_puts_back_a_swap_cut_between_its_renames(tmp_path: Path) -> None:
    old = tmp_path / ".state.old-abc"
    old.mkdir()
    (old / "state.json").write_text("saved")
    recover(tmp_path / "state", "state.json")
    assert (tmp_path / "state" / "state.json").read_text() == "saved" and not old.exists()
