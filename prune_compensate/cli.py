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

# Help panels, in the order ``--help`` shows them after the first one (the options a user needs first)
PLACE = "Which layers"
FIT = "Compensation"
HEAL = "Heal (distil the maps against the original)"
CALIBRATION = "Calibration data"
LOADING = "Model loading"
OUTPUT = "Output"
DATA = "Evaluation data"
LM_EVAL = "lm-eval tasks"


def _option(help: str, panel: str | None = None, *names: str, **extra: Any) -> Any:
    """A typer option with its help panel (``None``: the first panel, the options a user needs first)."""
    return typer.Option(*names, help=help, rich_help_panel=panel, **extra)


ModelArg = Annotated[
    str | None,
    typer.Argument(help="Local model folder or Hugging Face Hub id (downloaded once); omitted: the embedded MiniLM."),
]
RevisionOpt = Annotated[str | None, _option("Hub branch, tag or commit (default: main).", LOADING)]
TrustOpt = Annotated[
    bool, _option("Run the model repository's own code (only for repos you trust).", LOADING, "--trust-remote-code")
]
OfflineOpt = Annotated[bool, _option("Never touch the network: use the Hugging Face cache only.", LOADING, "--offline")]
AllowBaseOpt = Annotated[
    bool,
    _option(
        "Apply a delta checkpoint's maps even if its base model changed since they were fitted.",
        LOADING,
        "--allow-base-change",
    ),
]
GgufOpt = Annotated[str | None, _option("The GGUF file in MODEL's folder to load (a .gguf MODEL names it).", LOADING)]
DtypeOpt = Annotated[str, _option("auto, float32, bfloat16 or float16.", LOADING)]
DeviceOpt = Annotated[str, _option("cpu, cuda, or auto (accelerate device map).", LOADING)]
CalibOpt = Annotated[
    str,
    _option(
        "Calibration data: JSONL file, datasets folder, NAME[:CONFIG] datasets id, or 'embedded' "
        "(prose for LMs, triples for encoders; or embedded:prose, embedded:triples).",
        None,
        "--calib",
    ),
]
CalibSplitOpt = Annotated[str, _option("Split of a datasets id given to --calib.", CALIBRATION, "--calib-split")]
NSamplesOpt = Annotated[int, _option("Calibration samples to draw.", CALIBRATION)]
MaxLengthOpt = Annotated[int, _option("Max text tokens per sample.", CALIBRATION)]
BatchSizeOpt = Annotated[int, _option("Calibration batch size.", CALIBRATION)]
SeedOpt = Annotated[int, _option("Seed of the calibration draw.", CALIBRATION)]
TextColumnOpt = Annotated[str, _option("Text column/field name.", CALIBRATION)]
ImageColumnOpt = Annotated[str | None, _option("Image column/field name (JSONL default: images).", CALIBRATION)]
DecoderOpt = Annotated[
    str | None,
    _option("Dotted path of the block list to prune (skips the search), e.g. model.language_model.layers.", PLACE),
]
StackOpt = Annotated[
    str,
    _option(
        "Encoder–decoders: prune the decoder (default), the encoder, or both (pc prune: the K most "
        "redundant units over the two stacks, the encoder fitted first).",
        PLACE,
    ),
]
UnitOpt = Annotated[
    str,
    _option(
        "What to rank and drop: attention sub-layers (the paper) or whole blocks (residual cosine across "
        "the block, replaced by x + linear map).",
        PLACE,
    ),
]
RankingOpt = Annotated[
    str,
    _option(
        "How units are ranked: cosine (the paper's input/output cosine) or drop-one (the output's KL, or "
        "1 - cosine for encoders, with each unit alone removed; one forward per unit on 32 samples).",
        PLACE,
    ),
]
JsonOpt = Annotated[Path | None, _option("Write the result JSON here.", None, "--json")]
QuietOpt = Annotated[bool, _option("No progress bars.", OUTPUT, "--quiet")]


def _show_version(value: bool) -> None:
    if value:
        from .version import __version__

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


def _check_outputs(json_path: Path | None, plot: Path | None) -> None:
    """``--json`` / ``--plot`` must be writable before any work starts."""
    from .output_dir import check_out_file

    for path, flag in ((json_path, "--json"), (plot, "--plot")):
        if path is not None:
            check_out_file(path, flag)


def _load_config(
    dtype: str,
    device: str,
    revision: str | None,
    trust_remote_code: bool,
    offline: bool,
    allow_base_change: bool,
    gguf_file: str | None,
) -> Any:
    from .jobs import LoadConfig

    return LoadConfig(dtype, device, revision, trust_remote_code, offline, allow_base_change, gguf_file)


@app.command("profile")
def profile_command(
    model: ModelArg = None,
    calib: CalibOpt = "embedded",
    k: Annotated[
        int | None,
        _option(
            "Mark the layers `pc prune --k K` would take (default: half of them).", None, "--k", show_default=False
        ),
    ] = None,
    n_samples: Annotated[int, _option("Calibration samples to draw.")] = 1000,
    json_path: Annotated[Path | None, _option("Write the profile JSON (every column) here.", None, "--json")] = None,
    plot: Annotated[Path | None, _option("Write a PNG plot here.")] = None,
    unit: UnitOpt = "attention",
    ranking: RankingOpt = "cosine",
    decoder: DecoderOpt = None,
    stack: StackOpt = "decoder",
    max_length: MaxLengthOpt = 256,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    text_column: TextColumnOpt = "text",
    image_column: ImageColumnOpt = None,
    calib_split: CalibSplitOpt = "train",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
    gguf_file: GgufOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Rank attention sub-layers (or whole blocks) by redundancy on calibration data."""
    from .calibration.sources import CalibrationConfig
    from .jobs import profile_model
    from .pruning.profile import ProfileConfig
    from .report import plot_profile, print_profile

    try:
        _check_outputs(json_path, plot)  # before the (slow) profile, not after it
        calibration = CalibrationConfig(
            calib, n_samples, max_length, batch_size, seed, text_column, image_column, calib_split
        )
        config = ProfileConfig(
            k=k,
            calibration=calibration,
            show_progress=not quiet,
            decoder=decoder,
            stack=stack,
            unit=unit,
            ranking=ranking,
        )
        options = _load_config(dtype, device, revision, trust_remote_code, offline, allow_base_change, gguf_file)
        result = profile_model(model, config, options)
        print_profile(result, console)
        _write_outputs(result, "profile", json_path, plot, plot_profile)
    except PCError as err:
        fail(err)


def _layer_list(layers: str | None) -> list[int] | None:
    """``--layers 3,5`` as ``[3, 5]``."""
    if layers is None:
        return None
    try:
        return [int(x) for x in layers.split(",") if x.strip()]
    except ValueError as err:
        raise PCError(f"--layers {layers!r} is not a comma-separated list of integers", "e.g. --layers 3,5") from err


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


OutOpt = Annotated[Path, _option("Checkpoint folder to write (must not exist, see --overwrite).", None, "--out")]
PruneKOpt = Annotated[
    int | None,
    _option(
        "Attention layers to drop (default: half of those the model has, the paper's ratio, e.g. 16 of 32).",
        None,
        "--k",
        show_default=False,
    ),
]
InitOpt = Annotated[
    str, _option("Compensation: lstsq, mean (paper Thm 1), zero, none, merged (folded into the MLP below).")
]
EvalAfterOpt = Annotated[
    bool,
    _option(
        "Evaluate pruned vs original right after pruning (embedded held-out data, as `pc eval`) "
        "and write the result into the manifest (loads a second copy of the model).",
        None,
        "--eval",
    ),
]
LayersOpt = Annotated[str | None, _option("Comma-separated layer indices (overrides the ranking).", PLACE)]
ProfileJsonOpt = Annotated[Path | None, _option("Reuse a `pc profile --json` ranking.", PLACE, "--profile")]
OrderOpt = Annotated[str, _option("bottom-up (paper) or independent.", FIT)]
TargetOpt = Annotated[str, _option("downstream (ε vs the original model) or local.", FIT)]
RidgeOpt = Annotated[float, _option("lstsq ridge λ, relative to trace(XᵀX)/D.", FIT)]
NoBiasOpt = Annotated[bool, _option("No affine term in the lstsq fit (W only).", FIT, "--no-bias")]
RankOpt = Annotated[int | None, _option("Low-rank W (truncated SVD).", FIT)]
HeldOutOpt = Annotated[float, _option("Share of calibration samples kept for the error report.", FIT)]
CompareOpt = Annotated[
    str,
    _option(
        "Inits whose held-out error is reported beside --init: none and zero cost nothing; "
        "mean and lstsq each cost another full fit (a pass over the calibration data per pruned layer).",
        FIT,
    ),
]
HealStepsOpt = Annotated[int, _option("Distillation steps that refine the fitted maps (0 = off).", HEAL)]
HealLrOpt = Annotated[float, _option("Heal learning rate (Adam).", HEAL)]
HealObjectiveOpt = Annotated[
    str, _option("auto (kl for LMs, hidden for encoders), kl, embedding, similarity or hidden.", HEAL)
]
HealNormsOpt = Annotated[bool, _option("Heal also the norms of the blocks holding a map.", HEAL, "--heal-norms")]
HealMlpsOpt = Annotated[
    bool,
    _option(
        "Heal also the rest of each block holding a map (its MLP): per-token capacity the maps lack.",
        HEAL,
        "--heal-mlps",
    ),
]
HealMlpLrOpt = Annotated[float, _option("Heal learning rate of the MLP weights (--heal-mlps).", HEAL)]
HealScheduleOpt = Annotated[str, _option("constant, or cosine (decayed to zero over --heal-steps).", HEAL)]
HealTopKOpt = Annotated[
    int,
    _option(
        "kl objective: run the original model once per sample and keep its top-k next-token "
        "probabilities (plus the rest as one bin) instead of running it on every heal step (0 = off).",
        HEAL,
    ),
]
HealPairsOpt = Annotated[
    str | None,
    _option(
        "Keep the heal step with the best retrieval MRR on these (query, document) pairs (JSONL, as "
        "`pc eval --pairs`; keep them apart from the pairs you report on) instead of the lowest held-out loss.",
        HEAL,
    ),
]
SaveOpt = Annotated[
    str,
    _option(
        "full: the whole pruned model (works offline, standalone); delta: only the replacement maps "
        "plus the base's id and commit (or path and hashes), reloaded on top of the base.",
        OUTPUT,
    ),
]
OverwriteOpt = Annotated[
    bool,
    _option(
        "Replace an existing --out, only if it is a pruned checkpoint (swapped in when complete).",
        OUTPUT,
        "--overwrite",
    ),
]
EvalMaxOpt = Annotated[
    int | None,
    _option(
        "With --eval: use at most this many held-out texts and pairs (a quick look; `pc eval` takes every option).",
        OUTPUT,
        "--eval-max-examples",
    ),
]


@app.command("prune")
def prune_command(
    model: ModelArg = None,
    out: OutOpt = ...,
    k: PruneKOpt = None,
    init: InitOpt = "lstsq",
    calib: CalibOpt = "embedded",
    eval_after: EvalAfterOpt = False,
    layers: LayersOpt = None,
    profile_json: ProfileJsonOpt = None,
    unit: UnitOpt = "attention",
    ranking: RankingOpt = "cosine",
    decoder: DecoderOpt = None,
    stack: StackOpt = "decoder",
    order: OrderOpt = "bottom-up",
    target: TargetOpt = "downstream",
    ridge: RidgeOpt = 1e-4,
    no_bias: NoBiasOpt = False,
    rank: RankOpt = None,
    held_out: HeldOutOpt = 0.2,
    compare: CompareOpt = "none",
    heal_steps: HealStepsOpt = 0,
    heal_lr: HealLrOpt = 3e-4,
    heal_objective: HealObjectiveOpt = "auto",
    heal_norms: HealNormsOpt = False,
    heal_mlps: HealMlpsOpt = False,
    heal_mlp_lr: HealMlpLrOpt = 1e-4,
    heal_schedule: HealScheduleOpt = "constant",
    heal_teacher_top_k: HealTopKOpt = 0,
    heal_select_pairs: HealPairsOpt = None,
    n_samples: NSamplesOpt = 1000,
    max_length: MaxLengthOpt = 256,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    text_column: TextColumnOpt = "text",
    image_column: ImageColumnOpt = None,
    calib_split: CalibSplitOpt = "train",
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
    gguf_file: GgufOpt = None,
    save: SaveOpt = "full",
    overwrite: OverwriteOpt = False,
    eval_max_examples: EvalMaxOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Drop the K most redundant attention sub-layers (or blocks), fit their compensation, write a checkpoint."""
    from .calibration.sources import CalibrationConfig
    from .eval import EvalConfig
    from .eval.report import print_eval
    from .jobs import SaveConfig, prune_and_save
    from .pruning.config import PruneConfig
    from .pruning.heal import HealConfig
    from .pruning.profile import ProfileResult
    from .report import print_prune

    try:
        if eval_max_examples is not None and not eval_after:
            raise PCError("--eval-max-examples is set but --eval is not", "add --eval, or drop --eval-max-examples")
        evaluation = EvalConfig(max_examples=eval_max_examples, show_progress=not quiet) if eval_after else None
        place = dict(k=k, layers=_layer_list(layers), decoder=decoder, stack=stack, unit=unit, ranking=ranking)
        fit = dict(init=init, order=order, target=target, ridge=ridge, bias=not no_bias, rank=rank, held_out=held_out)
        heal = dict(
            steps=heal_steps, lr=heal_lr, objective=heal_objective, train_norms=heal_norms, train_mlps=heal_mlps
        )
        heal |= dict(teacher_top_k=heal_teacher_top_k, schedule=heal_schedule, select_pairs=heal_select_pairs)
        data = CalibrationConfig(calib, n_samples, max_length, batch_size, seed, text_column, image_column, calib_split)
        config = PruneConfig(
            **place,
            **fit,
            compare=_names(compare),
            calibration=data,
            heal=HealConfig(**heal),
            show_progress=not quiet,
            profile=ProfileResult.from_json(profile_json) if profile_json else None,
        )
        options = _load_config(dtype, device, revision, trust_remote_code, offline, allow_base_change, gguf_file)
        done = prune_and_save(model, config, SaveConfig(out, save, overwrite), options, evaluation)
        print_prune(done.prune, console)
        if done.eval is not None:
            print_eval(done.eval, console)
        saved = f"pruned checkpoint written to {escape(str(out))} (reload: prune_compensate.load_pruned)"
        console.print(saved, highlight=False)
    except PCError as err:
        fail(err)


AgainstOpt = Annotated[
    str | None, _option("The original to compare with (default: the base recorded in a pruned checkpoint).")
]
TextOpt = Annotated[
    str | None, _option("LM text: 'embedded', a .txt/.jsonl file, a dataset folder or NAME[:CONFIG] id; 'none'.")
]
PairsOpt = Annotated[str | None, _option("Encoder retrieval pairs: 'embedded' or a JSONL of query/document; 'none'.")]
TasksOpt = Annotated[str | None, _option("lm-eval tasks, comma-separated (needs the eval extra).")]
AloneOpt = Annotated[bool, _option("Evaluate MODEL alone, even if it names a base.", DATA, "--alone")]
CaptionsOpt = Annotated[str | None, _option("VLM image–caption JSONL (caption, images).", DATA)]
MaxExamplesOpt = Annotated[int | None, _option("Use at most this many texts / pairs / captions.", DATA)]
WindowOpt = Annotated[int, _option("Tokens per window (LMs) or per text (encoders).", DATA, "--max-length")]
StrideOpt = Annotated[
    int | None, _option("Window stride for perplexity (transformers' guide; default: half of --max-length).", DATA)
]
EmbedBatchOpt = Annotated[int, _option("Texts per batch when embedding (encoders).", DATA, "--batch-size")]
EvalTextColumnOpt = Annotated[str, _option("Text column/field name.", DATA, "--text-column")]
SplitOpt = Annotated[str, _option("Split of a datasets id given to --text.", DATA)]
IncludePathOpt = Annotated[str | None, _option("Folder of local lm-eval task YAMLs.", LM_EVAL)]
LimitOpt = Annotated[int | None, _option("lm-eval examples per task.", LM_EVAL)]
RetentionPlotOpt = Annotated[Path | None, _option("Write a PNG of retention per metric here.", OUTPUT, "--plot")]


@app.command("eval")
def eval_command(
    model: ModelArg = None,
    against: AgainstOpt = None,
    text: TextOpt = "embedded",
    pairs: PairsOpt = "embedded",
    tasks: TasksOpt = None,
    json_path: JsonOpt = None,
    alone: AloneOpt = False,
    captions: CaptionsOpt = None,
    max_examples: MaxExamplesOpt = None,
    max_length: WindowOpt = 512,
    stride: StrideOpt = None,
    batch_size: EmbedBatchOpt = 16,
    text_column: EvalTextColumnOpt = "text",
    split: SplitOpt = "test",
    include_path: IncludePathOpt = None,
    limit: LimitOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "cpu",
    revision: RevisionOpt = None,
    trust_remote_code: TrustOpt = False,
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
    gguf_file: GgufOpt = None,
    plot: RetentionPlotOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """What pruning cost: MODEL (pruned) vs its original on text, image captions, retrieval or lm-eval tasks."""
    from .eval import EvalConfig
    from .eval.report import plot_retention, print_eval
    from .jobs import base_of, evaluate_model

    try:
        _check_outputs(json_path, plot)
        config = EvalConfig(
            text=None if text == "none" else text,
            pairs=None if pairs == "none" else pairs,
            captions=captions,
            tasks=_names(tasks or ""),
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
        if plot is not None and (alone or (against is None and base_of(model)[0] is None)):
            raise PCError("--plot draws retention, which needs an original", "pass --against or drop --plot")
        options = _load_config(dtype, device, revision, trust_remote_code, offline, allow_base_change, gguf_file)
        result = evaluate_model(model, config, against, alone, options)
        print_eval(result, console)
        _write_outputs(result, "eval", json_path, plot, plot_retention)
    except PCError as err:
        fail(err)


FormatOpt = Annotated[str, _option("decilm (a Nemotron-NAS folder) or gguf (a llama.cpp file).", None, "--format")]
ExportOutOpt = Annotated[Path, _option("Folder (decilm) or .gguf file to write.", None, "--out")]
OuttypeOpt = Annotated[str, _option("GGUF tensor type: f32, f16 or q8_0 (norms stay f32).", OUTPUT)]
DropBiasOpt = Annotated[
    bool, _option("Leave out the maps' biases (risky: prefer pc prune --no-bias).", None, "--drop-bias")
]
VocabFromOpt = Annotated[
    str | None,
    _option("GGUF whose tokenizer the file gets (default: the base's, if a GGUF; none: no tokenizer).", OUTPUT),
]
ExportOverwriteOpt = Annotated[
    bool, _option("Replace --out if it is an earlier export (a GGUF file or an export folder).", OUTPUT, "--overwrite")
]


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="A pruned checkpoint folder (pc prune --out), full or delta.")],
    out: ExportOutOpt,
    format: FormatOpt = "gguf",
    drop_bias: DropBiasOpt = False,
    outtype: OuttypeOpt = "f16",
    vocab_from: VocabFromOpt = None,
    overwrite: ExportOverwriteOpt = False,
    json_path: JsonOpt = None,
    dtype: DtypeOpt = "auto",
    offline: OfflineOpt = False,
    allow_base_change: AllowBaseOpt = False,
) -> None:
    """Write a pruned Llama-family decoder for an inference engine: llama.cpp (GGUF deci) or DeciLM."""
    from .export import ExportConfig
    from .jobs import export_model
    from .report import print_export

    try:
        _check_outputs(json_path, None)
        config = ExportConfig(out, format, outtype, drop_bias, vocab_from, overwrite)
        options = _load_config(dtype, "cpu", None, False, offline, allow_base_change, None)
        result = export_model(model, config, options)
        print_export(result, console)
        _write_outputs(result, "export", json_path, None, None)
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
