"""One library call per job, as ``pc`` runs it: ``profile_model``, ``prune_and_save`` and
``evaluate_model`` take a model name (a folder, a hub id or a delta checkpoint) and config objects,
and do the whole job — check every option and output, read the calibration samples, load, work,
save — in the order that makes a mistake cheap: everything a user can get wrong fails before the
model is loaded, and nothing is written until the work is done.

Like llm-compressor's ``oneshot(model, dataset, recipe, output_dir)``: the CLI only parses options
into these configs, and a script, a recipe or a benchmark that wants "prune this model and save
it" makes the same one call. The transformations themselves stay plain functions of a loaded
model (``profile``, ``prune_``) for callers that hold the model already.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .calibration.sources import read_samples
from .checkpoint.delta import is_delta, load_delta, save_delta
from .checkpoint.format import MANIFEST, read_manifest
from .checkpoint.save import check_out_dir, save_pruned
from .errors import PCError
from .eval import EvalConfig, EvalResult, evaluate
from .eval.run import check_disjoint, check_not_calibration
from .export import ExportConfig, ExportResult, export_
from .export.run import check_out
from .model.load import LoadedModel, load_model
from .pruning.config import PruneConfig
from .pruning.profile import ProfileConfig, ProfileResult, profile
from .pruning.prune import PruneResult, prune_

SAVE_MODES = ("full", "delta")


@dataclass
class LoadConfig:
    """How to load the model a job works on (``load_model``'s options). ``allow_base_change``:
    apply a delta checkpoint's maps even if its base model changed since they were fitted.
    ``gguf_file``: the GGUF file in a model folder (a ``.gguf`` path names it by itself)."""

    dtype: str = "auto"
    device: str = "cpu"
    revision: str | None = None
    trust_remote_code: bool = False
    offline: bool = False
    allow_base_change: bool = False
    gguf_file: str | None = None


@dataclass
class SaveConfig:
    """Where and how ``prune_and_save`` writes. ``mode``: ``"full"`` (the whole pruned model,
    standalone) or ``"delta"`` (only the replacement maps plus the base's id and commit, reloaded
    on top of the base). ``overwrite`` replaces only a folder that is itself a pruned checkpoint."""

    out: Path
    mode: str = "full"
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.mode not in SAVE_MODES:
            raise PCError(f"unknown --save {self.mode!r}", f"use {' or '.join(SAVE_MODES)}")


@dataclass
class PruneJobResult:
    """What ``prune_and_save`` did: the prune, the evaluation when one was asked for, and where the
    checkpoint went with the manifest written beside it."""

    prune: PruneResult
    out: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    eval: EvalResult | None = None


def load(model: str | None, options: LoadConfig | None = None) -> LoadedModel:
    """A delta checkpoint through ``load_delta`` (its base first), anything else through
    ``load_model``; ``None`` is the embedded default."""
    options = options or LoadConfig()
    settings = dict(dtype=options.dtype, device=options.device, trust_remote_code=options.trust_remote_code)
    if model is not None and is_delta(model):
        return load_delta(model, allow_base_change=options.allow_base_change, offline=options.offline, **settings)
    return load_model(
        model, revision=options.revision, offline=options.offline, gguf_file=options.gguf_file, **settings
    )


def profile_model(
    model: str | None, config: ProfileConfig | None = None, options: LoadConfig | None = None
) -> ProfileResult:
    """``pc profile``: read the calibration samples (a bad file fails before the model loads),
    load ``model`` and rank its units."""
    config = config or ProfileConfig()
    samples = read_samples(config.calibration)
    return profile(load(model, options), config, samples)


def _check_prune_job(config: PruneConfig, save: SaveConfig, evaluation: EvalConfig | None) -> None:
    """Rules between the configs, checked before any work: the rest live in each config."""
    trained = [
        flag for flag, on in (("--heal-norms", config.heal.train_norms), ("--heal-mlps", config.heal.train_mlps)) if on
    ]
    if save.mode == "delta" and trained and config.heal.steps > 0:
        raise PCError(
            f"{' and '.join(trained)} train{'s' if len(trained) == 1 else ''} base weights that a delta "
            "checkpoint does not store",
            f"use --save full or drop {' and '.join(trained)}",
        )
    check_out_dir(save.out.resolve(), save.overwrite)
    if evaluation is not None:
        check_not_calibration(config.calibration.source, evaluation, None)


def prune_and_save(
    model: str | None,
    config: PruneConfig,
    save: SaveConfig,
    options: LoadConfig | None = None,
    evaluation: EvalConfig | None = None,
) -> PruneJobResult:
    """``pc prune``: check the output folder, read the calibration samples, load ``model``, prune
    it (``prune_``), optionally evaluate it against a second copy of the original (``evaluation``:
    its result goes into the manifest), and write the checkpoint atomically (``save.mode``)."""
    options = options or LoadConfig()
    _check_prune_job(config, save, evaluation)
    samples = read_samples(config.calibration)
    loaded = load(model, options)
    if save.mode == "delta" and loaded.origin is None:
        raise PCError("the base of this model is unknown", "use --save full")
    result = prune_(loaded, config, samples)
    manifest = result.to_manifest()
    quality = None
    if evaluation is not None:
        original = load(model, replace(options, offline=True))  # the first load fetched it
        quality = evaluate(loaded, original, evaluation)
        manifest["eval"] = quality.to_dict()
        del original
    manifest["model"] = loaded.source
    if loaded.origin is not None:
        manifest["base"] = loaded.origin.to_manifest()
    if save.mode == "delta":
        save_delta(loaded.model, loaded.processor, save.out, manifest, loaded.origin, overwrite=save.overwrite)
    else:
        save_pruned(
            loaded.model, loaded.processor, save.out, manifest, overwrite=save.overwrite, source=loaded.local_dir
        )
    return PruneJobResult(result, save.out, manifest, quality)


def base_of(model: str | None) -> tuple[str | None, str | None]:
    """The original a pruned checkpoint was made from (its manifest's base), as (name, revision);
    ``(None, None)`` for anything that is not a pruned checkpoint."""
    if model is None or not (Path(model) / MANIFEST).is_file():
        return None, None
    manifest = read_manifest(model)
    base = manifest.get("base") or {}
    if base.get("hub_id"):
        return base["hub_id"], base.get("commit") or base.get("revision")
    if base.get("gguf_file"):  # the GGUF file itself names the model, folder and file
        return str(Path(base["path"]) / base["gguf_file"]), None
    return base.get("path") or manifest.get("model"), None


def evaluate_model(
    model: str | None,
    config: EvalConfig | None = None,
    against: str | None = None,
    alone: bool = False,
    options: LoadConfig | None = None,
) -> EvalResult:
    """``pc eval``: ``model`` beside its original — ``against`` when given, else the base its
    manifest records; ``alone`` (or no base) scores ``model`` by itself."""
    config = config or EvalConfig()
    options = options or LoadConfig()
    check_disjoint(model, config)
    base, base_revision = (None, None) if alone else (against, None) if against else base_of(model)
    loaded = load(model, options)
    # the original at the revision its manifest records (a GGUF base is named by its file's path)
    original = None if base is None else load(base, replace(options, revision=base_revision, gguf_file=None))
    return evaluate(loaded, original, config)


def export_model(model: str, config: ExportConfig, options: LoadConfig | None = None) -> ExportResult:
    """``pc export``: check the output, load the pruned checkpoint ``model`` (full or delta) and
    write it in an engine's format (``export_``)."""
    check_out(config)
    if model is None or not (Path(model) / MANIFEST).is_file():
        raise PCError(f"{model} is not a pruned checkpoint (no {MANIFEST})", "export a folder written by `pc prune`")
    manifest = read_manifest(model)
    return export_(load(model, options), config, manifest)
