"""``pc data ...``: dataset commands, registered with ``pc`` through the
``prune_compensate.commands`` entry-point group (the core never imports recipes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from prune_compensate import PCError, fail

data_app = typer.Typer(no_args_is_help=True, help="Knowledge-graph datasets for the MKGC recipes.")
console = Console()


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        "--shared-root",
        help="Data root searched first (then $PC_DATA_DIR, a shared/data folder beside the checkout, "
        "~/.cache/prune_compensate/data).",
    ),
]


def load_any(spec: str, data_dir: Path | None = None):  # noqa: ANN201 - KGDataset
    """A dataset by name, pykeen graph or folder (``staged.resolve_dataset``)."""
    from .staged import resolve_dataset

    return resolve_dataset(spec, data_dir)[0]


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
        if split == "test" and summary.get("test_also_in_valid"):
            notes.append(f"{summary['test_also_in_valid']:,} also in valid")
        table.add_row(f"{split} triples", f"{n:,}" + (f" ({'; '.join(notes)})" if notes else ""))
    for category, n in summary["relation_categories"].items():
        test_n = summary["test_triples_by_category"].get(category, 0)
        table.add_row(f"relations {category}", f"{n} ({test_n:,} test triples)")
    for name, n in summary["modalities"].items():
        table.add_row(name.replace("_", " "), f"{n:,}")
    return table


@data_app.command("info")
def info(
    data: Annotated[str, typer.Argument(help="Dataset folder, name (FB15k-237, DB15K, …) or nations/umls.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary JSON here.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Counts, relation categories (1-1, 1-N, N-1, N-N) and modality coverage of a dataset."""
    try:
        summary = load_any(data, data_dir).summary()
    except PCError as err:
        fail(err)
    console.print(summary_table(summary))
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary JSON written to {json_path}")


@data_app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="DB15K, MKG-W, MKG-Y, text, inductive, or inductive/<split>.")],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where to put it (default: $PC_DATA_DIR or the user cache).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Fetch a dataset PyKEEN does not distribute from its public source, checksum-verified."""
    from .download import download
    from .staged import download_root

    root = download_root(data_dir)
    try:
        written = download(name, root, show_progress=not quiet)
    except PCError as err:
        fail(err)
    console.print(f"{name}: {len(written)} files written under {root} (others were already there and verified)")
