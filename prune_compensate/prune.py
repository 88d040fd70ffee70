"""``prune_``: drop the K most redundant attention cores and fit a linear compensation for each.

Like torchao's ``quantize_(model, config)``, it changes the model in place and returns a
serialisable result (the manifest written beside a checkpoint). Steps:

1. rank layers (a fresh ``profile`` on the fitting samples, a saved profile, or ``layers``);
2. read the chosen cores' call/return signature off one real forward;
3. fit the compensation of each chosen layer, lowest first (*bottom-up*, paper §3.4): the
   statistics of layer l are gathered with the replacements of the layers below l already in
   place, so its fit sees and corrects their errors; each forward stops right after layer l.
   ``order="independent"`` fits every layer from the original model in one pass instead;
4. measure, on held-out samples never used for fitting, the error of the final hidden states
   against the original model for every compared init (``none``, ``zero``, ``mean``, ``lstsq``);
5. leave the model with the chosen init's modules installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .calibrate import (
    CoreSignature,
    DecoderTaps,
    TokenMask,
    encoded_batches,
    find_residual_sites,
    move_inputs,
    probe_cores,
    run_forward,
)
from .calibration import BatchEncoder, CalibrationConfig, CalibrationSample, read_samples, split_samples
from .compensate import LinearCompensation, _replace_module
from .errors import PCError
from .evaluate import OutputError
from .fit import solve_lstsq, solve_mean
from .load import LoadedModel
from .locate import DecoderLayout, find_decoder, output_map
from .profile import ProfileConfig, ProfileResult, profile_samples
from .statistics import CrossMoments, PositionalMeans

INITS = ("lstsq", "mean", "zero", "none")
ORDERS = ("bottom-up", "independent")
FITTED = ("lstsq", "mean")
TARGETS = ("downstream", "local")


@dataclass
class PruneConfig:
    """How to prune. ``layers`` overrides the ranking; ``profile`` reuses a saved ranking.

    ``ridge``: λ relative to ``trace(XᵀX)/D`` for ``lstsq``. ``rank``: low-rank W (truncated SVD).
    ``held_out``: share of calibration samples kept out of fitting for the error report.
    ``compare``: inits whose held-out error is reported beside the chosen one.
    ``target``: what each fit regresses on. ``"local"``: the core's own output with the layers
    below already replaced (the error the drop causes at this layer). ``"downstream"`` (default):
    the paper's ε = x_ori − x_pruning taken literally — the *original* model's core output plus
    the drift of the residual stream the earlier replacements left (original − pruned residual,
    mapped back through the block's affine output map when it has one), so each fit also undoes
    the error accumulated below it. The two coincide for ``order="independent"``.
    """

    k: int = 16
    layers: list[int] | None = None
    init: str = "lstsq"
    order: str = "bottom-up"
    ridge: float = 1e-4
    bias: bool = True
    rank: int | None = None
    held_out: float = 0.2
    compare: tuple[str, ...] = INITS
    max_positions: int = 4096
    target: str = "downstream"
    profile: ProfileResult | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise PCError(f"unknown --init {self.init!r}", f"use one of {', '.join(INITS)}")
        if self.order not in ORDERS:
            raise PCError(f"unknown --order {self.order!r}", f"use one of {', '.join(ORDERS)}")
        if not 0.0 <= self.held_out < 1.0:
            raise PCError(f"held-out share must be in [0, 1), got {self.held_out}", "pass e.g. --held-out 0.2")
        if self.ridge < 0:
            raise PCError(f"--ridge must be non-negative, got {self.ridge}", "pass e.g. --ridge 1e-4")
        if self.target not in TARGETS:
            raise PCError(f"unknown target {self.target!r}", f"use one of {', '.join(TARGETS)}")
        for name in self.compare:
            if name not in INITS:
                raise PCError(f"unknown init {name!r} to compare", f"use names from {', '.join(INITS)}")


@dataclass
class PruneResult:
    """What was done and what it cost; ``to_manifest`` is ``prune_manifest.json``."""

    pruned_layers: list[int]
    scores: dict[int, float]
    init: str
    k: int
    order: str
    ridge: float
    bias: bool
    rank: int | None
    signatures: dict[int, CoreSignature]
    error: dict[str, dict[str, float]]
    parameters: dict[str, int]
    kv_cache_bytes_per_token: dict[str, int] | None
    calibration: dict[str, Any]
    decoder: dict[str, Any]
    model_class: str

    def to_manifest(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = 1
        data["scores"] = {str(k): v for k, v in self.scores.items()}
        data["signatures"] = {str(k): asdict(v) for k, v in self.signatures.items()}
        return data


def core_path(layout: DecoderLayout, index: int) -> str:
    return f"{layout.blocks_path}.{index}.{layout.core_names[index]}"


class CoreSwap:
    """Install or restore replacement modules for a set of layers of one model."""

    def __init__(self, model: nn.Module, layout: DecoderLayout, indices: list[int]) -> None:
        self.model, self.layout = model, layout
        self.originals = {i: layout.core(i) for i in indices}

    def install(self, modules: dict[int, nn.Module]) -> None:
        for index, original in self.originals.items():
            target = modules.get(index, original)
            if self.layout.core(index) is not target:
                _replace_module(self.model, core_path(self.layout, index), target)

    def restore(self) -> None:
        self.install({})


def make_compensation(sig: CoreSignature, init: str, rank: int | None, bias: bool) -> LinearCompensation:
    kind = "none" if init == "none" else ("lowrank" if rank else "linear")
    return LinearCompensation(
        sig.dim_in,
        sig.dim_out,
        kind=kind,
        rank=rank,
        bias=bias and init != "mean",  # Theorem 1 has no bias term
        output_arity=sig.output_arity,
        layer_idx=sig.layer_idx,
    )


def choose_layers(layout: DecoderLayout, model: nn.Module, config: PruneConfig, ranking: list[int] | None) -> list[int]:
    n = layout.num_layers
    name = type(model).__name__
    if config.layers is not None:
        if not config.layers:
            raise PCError("--layers is empty", "name at least one layer index")
        bad = [i for i in config.layers if not 0 <= i < n]
        if bad:
            raise PCError(f"unknown layer index {bad[0]}: {name} has {n} decoder layers (0–{n - 1})", "fix --layers")
        if len(set(config.layers)) != len(config.layers):
            raise PCError(f"--layers repeats a layer: {config.layers}", "name each layer once")
        return sorted(config.layers)
    if not 1 <= config.k <= n:
        raise PCError(f"--k {config.k} is out of range: {name} has {n} decoder layers", f"pass --k between 1 and {n}")
    assert ranking is not None
    return sorted(ranking[: config.k])


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
    """Classify each chosen layer's residual map; identity is checked on a real forward."""
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
        if self.init == "lstsq":
            self.stats[index].update(x, e)
        else:
            self.stats[index].update(x, e, positions)

    def next_batch(self) -> None:
        self.original.clear()
        self.pruned_residual.clear()


def _fit_variant(
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
            if init == "lstsq":
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
        with taps:
            for inputs in encoded_batches(encoder, samples, config.calibration.batch_size, label, config.show_progress):
                if downstream:
                    collector.phase = "original"
                    swap.restore()
                    run_forward(model, inputs, token_mask)
                    collector.phase = "pruned"
                    swap.install(modules)
                run_forward(model, inputs, token_mask)
                collector.next_batch()
        for layer in group:
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


def _forward_outputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    with torch.inference_mode():
        return model(**move_inputs(inputs, model), output_hidden_states=True, use_cache=False)


def held_out_error(
    model: nn.Module,
    swap: CoreSwap,
    variants: dict[str, dict[int, LinearCompensation]],
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    batch_size: int,
    show_progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Error of each variant against the original model on ``samples`` (see ``evaluate``)."""
    errors = {name: OutputError() for name in variants}
    for inputs in encoded_batches(encoder, samples, batch_size, "held-out error", show_progress):
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))
        swap.restore()
        reference = _forward_outputs(model, inputs)
        for name, modules in variants.items():
            swap.install(modules)
            errors[name].update(reference, _forward_outputs(model, inputs), mask)
    swap.restore()
    return {name: err.summary() for name, err in errors.items()}


def _kv_bytes(model: nn.Module, layout: DecoderLayout, layers: range | list[int]) -> int:
    total = 0
    for index in layers:
        core = layout.core(index)
        for name in ("k_proj", "v_proj", "key", "value", "k_lin", "v_lin"):
            proj = getattr(core, name, None)
            if isinstance(proj, nn.Linear):
                total += proj.out_features * proj.weight.element_size()
    return total


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_samples(
    model: nn.Module, encoder: BatchEncoder, samples: list[CalibrationSample], config: PruneConfig
) -> PruneResult:
    """``prune_`` on already-read samples: the core of the public function."""
    layout = find_decoder(model)
    fit, held = split_samples(samples, config.held_out)
    if not fit:
        raise PCError("no calibration samples left to fit on", "pass more samples or a smaller held-out share")
    if config.rank is not None and config.rank < 1:
        raise PCError(f"--rank must be at least 1, got {config.rank}", "pass a positive rank or leave it out")
    ranking, scores_by_layer = None, {}
    if config.layers is None:
        result = config.profile
        if result is None:
            profile_config = ProfileConfig(
                k=config.k, calibration=config.calibration, time_layers=False, show_progress=config.show_progress
            )
            result = profile_samples(model, encoder, fit, profile_config, layout)
        elif len(result.layers) != layout.num_layers or result.model_class != type(model).__name__:
            raise PCError(
                f"the profile is for {result.model_class} with {len(result.layers)} layers, "
                f"not {type(model).__name__} with {layout.num_layers}",
                "profile this model with `pc profile` first",
            )
        ranking = result.ranking
        scores_by_layer = {layer.index: layer.cosine_mean for layer in result.layers}
    layers = choose_layers(layout, model, config, ranking)
    params_before = _count(model)
    kv_before = _kv_bytes(model, layout, range(layout.num_layers))
    signatures = probe_cores(model, layout, layers, encoder(fit[: config.calibration.batch_size]))
    for layer in layers:
        sig = signatures[layer]
        if config.rank is not None and config.rank >= min(sig.dim_in, sig.dim_out):
            raise PCError(
                f"--rank {config.rank} is not below the layer width {min(sig.dim_in, sig.dim_out)}",
                "use a smaller rank, or none for a full W",
            )
    probe = encoder(fit[: config.calibration.batch_size])
    maps = residual_maps(model, layout, layers, probe)
    swap = CoreSwap(model, layout, layers)
    names = list(dict.fromkeys([*config.compare, config.init]))
    variants = {
        name: _fit_variant(model, layout, swap, layers, signatures, maps, name, encoder, fit, config) for name in names
    }
    error: dict[str, dict[str, float]] = {}
    if held:
        batch_size = config.calibration.batch_size
        error = held_out_error(model, swap, variants, encoder, held, batch_size, config.show_progress)
    for layer, module in variants[config.init].items():
        module.dropped_params = [name for name, _ in swap.originals[layer].named_parameters()]
    swap.install(variants[config.init])
    kept = [i for i in range(layout.num_layers) if i not in layers]
    has_cache = bool(getattr(model, "can_generate", lambda: False)())
    return PruneResult(
        pruned_layers=layers,
        scores={i: scores_by_layer[i] for i in layers if i in scores_by_layer},
        init=config.init,
        k=len(layers),
        order=config.order,
        ridge=config.ridge,
        bias=config.bias,
        rank=config.rank,
        signatures=signatures,
        error=error,
        parameters={"before": params_before, "after": _count(model)},
        kv_cache_bytes_per_token={"before": kv_before, "after": _kv_bytes(model, layout, kept)} if has_cache else None,
        calibration={
            "source": config.calibration.source,
            "n_fit": len(fit),
            "n_held_out": len(held),
            "max_length": config.calibration.max_length,
            "seed": config.calibration.seed,
        },
        decoder={"blocks": layout.blocks_path, "num_layers": layout.num_layers, "core_names": layout.core_names},
        model_class=type(model).__name__,
    )


def prune_(
    loaded: LoadedModel, config: PruneConfig | None = None, samples: list[CalibrationSample] | None = None
) -> PruneResult:
    """Prune ``loaded.model`` in place (see module docstring) and return what was done."""
    config = config or PruneConfig()
    samples = read_samples(config.calibration) if samples is None else samples
    encoder = BatchEncoder(loaded.processor, config.calibration.max_length)
    return prune_samples(loaded.model, encoder, samples, config)
