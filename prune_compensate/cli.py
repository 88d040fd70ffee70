"""``pc``: a thin typer skin over the functions users import.

Recipe commands (``pc data``, ``pc run``) come from the ``prune_compensate.commands`` entry-point
group, so the core never imports ``recipes``.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import PCError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Profile and prune the attention of Hugging Face (V)LMs."
)
console = Console()
err_console = Console(stderr=True)

ModelArg = Annotated[
    str | None, typer.Argument(help="Local model directory or cached hub id; omitted: the embedded MiniLM.")
]
CalibOpt = Annotated[str, typer.Option("--calib", help="JSONL file, datasets directory, or 'embedded'.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (accelerate device map).")]


@app.callback()
def _root() -> None:
    """Profile and prune the attention of Hugging Face (V)LMs; MKGC recipes as plugins."""


def fail(err: PCError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command("profile")
def profile_command(
    model: ModelArg = None,
    calib: CalibOpt = "embedded",
    n_samples: Annotated[int, typer.Option(help="Calibration samples to draw.")] = 1000,
    max_length: Annotated[int, typer.Option(help="Max text tokens per sample.")] = 256,
    batch_size: Annotated[int, typer.Option()] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    text_column: Annotated[str, typer.Option(help="Text column/field name.")] = "text",
    image_column: Annotated[str | None, typer.Option(help="Image column/field name (JSONL default: images).")] = None,
    k: Annotated[int, typer.Option("--k", help="Layers `pc prune --k` would take (clipped to depth).")] = 16,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the profile JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG plot here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Rank attention sub-layers by input/output cosine similarity on calibration data."""
    from .calibration import CalibrationConfig, read_samples
    from .load import load_model
    from .profile import ProfileConfig, profile
    from .report import plot_profile, print_profile

    try:
        if k < 0:
            raise PCError(f"--k must be non-negative, got {k}", "pass --k between 0 and the layer count")
        calibration = CalibrationConfig(
            source=calib,
            n_samples=n_samples,
            max_length=max_length,
            batch_size=batch_size,
            seed=seed,
            text_column=text_column,
            image_column=image_column,
        )
        samples = read_samples(calibration)  # bad data fails before the (slow) model load
        loaded = load_model(model, dtype=dtype, device=device)
        config = ProfileConfig(k=k, calibration=calibration, show_progress=not quiet)
        result = profile(loaded, config, samples)
        print_profile(result, console)
        if json_path is not None:
            result.to_json(json_path)
            console.print(f"profile JSON written to {json_path}")
        if plot is not None:
            plot_profile(result, plot)
            console.print(f"plot written to {plot}")
    except PCError as err:
        fail(err)


def _add_plugins() -> None:
    for entry in entry_points(group="prune_compensate.commands"):
        try:
            sub = entry.load()
        except Exception as err:  # a broken plugin must not break the core CLI
            print(f"warning: pc plugin {entry.name!r} failed to load: {err}", file=sys.stderr)
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=entry.name)
        else:
            app.command(entry.name)(sub)


_add_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
