"""``pc run <recipe>``: the recipes' commands, registered on the core CLI through the
``prune_compensate.commands`` entry-point group (the core never imports a recipe)."""

from __future__ import annotations

import typer

from .elmm.cli import elmm
from .tofu.cli import tofu

run_app = typer.Typer(help="Run an MKGC recipe end to end (data → metrics → checkpoint).", no_args_is_help=True)
run_app.command("elmm")(elmm)
run_app.command("tofu")(tofu)
