"""``prune_``: drop the K most redundant attention cores (or, with ``unit="block"``, whole blocks)
and fit a linear compensation for each.

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

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from torch import nn

from ..calibration.encode import BatchEncoder, probe_batch
from ..calibration.forward import (
    CoreSignature,
    calibration_for,
    fit_encoder_to,
    one_sample_batches,
    probe_cores,
)
from ..calibration.sources import CalibrationSample, read_samples, split_samples
from ..errors import PCError
from ..model.load import LoadedModel
from ..model.locate import DecoderLayout, block_units, find_decoder, replaced_layers
from ..progress import WorkProgress
from ..scoring.embedding import pooling_mode
from .bottom_up import FITTED, fit_variant, make_compensation, residual_maps
from .compensation import LinearCompensation
from .config import PruneConfig
from .error import held_out_error
from .heal import HealReport, TrainedNorms, heal_, norm_parameters
from .placement import resolve_k
from .profile import ProfileConfig, profile_samples
from .swap import CoreSwap
from .task_score import pairs_mrr


@dataclass
class PruneResult:
    """What was done and what it cost; ``to_manifest`` is ``prune_manifest.json``."""

    pruned_layers: list[int]
    previously_pruned: list[int]
    scores: dict[int, float]
    init: str
    unit: str
    k: int
    order: str
    ridge: float
    bias: bool
    rank: int | None
    signatures: dict[int, CoreSignature]
    error: dict[str, dict[str, float]]
    heal: dict[str, Any] | None
    parameters: dict[str, int]
    kv_cache_bytes_per_token: dict[str, int] | None
    calibration: dict[str, Any]
    decoder: dict[str, Any]
    model_class: str
    # ``--stack both``: the manifests of the rounds on the other stack, run first in the same call
    # (the encoder's); this result is the decoder's round
    earlier_stacks: list[dict[str, Any]] = field(default_factory=list)

    def to_manifest(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = 1
        data["scores"] = {str(k): v for k, v in self.scores.items()}
        data["signatures"] = {str(k): asdict(v) for k, v in self.signatures.items()}
        return data


def check_choice(layout: DecoderLayout, model: nn.Module, config: PruneConfig) -> int:
    """Validate ``k`` / ``layers`` before any forward pass; returns the number of layers to drop."""
    name = type(model).__name__
    replaced = replaced_layers(layout)
    if config.layers is None:
        k = resolve_k(config.k, len(layout.prunable_layers) - len(replaced), name, minimum=1)
    else:
        k = _check_layers(config.layers, layout, name, replaced)
    cached = len(layout.attention_layers) - len(replaced)  # a kept bias owner keeps its cache too
    if k >= cached and layout.caches and _generates(model):
        units = "blocks" if layout.unit == "block" else "attention layers"
        raise PCError(
            f"pruning all {cached} remaining {units} of {name} leaves no layer with a KV cache, and generate needs one",
            f"prune at most {cached - 1} {units}",
        )
    return k


def _check_layers(layers: list[int], layout: DecoderLayout, name: str, replaced: list[int]) -> int:
    n = layout.num_layers
    if not layers:
        raise PCError("--layers is empty", "name at least one layer index")
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise PCError(f"unknown layer index {bad[0]}: {name} has {n} decoder layers (0–{n - 1})", "fix --layers")
    if len(set(layers)) != len(layers):
        raise PCError(f"--layers repeats a layer: {layers}", "name each layer once")
    plain = [i for i in layers if i not in layout.attention_layers]
    if plain:
        raise PCError(
            f"layer {plain[0]} of {name} has no attention (a hybrid stack)",
            f"choose among the attention layers {layout.attention_layers}",
        )
    owners = set(layout.bias_owners)  # walks every block's modules: once, not once per named layer
    kept = [i for i in layers if i in owners]
    if kept:
        raise PCError(
            f"layer {kept[0]} of {name} computes the relative position bias the other layers reuse "
            "(its attention holds relative_attention_bias), so it cannot be dropped",
            f"choose among the layers {[i for i in layout.attention_layers if i not in owners and i not in replaced]}",
        )
    again = [i for i in layers if i in replaced]
    if again:
        raise PCError(
            f"layer {again[0]} of {name} is already pruned (its attention is a compensation)",
            f"choose among the layers that still have attention: "
            f"{[i for i in layout.attention_layers if i not in replaced]}",
        )
    return len(layers)


def _generates(model: nn.Module) -> bool:
    return bool(getattr(model, "can_generate", lambda: False)())


def choose_layers(config: PruneConfig, k: int, ranking: list[int] | None, replaced: list[int]) -> list[int]:
    if config.layers is not None:
        return sorted(config.layers)
    assert ranking is not None
    return sorted([i for i in ranking if i not in replaced][:k])


def _healed(
    model: nn.Module,
    layout: DecoderLayout,
    swap: CoreSwap,
    start: dict[int, LinearCompensation],
    signatures: dict[int, CoreSignature],
    encoder: BatchEncoder,
    fit: list[CalibrationSample],
    config: PruneConfig,
    norms: TrainedNorms,
    work: WorkProgress | None = None,
    task_score: Callable[[nn.Module], float] | None = None,
) -> tuple[dict[int, LinearCompensation], HealReport]:
    """Copies of the ``start`` maps, healed on the fitting samples; the last tenth of them (never
    trained on by the heal) drives early stopping, so the held-out error report stays unseen.
    From ``none`` (no maps) the heal starts from zero-initialised linear maps."""
    import copy

    modules = {}
    for layer, module in start.items():
        if module.kind == "none":
            module = make_compensation(signatures[layer], "zero", config.rank, config.bias)
            reference = next(swap.originals[layer].parameters())
            module = module.to(device=reference.device, dtype=reference.dtype)
        modules[layer] = copy.deepcopy(module)
    if len(fit) < 2:
        raise PCError("healing needs at least two fitting samples", "pass more calibration samples")
    n_val = max(1, len(fit) // 10)
    heal_fit, heal_val = fit[:-n_val], fit[-n_val:]
    report = heal_(
        model,
        layout,
        swap,
        modules,
        encoder,
        heal_fit,
        heal_val,
        config.heal,
        config.show_progress,
        work,
        norms,
        task_score,
    )
    return modules, report


KV_NAMES = ("k_proj", "v_proj", "key", "value", "k_lin", "v_lin")
FUSED_NAMES = ("qkv_proj", "query_key_value", "c_attn", "qkv", "Wqkv")


def _heads(core: nn.Module, model: nn.Module) -> tuple[int | None, int | None, int | None]:
    """(query heads, key/value heads, head width) of a fused-projection core, from its attributes
    or, where it keeps none, the model's (text) config."""
    config = getattr(core, "config", None) or getattr(model.config, "text_config", None) or model.config
    heads = getattr(core, "num_heads", None) or getattr(config, "num_attention_heads", None)
    kv = getattr(core, "num_key_value_heads", None) or getattr(config, "num_key_value_heads", None) or heads
    width = getattr(core, "head_dim", None) or getattr(config, "head_dim", None)
    return heads, kv, width


def kv_bytes_per_token(model: nn.Module, layout: DecoderLayout, layers: range | list[int]) -> int:
    """Bytes of keys and values one token adds to the cache of ``layers``: the output widths of
    separate key/value projections, or, for a fused q/k/v projection, its width minus the queries'
    (``(heads + 2·kv_heads)·head_dim`` wide, of which ``2·kv_heads·head_dim`` are cached); for
    multi-head latent attention (DeepSeek-V2/V3, Kimi, Mistral 4) the compressed latent that
    transformers caches, ``kv_lora_rank + qk_rope_head_dim`` (``kv_a_proj_with_mqa``'s width)."""
    total = 0
    for index in layers:
        core = layout.core(index)
        children = dict(core.named_children())
        latent = children.get("kv_a_proj_with_mqa")
        if isinstance(latent, nn.Linear):  # multi-head latent attention caches the compressed latent
            total += latent.out_features * latent.weight.element_size()
            continue
        separate = [children[n] for n in KV_NAMES if isinstance(children.get(n), nn.Linear)]
        if separate:
            total += sum(p.out_features * p.weight.element_size() for p in separate)
            continue
        fused = next((children[n] for n in FUSED_NAMES if n in children), None)
        if fused is None or not hasattr(fused, "weight"):
            continue
        out = fused.out_features if isinstance(fused, nn.Linear) else fused.weight.shape[-1]  # GPT-2's Conv1D
        heads, kv, width = _heads(core, model)
        if heads and kv and width and (heads + 2 * kv) * width == out:
            total += 2 * kv * width * fused.weight.element_size()
        else:  # equal heads: a third each for q, k, v
            total += (2 * out // 3) * fused.weight.element_size()
    return total


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _profile_config(config: PruneConfig, k: int) -> ProfileConfig:
    """The profile a prune runs to rank its units: same calibration, place and unit, no timing."""
    return ProfileConfig(
        k=k,
        calibration=config.calibration,
        time_layers=False,
        show_progress=config.show_progress,
        decoder=config.decoder,
        stack=config.stack,
        unit=config.unit,
    )


def _prune_both_stacks(
    model: nn.Module, encoder: BatchEncoder, samples: list[CalibrationSample], config: PruneConfig
) -> PruneResult:
    """``--stack both`` on an encoder–decoder: profile the encoder's and the decoder's units on the
    same fitting samples, drop the K with the highest residual cosine over both stacks, and prune
    one stack after the other, the encoder first, so that the decoder's compensation is fitted on
    what the pruned encoder feeds its cross-attention (bottom-up across the stacks). Returns the
    decoder's round, with the encoder's manifest in ``earlier_stacks``; the held-out error report
    is the decoder round's (its variants, with the encoder already pruned)."""
    name = type(model).__name__  # (--layers / --decoder / --profile with both: refused by PruneConfig)
    fit, _ = split_samples(samples, config.held_out)
    if not fit:
        raise PCError("no calibration samples left to fit on", "pass more samples or a smaller held-out share")
    candidates: list[tuple[float, str, int]] = []
    for stack in ("encoder", "decoder"):
        result = profile_samples(model, encoder, fit, _profile_config(replace(config, stack=stack), k=0))
        done = set(result.replaced)
        candidates += [(layer.cosine_mean, stack, layer.index) for layer in result.layers if layer.index not in done]
    k = resolve_k(config.k, len(candidates), name, minimum=1)
    chosen: dict[str, dict[int, float]] = {"encoder": {}, "decoder": {}}
    for cosine, stack, index in sorted(candidates, key=lambda c: -c[0])[:k]:
        chosen[stack][index] = cosine
    rounds = []
    for stack in ("encoder", "decoder"):
        if chosen[stack]:
            result = prune_samples(model, encoder, samples, replace(config, stack=stack, layers=sorted(chosen[stack])))
            result.scores = dict(sorted(chosen[stack].items()))
            rounds.append(result)
    rounds[-1].earlier_stacks = [r.to_manifest() for r in rounds[:-1]]
    return rounds[-1]  # (the encoder's alone when every chosen unit sits in the encoder)


def prune_samples(
    model: nn.Module, encoder: BatchEncoder, samples: list[CalibrationSample], config: PruneConfig
) -> PruneResult:
    """``prune_`` on already-read samples: the core of the public function."""
    if config.stack == "both":
        return _prune_both_stacks(model, encoder, samples, config)
    attention_layout = find_decoder(model, config.decoder, config.stack)
    layout = block_units(attention_layout) if config.unit == "block" else attention_layout
    k = check_choice(layout, model, config)  # before any forward pass
    task_score = None
    if config.heal.steps > 0 and config.heal.select_pairs is not None:  # a bad file fails before any forward
        task_score = pairs_mrr(
            encoder.tokenizer, config.heal.select_pairs, config.heal.pooling or "mean", max_length=encoder.max_length
        )
    fit_encoder_to(encoder, model, layout)
    calibration = one_sample_batches(model, layout, encoder, samples, config.calibration)
    if calibration is not config.calibration:
        config = replace(config, calibration=calibration, heal=replace(config.heal, batch_size=1))
    replaced = replaced_layers(layout)
    fit, held = split_samples(samples, config.held_out)
    if not fit:
        raise PCError("no calibration samples left to fit on", "pass more samples or a smaller held-out share")
    if config.rank is not None and config.rank < 1:
        raise PCError(f"--rank must be at least 1, got {config.rank}", "pass a positive rank or leave it out")
    names = list(dict.fromkeys([*config.compare, config.init]))
    fitted_passes = sum(name in FITTED for name in names) * (k if config.order == "bottom-up" else 1)
    needs_profile = config.layers is None and config.profile is None
    total = len(fit) * (fitted_passes + needs_profile) + len(held) + config.heal.steps * config.heal.batch_size
    with WorkProgress(total, "pruning", enabled=config.show_progress) as work:
        ranking, scores_by_layer = None, {}
        if config.layers is None:
            result = config.profile
            if result is None:
                result = profile_samples(model, encoder, fit, _profile_config(config, k), layout, work=work)
            elif [layer.index for layer in result.layers] != layout.attention_layers or (
                result.model_class != type(model).__name__
            ):
                raise PCError(
                    f"the profile is for {result.model_class} with {len(result.layers)} {result.unit} units, "
                    f"not {type(model).__name__} with {len(layout.attention_layers)}",
                    "profile this model with `pc profile` first",
                )
            elif result.unit != config.unit:
                raise PCError(
                    f"the profile ranks {result.unit} units, not {config.unit} units",
                    f"profile with `pc profile --unit {config.unit}`, or prune with --unit {result.unit}",
                )
            ranking = result.ranking
            scores_by_layer = {layer.index: layer.cosine_mean for layer in result.layers}
        layers = choose_layers(config, k, ranking, replaced)
        params_before = _count(model)
        kv_before = kv_bytes_per_token(model, attention_layout, attention_layout.attention_layers)
        kept = [i for i in attention_layout.attention_layers if i not in layers]
        already = set(replaced_layers(attention_layout))
        live_attention = [i for i in kept if i not in already]
        if config.unit == "block" and not live_attention and layout.caches and _generates(model):
            raise PCError(
                f"dropping blocks {layers} leaves {type(model).__name__} no block with attention, "
                "and generate needs one",
                "prune fewer blocks, or name them with --layers",
            )
        probe = encoder(probe_batch(fit, config.calibration.batch_size))
        signatures = probe_cores(model, layout, layers, probe)
        for layer in layers:
            sig = signatures[layer]
            if config.rank is not None and config.rank >= min(sig.dim_in, sig.dim_out):
                raise PCError(
                    f"--rank {config.rank} is not below the layer width {min(sig.dim_in, sig.dim_out)}",
                    "use a smaller rank, or none for a full W",
                )
        maps = residual_maps(model, layout, layers, probe)
        swap = CoreSwap(model, layout, layers)
        variants = {
            name: fit_variant(model, layout, swap, layers, signatures, maps, name, encoder, fit, config, work)
            for name in names
        }
        heal_report = None
        norms = TrainedNorms(norm_parameters(layout, layers, config.heal) if config.heal.steps > 0 else [])
        if config.heal.steps > 0:
            variants["heal"], heal_report = _healed(
                model, layout, swap, variants[config.init], signatures, encoder, fit, config, norms, work, task_score
            )
        error: dict[str, dict[str, float]] = {}
        if held:
            batch_size = config.calibration.batch_size
            error = held_out_error(
                model,
                layout,
                swap,
                variants,
                encoder,
                held,
                batch_size,
                config.show_progress,
                work,
                original_norms=norms.as_original,
            )
    chosen = "heal" if heal_report is not None else config.init
    for layer, module in variants[chosen].items():
        module.dropped_params = [name for name, _ in swap.originals[layer].named_parameters()]
    swap.install(variants[chosen])
    has_cache = layout.caches and _generates(model)
    kv = {"before": kv_before, "after": kv_bytes_per_token(model, attention_layout, kept)}
    return PruneResult(
        pruned_layers=layers,
        previously_pruned=replaced,
        scores={i: scores_by_layer[i] for i in layers if i in scores_by_layer},
        init=config.init,
        unit=config.unit,
        k=len(layers),
        order=config.order,
        ridge=config.ridge,
        bias=config.bias,
        rank=config.rank,
        signatures=signatures,
        error=error,
        heal=heal_report.to_dict() if heal_report is not None else None,
        parameters={"before": params_before, "after": _count(model)},
        kv_cache_bytes_per_token=kv if has_cache else None,
        calibration={
            "source": config.calibration.source,
            "n_fit": len(fit),
            "n_held_out": len(held),
            "max_length": config.calibration.max_length,
            "seed": config.calibration.seed,
        },
        decoder={
            "blocks": layout.blocks_path,
            "num_layers": layout.num_layers,
            "attention_layers": layout.attention_layers,
            "core_names": layout.core_names,
            "caches": layout.caches,
        },
        model_class=type(model).__name__,
    )


def prune_(
    loaded: LoadedModel, config: PruneConfig | None = None, samples: list[CalibrationSample] | None = None
) -> PruneResult:
    """Prune ``loaded.model`` in place (see module docstring) and return what was done.

    ``samples``: a list built by the caller is used as given; without it ``config.calibration`` is
    read (``read_samples``), and samples read from the embedded default become image + text for a
    model that takes images (``calibration.sources.for_model``)."""
    config = config or PruneConfig()
    if config.heal.select_pairs is not None and config.heal.pooling is None:  # embed as the model is used
        config = replace(config, heal=replace(config.heal, pooling=pooling_mode(loaded.local_dir)))
    encoder = BatchEncoder(loaded.processor, config.calibration.max_length)
    if samples is None:
        samples = read_samples(config.calibration)
    samples = calibration_for(loaded.model, encoder, config.calibration, samples)
    return prune_samples(loaded.model, encoder, samples, config)
