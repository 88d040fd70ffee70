"""``pc run elmm --config FILE [key=value ...]`` (registered through the ``prune_compensate.commands``
entry-point group, so the core CLI never imports a recipe)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from prune_compensate import PCError

from ..mkgc.evaluate import check_baselines, committed_baselines


def elmm(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. train.lr=1e-3 prune.k=3")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="a YAML file, or the name of a shipped config (e.g. elmm_minilm_umls)"),
    ] = None,
    baselines: Annotated[
        Path | None,
        typer.Option(
            "--baselines",
            help="a folder of baseline results (<model>_<dataset>.json) to show beside the run, "
            "e.g. benchmarks/elmm/results in a checkout",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Prune the backbone with the core, train MVTC + LoRA + KGC head, report filtered metrics."""
    from prune_compensate import fail

    from .config import load_config
    from .run import print_results, run_elmm

    try:
        check_baselines(baselines)
        cfg = load_config(config, overrides or [])
        document = run_elmm(cfg, show_progress=not quiet, command=shlex.join(["pc", *sys.argv[1:]]))
    except PCError as err:
        fail(err)
    print_results(document, committed_baselines(document["dataset"], baselines))
    timing = document.get("timing") or {}
    if "speedup" in timing:
        typer.echo(
            f"inference: {timing['pruned_s_per_query'] * 1e3:.2f} ms/query pruned vs "
            f"{timing['unpruned_s_per_query'] * 1e3:.2f} ms unpruned ({timing['speedup']:.2f}×)"
        )
    typer.echo(f"metrics: {Path(cfg.out) / 'metrics.json'}  checkpoint: {document['checkpoint']}")
