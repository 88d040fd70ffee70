"""``pc``: a thin typer skin over the functions users import.

Recipe commands (``pc data``, ``pc run``) come from the ``prune_compensate.commands`` entry-point
group (the ``prune-compensate-recipes`` distribution registers them), so the core never imports
a recipe; without it they say which package to install.
"""

from __future__ import annotations

import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .errors import PCError, fail

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Profile and prune the attention of Hugging Face (V)LMs."
)
console = Console()
err_console = Console(stderr=True)

KOpt = Annotated[
    int | None,
    typer.Option(
        "--k",
        help="Attention layers to drop (default: half of those the model has, the paper's ratio, e.g. 16 of 32).",
        show_default=False,
    ),
]
ModelArg = Annotated[
    str | None,
    typer.Argument(help="Local model folder or Hugging Face Hub id (downloaded once); omitted: the embedded MiniLM."),
]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub branch, tag or commit (default: main).")]
TrustOpt = Annotated[bool, typer.Option(help="Run the model repository's own code (only for repos you trust).")]
OfflineOpt = Annotated[bool, typer.Option(help="Never touch the network: use the Hugging Face cache only.")]
AllowBaseOpt = Annotated[
    bool, typer.Option(help="Apply a delta checkpoint's maps even if its base model changed since they were fitted.")
]
CalibOpt = Annotated[str, typer.Option("--calib", help="JSONL file, datasets directory, or 'embedded'.")]
NSamplesOpt = Annotated[int, typer.Option(help="Calibration samples to draw.")]
MaxLengthOpt = Annotated[int, typer.Option(help="Max text tokens per sample.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Calibration batch size.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the calibration draw.")]
TextColumnOpt = Annotated[str, typer.Option(help="Text column/field name.")]
ImageColumnOpt = Annotated[str | None, typer.Option(help="Image column/field name (JSONL default: images).")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, or auto (accelerate device map).")]
DecoderOpt = Annotated[
    str | None,
    typer.Option(help="Dotted path of the block list to prune (skips the search), e.g. model.language_model.layers."),
]
StackOpt = Annotated[
    str,
    typer.Option(
        help="Encoder–decoders: prune the decoder (default), the encoder, or both (pc prune: the K most "
        "redundant units over the two stacks, the encoder fitted first)."
    ),
]
UnitOpt = Annotated[
    str,
    typer.Option(
        help="What to rank and drop: attention sub-layers (the paper) or whole blocks (residual cosine across "
        "the block, replaced by x + linear map)."
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"prune_compensate {__version__}", highlight=False)
        raise typer.Exit()


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Profile and prune the attention of Hugging Face (V)LMs; MKGC recipes as plugins."""
    warnings.showwarning = _show_warning  # one readable line per warning, like errors


def _write_outputs(result: Any, what: str, json_path: Path | None, plot: Path | None, draw: Any) -> None:
    """Write ``--json`` and ``--plot`` of a command's result (paths checked before the work by
    ``_check_outputs``) and say where they went."""
    if json_path is not None:
        result.to_json(json_path)
        console.print(f"{what} JSON written to {escape(str(json_path))}", highlight=False)
    if plot is not None:
        draw(result, plot)
        console.print(f"plot written to {escape(str(plot))}", highlight=False)


@app.command("profile")
def profile_command(
    model: ModelArg = None,
    calib: CalibOpt = "embedded",
    n_samples: NSamplesOpt = 1000,
    max_length: MaxLengthOpt = 256,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    text_column: TextColumnOpt = "text",
    image_column: ImageColumnOpt = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k", help="Mark the layers `pc prune --k K` would take (default: half of them).", show_default=False
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the profile JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG plot here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
    decoder: DecoderOpt = None,
    stack: StackOpt = "decoder",
    unit: UnitOpt = "attention",
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Rank attention sub-layers (or whole blocks) by input/output cosine similarity on calibration data."""
    from .calibration.samples import EMBEDDED, CalibrationConfig, read_samples
    from .pruning.profile import ProfileConfig, profile
    from .report import plot_profile, print_profile

    try:
        if k is not None and k < 0:
            raise PCError(f"--k must be non-negative, got {k}", "pass --k between 0 and the layer count")
        _check_outputs(json_path, plot)  # before the (slow) profile, not after it
        calibration = CalibrationConfig(calib, n_samples, max_length, batch_size, seed, text_column, image_column)
        # bad data fails before the (slow) model load; the embedded default is read by `profile`,
        # which adds the embedded image samples for a model that takes images
        samples = None if calib == EMBEDDED else read_samples(calibration)
        config = ProfileConfig(
            k=k, calibration=calibration, show_progress=not quiet, decoder=decoder, stack=stack, unit=unit
        )
        loaded = _load(
            model,
            allow_base_change,
            dtype=dtype,
            device=device,
            revision=revision,
            trust_remote_code=trust_remote_code,
            offline=offline,
        )
        result = profile(loaded, config, samples)
        print_profile(result, console)
        _write_outputs(result, "profile", json_path, plot, plot_profile)
    except PCError as err:
        fail(err)


@app.command("prune")
def prune_command(
    model: ModelArg = None,
    out: Annotated[
        Path, typer.Option("--out", help="Checkpoint folder to write (must not exist, see --overwrite).")
    ] = ...,
    k: KOpt = None,
    layers: Annotated[str | None, typer.Option(help="Comma-separated layer indices (overrides the ranking).")] = None,
    profile_json: Annotated[Path | None, typer.Option("--profile", help="Reuse a `pc profile --json` ranking.")] = None,
    init: Annotated[str, typer.Option(help="lstsq, mean (paper Thm 1), zero, none.")] = "lstsq",
    order: Annotated[str, typer.Option(help="bottom-up (paper) or independent.")] = "bottom-up",
    target: Annotated[str, typer.Option(help="downstream (ε vs the original model) or local.")] = "downstream",
    ridge: Annotated[float, typer.Option(help="lstsq ridge λ, relative to trace(XᵀX)/D.")] = 1e-4,
    bias: Annotated[bool, typer.Option(help="Affine term in the lstsq fit.")] = True,
    rank: Annotated[int | None, typer.Option(help="Low-rank W (truncated SVD).")] = None,
    held_out: Annotated[float, typer.Option(help="Share of calibration samples kept for the error report.")] = 0.2,
    compare: Annotated[
        str,
        typer.Option(
            help="Inits whose held-out error is reported beside --init: none and zero cost nothing; "
            "mean and lstsq each cost another full fit (a pass over the calibration data per pruned layer)."
        ),
    ] = "none",
    calib: CalibOpt = "embedded",
    n_samples: NSamplesOpt = 1000,
    max_length: MaxLengthOpt = 256,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    text_column: TextColumnOpt = "text",
    image_column: ImageColumnOpt = None,
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace an existing --out, only if it is a pruned checkpoint (swapped in when complete)."),
    ] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    heal_steps: Annotated[
        int, typer.Option(help="Distillation steps that refine the fitted maps against the original (0 = off).")
    ] = 0,
    heal_lr: Annotated[float, typer.Option(help="Heal learning rate (Adam).")] = 3e-4,
    heal_objective: Annotated[
        str, typer.Option(help="auto (kl for LMs, hidden for encoders), kl, embedding, similarity or hidden.")
    ] = "auto",
    heal_norms: Annotated[bool, typer.Option(help="Heal also the norms of the blocks holding a map.")] = False,
    heal_schedule: Annotated[
        str, typer.Option(help="Heal learning rate: constant, or cosine (decayed to zero over --heal-steps).")
    ] = "constant",
    heal_select_pairs: Annotated[
        str | None,
        typer.Option(
            help="Keep the heal step with the best retrieval MRR on these (query, document) pairs (JSONL, as "
            "`pc eval --pairs`; keep them apart from the pairs you report on) instead of the lowest held-out loss."
        ),
    ] = None,
    allow_base_change: AllowBaseOpt = False,
    save: Annotated[
        str,
        typer.Option(
            help="full: the whole pruned model (works offline, standalone); delta: only the replacement maps "
            "plus the base's id and commit (or path and hashes), reloaded on top of the base."
        ),
    ] = "full",
    eval_after: Annotated[
        bool,
        typer.Option(
            "--eval",
            help="Evaluate pruned vs original right after pruning (embedded held-out data, as `pc eval`) "
            "and write the result into the manifest (loads a second copy of the model).",
        ),
    ] = False,
    eval_max_examples: Annotated[
        int | None,
        typer.Option(
            "--eval-max-examples",
            help="With --eval: use at most this many held-out texts and pairs "
            "(a quick look; `pc eval` takes every option).",
        ),
    ] = None,
    decoder: DecoderOpt = None,
    stack: StackOpt = "decoder",
    unit: UnitOpt = "attention",
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Drop the K most redundant attention sub-layers (or blocks), fit their compensation, write a checkpoint."""
    from .calibration.samples import EMBEDDED, CalibrationConfig, read_samples
    from .checkpoint.save import check_out_dir, save_pruned
    from .pruning.config import PruneConfig
    from .pruning.heal import HealConfig
    from .pruning.profile import ProfileResult
    from .pruning.prune import prune_
    from .report import print_prune

    try:
        if save not in ("full", "delta"):
            raise PCError(f"unknown --save {save!r}", "use full or delta")
        if eval_max_examples is not None and not eval_after:
            raise PCError("--eval-max-examples is set but --eval is not", "add --eval, or drop --eval-max-examples")
        if eval_max_examples is not None and eval_max_examples < 1:
            raise PCError(f"--eval-max-examples must be at least 1, got {eval_max_examples}", "pass a positive count")
        if save == "delta" and heal_norms and heal_steps > 0:
            raise PCError(
                "--heal-norms trains norms that a delta checkpoint does not store",
                "use --save full or drop --heal-norms",
            )
        check_out_dir(out.resolve(), overwrite)  # fail before any work
        layer_list = None
        if layers is not None:
            try:
                layer_list = [int(x) for x in layers.split(",") if x.strip()]
            except ValueError as err:
                raise PCError(
                    f"--layers {layers!r} is not a comma-separated list of integers", "e.g. --layers 3,5"
                ) from err
        calibration = CalibrationConfig(calib, n_samples, max_length, batch_size, seed, text_column, image_column)
        config = PruneConfig(
            k=k,
            layers=layer_list,
            init=init,
            order=order,
            target=target,
            ridge=ridge,
            bias=bias,
            rank=rank,
            held_out=held_out,
            compare=tuple(name.strip() for name in compare.split(",") if name.strip()),
            calibration=calibration,
            heal=HealConfig(
                steps=heal_steps,
                lr=heal_lr,
                objective=heal_objective,
                train_norms=heal_norms,
                select_pairs=heal_select_pairs,
                schedule=heal_schedule,
            ),
            show_progress=not quiet,
            profile=ProfileResult.from_json(profile_json) if profile_json else None,
            decoder=decoder,
            stack=stack,
            unit=unit,
        )
        samples = None if calib == EMBEDDED else read_samples(calibration)  # (as in pc profile)
        options = dict(dtype=dtype, device=device, revision=revision, trust_remote_code=trust_remote_code)
        loaded = _load(model, allow_base_change, offline=offline, **options)
        result = prune_(loaded, config, samples)
        print_prune(result, console)
        manifest = result.to_manifest()
        if eval_after:
            from .eval import EvalConfig, evaluate
            from .eval.report import print_eval

            original = _load(model, allow_base_change, offline=True, **options)  # the first load fetched it
            quality = evaluate(loaded, original, EvalConfig(max_examples=eval_max_examples, show_progress=not quiet))
            print_eval(quality, console)
            manifest["eval"] = quality.to_dict()
            del original
        manifest["model"] = loaded.source
        if loaded.origin is not None:
            manifest["base"] = loaded.origin.to_manifest()
        if save == "delta":
            from .checkpoint.delta import save_delta

            if loaded.origin is None:
                raise PCError("the base of this model is unknown", "use --save full")
            save_delta(loaded.model, loaded.processor, out, manifest, loaded.origin, overwrite=overwrite)
        else:
            save_pruned(loaded.model, loaded.processor, out, manifest, overwrite=overwrite, source=loaded.local_dir)
        console.print(
            f"pruned checkpoint written to {escape(str(out))} (reload: prune_compensate.load_pruned)", highlight=False
        )
    except PCError as err:
        fail(err)


def _check_outputs(json_path: Path | None, plot: Path | None) -> None:
    """``--json`` / ``--plot`` must be writable before any work starts."""
    from .output_dir import check_out_file

    for path, flag in ((json_path, "--json"), (plot, "--plot")):
        if path is not None:
            check_out_file(path, flag)


def _load(model: str | None, allow_base_change: bool, **options: Any) -> Any:
    """A delta checkpoint through ``load_pruned`` (base first), anything else through ``load_model``."""
    from .checkpoint.delta import is_delta, load_delta
    from .model.load import load_model

    if model is not None and is_delta(model):
        options.pop("revision", None)
        return load_delta(model, allow_base_change=allow_base_change, **options)
    return load_model(model, **options)


def _base_of(model: str | None) -> tuple[str | None, str | None]:
    """The original a pruned checkpoint was made from (its manifest's base), as (name, revision)."""
    from .checkpoint.format import MANIFEST, read_manifest

    if model is None or not (Path(model) / MANIFEST).is_file():
        return None, None
    manifest = read_manifest(model)
    base = manifest.get("base") or {}
    if base.get("hub_id"):
        return base["hub_id"], base.get("commit") or base.get("revision")
    return base.get("path") or manifest.get("model"), None


@app.command("eval")
def eval_command(
    model: ModelArg = None,
    against: Annotated[
        str | None,
        typer.Option(help="The original to compare with (default: the base recorded in a pruned checkpoint)."),
    ] = None,
    alone: Annotated[bool, typer.Option(help="Evaluate MODEL alone, even if it names a base.")] = False,
    text: Annotated[
        str | None,
        typer.Option(help="LM text: 'embedded', a .txt/.jsonl file, a dataset folder or NAME[:CONFIG] id; 'none'."),
    ] = "embedded",
    pairs: Annotated[
        str | None, typer.Option(help="Encoder retrieval pairs: 'embedded' or a JSONL of query/document; 'none'.")
    ] = "embedded",
    captions: Annotated[str | None, typer.Option(help="VLM image–caption JSONL (caption, images).")] = None,
    tasks: Annotated[str | None, typer.Option(help="lm-eval tasks, comma-separated (needs the eval extra).")] = None,
    include_path: Annotated[str | None, typer.Option(help="Folder of local lm-eval task YAMLs.")] = None,
    limit: Annotated[int | None, typer.Option(help="lm-eval examples per task.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Use at most this many texts / pairs / captions.")] = None,
    max_length: Annotated[int, typer.Option(help="Tokens per window (LMs) or per text (encoders).")] = 512,
    stride: Annotated[
        int | None,
        typer.Option(help="Window stride for perplexity (transformers' guide; default: half of --max-length)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per batch when embedding (encoders).")] = 16,
    text_column: TextColumnOpt = "text",
    split: Annotated[str, typer.Option(help="Split of a datasets id given to --text.")] = "test",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of retention per metric here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """What pruning cost: MODEL (pruned) vs its original on text, image captions, retrieval or lm-eval tasks."""
    from .eval import EvalConfig, evaluate
    from .eval.report import plot_retention, print_eval
    from .eval.run import check_disjoint
    from .model.load import load_model

    try:
        _check_outputs(json_path, plot)
        config = EvalConfig(
            text=None if text == "none" else text,
            pairs=None if pairs == "none" else pairs,
            captions=captions,
            tasks=tuple(t.strip() for t in (tasks or "").split(",") if t.strip()),
            include_path=include_path,
            limit=limit,
            text_column=text_column,
            split=split,
            max_length=max_length,
            stride=stride,
            batch_size=batch_size,
            max_examples=max_examples,
            show_progress=not quiet,
        )
        check_disjoint(model, config)
        base, base_revision = (None, None) if alone else (against, None) if against else _base_of(model)
        if plot is not None and base is None:
            raise PCError("--plot draws retention, which needs an original", "pass --against or drop --plot")
        options = dict(dtype=dtype, device=device, trust_remote_code=trust_remote_code, offline=offline)
        loaded = _load(model, allow_base_change, revision=revision, **options)
        original = None if base is None else load_model(base, revision=base_revision, **options)
        result = evaluate(loaded, original, config)
        print_eval(result, console)
        _write_outputs(result, "eval", json_path, plot, plot_retention)
    except PCError as err:
        fail(err)


RECIPE_COMMANDS = ("run", "data")


def _missing_recipes(name: str) -> Any:
    def command(args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None) -> None:
        fail(
            PCError(
                f"`pc {name}` comes with the MKGC recipes, which are not installed",
                "pip install prune-compensate-recipes (from a checkout: pip install -e recipes)",
            )
        )

    command.__doc__ = f"(needs prune-compensate-recipes) the MKGC recipes' `{name}` commands."
    return command


def _add_plugins() -> None:
    found = set()
    for entry in entry_points(group="prune_compensate.commands"):
        found.add(entry.name)
        try:
            sub = entry.load()
        except Exception as err:  # a broken plugin must not break the core CLI
            print(f"warning: pc plugin {entry.name!r} failed to load: {err}", file=sys.stderr)
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=entry.name)
        else:
            app.command(entry.name)(sub)
    for name in RECIPE_COMMANDS:
        if name not in found:
            settings = {"allow_extra_args": True, "ignore_unknown_options": True}
            app.command(name, context_settings=settings)(_missing_recipes(name))


_add_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
