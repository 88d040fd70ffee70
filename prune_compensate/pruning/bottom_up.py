"""Fitting order and regression targets of the compensation maps (used by ``prune``).

Bottom-up (paper §3.4): the statistics of layer l are gathered with the replacements of the layers
below it already installed, and every calibration forward stops right after layer l. The target
is either ``local`` (the core's own output in the partly pruned model) or ``downstream`` (the
paper's ε = x_ori − x_pruning taken against the *original* model: its core output plus the drift
of the residual stream the earlier replacements left). The drift is carried into core-output space
through the block's residual map: identity for pre-norm blocks (checked on a real forward), the
pseudoinverse of the affine output map for post-norm blocks (BERT's ``attention.output.dense``,
registered in ``locate.OUTPUT_MAPS``), none for nonlinear maps such as Gemma's normed output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..calibration.encode import BatchEncoder, encoded_batches
from ..calibration.forward import CoreSignature, DecoderTaps, TokenMask, find_residual_sites, run_forward
from ..calibration.sources import CalibrationSample
from ..calibration.statistics import CrossMoments, PositionalMeans
from ..model.locate import DecoderLayout, output_map
from ..progress import WorkProgress
from .compensation import LinearCompensation, make_compensation
from .fit import solve_lstsq, solve_mean
from .merged import merged_core, projection_rows
from .swap import CoreSwap

if TYPE_CHECKING:
    from .config import PruneConfig

FITTED = ("lstsq", "mean", "merged")


@dataclass
class ResidualMap:
    """How a core's output enters the residual: ``identity`` (r + out), ``affine`` (a post-norm
    block's ``norm(out Gᵀ + b + r)``: ``drift_map`` = pinv(Gᵀ) carries residual drift back into
    core-output space) or ``nonlinear`` (e.g. Gemma's normed output: no drift correction)."""

    kind: str
    drift_map: torch.Tensor | None = None


def residual_maps(
    model: nn.Module, layout: DecoderLayout, layers: list[int], inputs: dict[str, torch.Tensor]
) -> dict[int, ResidualMap]:
    """Classify each chosen layer's residual map; identity is checked on a real forward. A whole
    block's unit output is its residual update itself: identity by construction."""
    if layout.unit == "block":
        return {index: ResidualMap("identity") for index in layers}
    token_mask = TokenMask()
    sites = find_residual_sites(model, layout, inputs, token_mask)
    seen: dict[int, dict[str, torch.Tensor]] = {i: {} for i in layers}

    def on_residual(index: int, before: torch.Tensor, after: torch.Tensor) -> None:
        seen[index]["delta"] = (after - before).double()

    def on_core(index: int, x: torch.Tensor, e: torch.Tensor, positions: torch.Tensor) -> None:
        seen[index]["out"] = e.double()

    taps = DecoderTaps(
        layout,
        token_mask,
        sites=sites,
        on_residual=on_residual,
        residual_layers=set(layers),
        on_core=on_core,
        core_layers=set(layers),
    )
    with taps:
        run_forward(model, inputs, token_mask)
    maps = {}
    for index in layers:
        block = layout.blocks[index]
        linear = output_map(block)
        if sites[index].layout == "post-norm" and linear is not None:
            drift = torch.linalg.pinv(linear.weight.detach().double().T.cpu())
            maps[index] = ResidualMap("affine", drift)
        else:
            delta, out = seen[index]["delta"], seen[index]["out"]
            scale = float(out.abs().max()) + 1e-12
            same = delta.shape == out.shape and float((delta - out).abs().max()) <= 1e-3 * scale
            maps[index] = ResidualMap("identity" if same else "nonlinear")
    return maps


class _FitCollector:
    """Routes one fitting group's hook rows into its statistics.

    With the downstream target each batch runs twice: first the original model (``phase
    "original"``: its core output and residual wait here, for this batch only), then the pruned
    model, whose core input and residual complete the regression pair."""

    def __init__(self, init: str, stats: dict[int, Any], maps: dict[int, ResidualMap], downstream: bool) -> None:
        self.init, self.stats, self.maps, self.downstream = init, stats, maps, downstream
        self.phase = "pruned"
        self.original: dict[str, torch.Tensor] = {}
        self.pruned_residual: dict[int, torch.Tensor] = {}
        self.projection_out: dict[int, torch.Tensor] = {}  # merged: what the map reads instead of x

    def on_projection(self, index: int, rows: torch.Tensor) -> None:
        if self.phase == "pruned":
            self.projection_out[index] = rows

    def on_block_input(self, index: int, rows: torch.Tensor) -> None:
        if self.phase == "original":
            self.original["residual"] = rows
        else:
            self.pruned_residual[index] = rows

    def on_core(self, index: int, x: torch.Tensor, e: torch.Tensor, positions: torch.Tensor) -> None:
        if self.phase == "original":
            self.original["out"] = e
            return
        if self.downstream:
            e = _downstream_target(
                self.original["out"], self.original["residual"], self.pruned_residual[index], self.maps[index]
            )
        if self.init == "merged":
            self.stats[index].update(self.projection_out.pop(index), e)
        elif self.init == "lstsq":
            self.stats[index].update(x, e)
        else:
            self.stats[index].update(x, e, positions)

    def next_batch(self) -> None:
        self.original.clear()
        self.pruned_residual.clear()
        self.projection_out.clear()


def fit_variant(
    model: nn.Module,
    layout: DecoderLayout,
    swap: CoreSwap,
    layers: list[int],
    signatures: dict[int, CoreSignature],
    maps: dict[int, ResidualMap],
    init: str,
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    config: PruneConfig,
    work: WorkProgress | None = None,
) -> dict[int, LinearCompensation]:
    modules: dict[int, LinearCompensation] = {}
    if init not in FITTED:
        return {i: make_compensation(signatures[i], init, config.rank, config.bias) for i in layers}
    swap.restore()
    groups = [[layer] for layer in layers] if config.order == "bottom-up" else [layers]
    token_mask = TokenMask()
    downstream = config.target == "downstream" and config.order == "bottom-up"
    for group in groups:
        stats: dict[int, Any] = {}
        for layer in group:
            sig = signatures[layer]
            if init == "merged":
                stats[layer] = CrossMoments(sig.dim_out, sig.dim_out)  # the MLP output: the residual width
            elif init == "lstsq":
                stats[layer] = CrossMoments(sig.dim_in, sig.dim_out)
            else:
                stats[layer] = PositionalMeans(sig.dim_in, sig.dim_out, config.max_positions)

        collector = _FitCollector(init, stats, maps, downstream)
        taps = DecoderTaps(
            layout,
            token_mask,
            on_core=collector.on_core,
            core_layers=set(group),
            stop_after=max(group),
            on_block_input=collector.on_block_input if downstream else None,
        )
        label = f"fit {init} layer{'s' if len(group) > 1 else ''} {','.join(map(str, group))}"
        below = group if init == "merged" else []
        with taps, projection_rows(model, layout, below, token_mask, collector.on_projection):
            for inputs in encoded_batches(
                encoder, samples, config.calibration.batch_size, label, config.show_progress, work
            ):
                if downstream:
                    collector.phase = "original"
                    swap.restore()
                    run_forward(model, inputs, token_mask)
                    collector.phase = "pruned"
                    swap.install(modules)
                run_forward(model, inputs, token_mask)
                collector.next_batch()
        for layer in group:
            if init == "merged":
                transform, bias = solve_lstsq(stats[layer], ridge=config.ridge, bias=config.bias)
                modules[layer] = merged_core(model, layout, layer, signatures[layer], transform, bias)
                continue
            module = make_compensation(signatures[layer], init, config.rank, config.bias)
            if init == "lstsq":
                weight, bias = solve_lstsq(stats[layer], ridge=config.ridge, bias=module.bias is not None)
            else:
                weight, bias = solve_mean(stats[layer]), None
            module.load_solution(weight, bias)
            modules[layer] = module
        swap.install(modules)  # later layers are fitted with these in place
    return modules


def _downstream_target(
    original_out: torch.Tensor, original_residual: torch.Tensor, pruned_residual: torch.Tensor, rmap: ResidualMap
) -> torch.Tensor:
    """ε for one batch: the original core output, plus the residual drift mapped into its space."""
    if rmap.kind == "nonlinear":
        return original_out
    drift = (original_residual - pruned_residual).double()
    if rmap.kind == "affine":
        assert rmap.drift_map is not None
        drift = drift @ rmap.drift_map.to(drift.device)
    return original_out.double() + drift
