"""``profile``: rank the attention sub-layers of a model's text decoder by redundancy.

Redundancy (ELMM §3.4) is the mean per-token cosine similarity between the residual stream
before and after the attention sub-block, over calibration tokens (padding excluded). The K most
similar layers are the ones ``prune`` takes. ``ranking="drop-one"`` ranks by what removing each
unit does to the model's output instead (``pruning.drop_one``); the cosines are reported either
way. With ``unit="block"`` the units are whole blocks,
ranked by the cosine of the residual stream across the block (ShortGPT's block influence); every
profile reports both cosines per layer, so the two rankings can be compared on one table.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..calibration.encode import BatchEncoder, encoded_batches, probe_batch
from ..calibration.forward import (
    DecoderTaps,
    TokenMask,
    calibration_for,
    find_residual_sites,
    fit_encoder_to,
    one_sample_batches,
    run_forward,
)
from ..calibration.sources import CalibrationConfig, CalibrationSample, read_samples
from ..calibration.statistics import CosineMoments
from ..errors import PCError
from ..model.load import LoadedModel
from ..model.locate import DecoderLayout, block_units, find_decoder, replaced_layers
from ..output_dir import write_text_atomic
from ..progress import WorkProgress
from .drop_one import drop_one_scores
from .placement import PlacementConfig, resolve_k

SCHEMA = 1
TIMING_METHOD = (
    "wall-clock (time.perf_counter, CUDA synchronised) from forward pre/post hooks on the attention "
    "core and on the whole decoder block, summed over all calibration batches; the first forward "
    "(the layout probe) is the warm-up and is not timed. Share = core time / block time."
)


@dataclass
class ProfileConfig(PlacementConfig):
    """How to profile; the placement fields (``k``, ``decoder``, ``stack``, ``unit``) are
    ``PlacementConfig``'s. ``k`` here only marks the layers a later ``prune --k`` would take
    (``None``: half, ``prune``'s default; 0 marks none). Both cosines (attention sub-layer and whole
    block) are reported whichever ``unit`` ranks."""

    MIN_K: ClassVar[int] = 0

    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    time_layers: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stack == "both":
            raise PCError(
                "a profile ranks one stack at a time",
                "use --stack encoder or decoder (pc prune --stack both ranks both)",
            )


@dataclass
class LayerProfile:
    index: int
    cosine_mean: float
    cosine_std: float
    attention_time_share: float | None
    n_tokens: int
    block_cosine_mean: float | None = None  # the residual across the whole block (``--unit block`` ranks by it)
    block_cosine_std: float | None = None
    drop_one: float | None = None  # output divergence with this unit alone removed (``--ranking drop-one``)


@dataclass
class ProfileResult:
    """Serialisable profile; ``to_json``/``from_json`` round-trip the versioned JSON contract."""

    model: str
    model_class: str
    n_samples: int
    n_tokens: int
    layers: list[LayerProfile]
    ranking: list[int]
    k: int
    decoder: dict[str, Any]
    calibration: dict[str, Any]
    timing_method: str = TIMING_METHOD
    schema: int = SCHEMA
    environment: dict[str, str] = field(default_factory=dict)
    replaced: list[int] = field(default_factory=list)
    unit: str = "attention"
    ranked_by: str = "cosine"

    @property
    def chosen(self) -> list[int]:
        """The K layers ``prune --k K`` would take, most redundant first (never a replaced one)."""
        return [i for i in self.ranking if i not in self.replaced][: self.k]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chosen"] = self.chosen
        return data

    def to_json(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> ProfileResult:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PCError(f"cannot read profile {path}: {err}", "pass a JSON file written by `pc profile`") from err
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise PCError(f"profile {path} has schema {found!r}, expected {SCHEMA}", "re-run `pc profile`")
        data.pop("chosen", None)
        try:
            data["layers"] = [LayerProfile(**layer) for layer in data["layers"]]
            return cls(**data)
        except (KeyError, TypeError) as err:
            raise PCError(f"profile {path} is incomplete or malformed ({err})", "re-run `pc profile`") from err


def _environment() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def profile_samples(
    model: nn.Module,
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    config: ProfileConfig,
    layout: DecoderLayout | None = None,
    source: str = "",
    work: WorkProgress | None = None,
) -> ProfileResult:
    """Profile ``model`` on already-read ``samples``; the core of ``profile``."""
    if not samples:
        raise PCError("no calibration samples to profile on", "pass a calibration source with samples")
    layout = layout or find_decoder(model, config.decoder, config.stack)
    if config.unit == "block" and layout.unit != "block":
        layout = block_units(layout)
    fit_encoder_to(encoder, model, layout)
    replaced = replaced_layers(layout)
    attention = layout.attention_layers
    prunable = layout.prunable_layers
    k = resolve_k(config.k, len(prunable) - len(replaced), type(model).__name__)  # before any forward
    config = replace(config, calibration=one_sample_batches(model, layout, encoder, samples, config.calibration))
    token_mask = TokenMask()
    probe = encoder(probe_batch(samples, config.calibration.batch_size))
    sites = find_residual_sites(model, layout, probe, token_mask)
    moments = [CosineMoments() for _ in range(layout.num_layers)]
    across_block = [CosineMoments() for _ in range(layout.num_layers)]

    def on_residual(index: int, before: torch.Tensor, after: torch.Tensor) -> None:
        moments[index].update(before, after)

    def on_block(index: int, before: torch.Tensor, after: torch.Tensor) -> None:
        across_block[index].update(before, after)

    taps = DecoderTaps(
        layout,
        token_mask,
        sites=sites,
        on_residual=on_residual,
        on_block=on_block if layout.unit == "attention" else None,
        time_layers=config.time_layers,
    )
    with taps:
        for inputs in encoded_batches(
            encoder, samples, config.calibration.batch_size, "profiling", config.show_progress, work
        ):
            run_forward(model, inputs, token_mask)
    drop_one: dict[int, float] = {}
    if config.ranking == "drop-one":
        batch_size = config.calibration.batch_size
        drop_one = drop_one_scores(model, layout, encoder, samples, prunable, batch_size, config.show_progress, work)
    layers = []
    for index in attention:  # the other blocks of a hybrid stack have no attention to rank
        stat, times = moments[index], taps.times[index]
        share = times.core_seconds / times.block_seconds if times.block_seconds > 0 else None
        block = stat if layout.unit == "block" else across_block[index]
        layer = LayerProfile(index, stat.mean, stat.std, share, stat.count, block.mean, block.std, drop_one.get(index))
        layers.append(layer)
    if drop_one:  # never a layer that must stay: only prunable units are ranked
        ranking = sorted(prunable, key=lambda i: (drop_one[i], i))
    else:
        ranking = sorted(prunable, key=lambda i: (-moments[i].mean, i))
    calibration = asdict(config.calibration)
    return ProfileResult(
        model=source,
        model_class=type(model).__name__,
        n_samples=len(samples),
        n_tokens=moments[attention[0]].count,
        layers=layers,
        ranking=ranking,
        k=k,
        decoder={
            "blocks": layout.blocks_path,
            "num_layers": layout.num_layers,
            "attention_core": layout.core_names[attention[0]],
            "attention_layers": attention,
            "residual_after_attention": asdict(sites[attention[0]]),
        },
        calibration=calibration,
        environment=_environment(),
        replaced=replaced,
        unit=layout.unit,
        ranked_by=config.ranking,
    )


def profile(
    loaded: LoadedModel, config: ProfileConfig | None = None, samples: list[CalibrationSample] | None = None
) -> ProfileResult:
    """Profile a loaded model on the configured calibration data (see ``ProfileConfig``).

    ``samples``: as for ``prune_`` — a list built by the caller is used as given; without it
    ``config.calibration`` is read, and the embedded default becomes image + text for a model that
    takes images (``calibration.sources.for_model``).
    """
    config = config or ProfileConfig()
    encoder = BatchEncoder(loaded.processor, config.calibration.max_length)
    if samples is None:
        samples = read_samples(config.calibration)
    samples = calibration_for(loaded.model, encoder, config.calibration, samples)
    return profile_samples(loaded.model, encoder, samples, config, source=loaded.source)
