"""``pc data ...``: dataset commands, registered with ``pc`` through the
``prune_compensate.commands`` entry-point group (the core never imports recipes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prune_compensate import PCError

data_app = typer.Typer(no_args_is_help=True, help="Knowledge-graph datasets for the MKGC recipes.")
console = Console()


def load_any(spec: str, shared_root: Path | None = None):  # noqa: ANN201 - KGDataset
    """A folder, a pykeen built-in (nations, kinships, umls), or a staged name (FB15k-237, DB15K…)."""
    from .data import resolve_kg
    from .staged import STAGED, load_staged

    if spec in STAGED and not Path(spec).exists():
        return load_staged(spec, shared_root)
    return resolve_kg(spec)


def summary_table(summary: dict) -> Table:
    table = Table(title=f"{summary['name']} ({summary['source']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("entities", f"{summary['entities']:,}")
    table.add_row("relations", f"{summary['relations']:,}")
    for split, n in summary["splits"].items():
        dupes = summary["duplicates_removed"].get(split, 0)
        notes = [f"{dupes:,} duplicates removed"] if dupes else []
        leaked = summary["also_in_train"].get(split, 0)
        if leaked:
            notes.append(f"{leaked:,} also in train")
        table.add_row(f"{split} triples", f"{n:,}" + (f" ({'; '.join(notes)})" if notes else ""))
    for category, n in summary["relation_categories"].items():
        test_n = summary["test_triples_by_category"].get(category, 0)
        table.add_row(f"relations {category}", f"{n} ({test_n:,} test triples)")
    for name, n in summary["modalities"].items():
        table.add_row(name.replace("_", " "), f"{n:,}")
    return table


@data_app.command("info")
def info(
    data: Annotated[str, typer.Argument(help="Dataset folder, staged name (FB15k-237, DB15K, …) or nations/umls.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary JSON here.")] = None,
    shared_root: Annotated[Path | None, typer.Option(help="Where staged datasets live (../shared/data).")] = None,
) -> None:
    """Counts, relation categories (1-1, 1-N, N-1, N-N) and modality coverage of a dataset."""
    try:
        summary = load_any(data, shared_root).summary()
    except PCError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
    console.print(summary_table(summary))
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary JSON written to {json_path}")
