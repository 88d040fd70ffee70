"""``pc run tofu --config FILE [key=value ...]``: train / pre-train, zero-shot, fine-tune, metrics."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from prune_compensate import PCError

from ..mkgc.evaluate import check_baselines, committed_baselines


def tofu(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. train.max_minutes=10 ablation.no_se=true")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="a YAML file, or the name of a shipped config (e.g. tofu_umls)"),
    ] = None,
    baselines: Annotated[
        Path | None,
        typer.Option(
            "--baselines",
            help="a folder of baseline results (<model>_<dataset>.json) to show beside the run, "
            "e.g. benchmarks/tofu/results in a checkout",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """TOFU: token-based MMKG foundation model (train, zero-shot on unseen graphs, fine-tune)."""
    from prune_compensate import fail

    from .config import load_config
    from .run import print_results, run_tofu

    try:
        check_baselines(baselines)
        cfg = load_config(config, overrides or [])
        documents = run_tofu(cfg, show_progress=not quiet, command=shlex.join(["pc", *sys.argv[1:]]))
    except PCError as err:
        fail(err)
    rows = {}
    for doc in documents:
        rows.update(committed_baselines(doc["dataset"], baselines))
    print_results(documents, rows)
    typer.echo(f"metrics: {Path(cfg.out) / 'metrics.json'}  checkpoint: {Path(cfg.out) / 'checkpoint'}")
