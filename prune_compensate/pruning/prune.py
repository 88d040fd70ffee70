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
from .bottom_up import FITTED, fit_variant, residual_maps
from .compensation import LinearCompensation, make_compensation
from .config import PruneConfig
from .drop_one import DROP_ONE_SAMPLES
from .error import held_out_error
from .heal import HealReport, TrainedBase, check_teacher_top_k, heal_, trained_base
from .merged import check_mergeable
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
    first = 1 if "merged" in (config.init, *config.compare) else 0  # a merged map needs an MLP below
    return sorted([i for i in ranking if i not in replaced and i >= first][:k])


def _healed(
    model: nn.Module,
    layout: DecoderLayout,
    swap: CoreSwap,
    start: dict[int, LinearCompensation],
    signatures: dict[int, CoreSignature],
    encoder: BatchEncoder,
    fit: list[CalibrationSample],
    config: PruneConfig,
    base: TrainedBase,
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
        base,
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
        ranking=config.ranking,
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


def _ranking(
    model: nn.Module,
    encoder: BatchEncoder,
    fit: list[CalibrationSample],
    config: PruneConfig,
    k: int,
    layout: DecoderLayout,
    work: WorkProgress,
) -> tuple[list[int] | None, dict[int, float]]:
    """The ranking the K layers are taken from, and each layer's score: none for ``layers``; a saved
    profile, checked against the model; or a fresh profile of the fitting samples."""
    if config.layers is not None:
        return None, {}
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
    if result.ranked_by == "drop-one":
        return result.ranking, {layer.index: layer.drop_one for layer in result.layers if layer.drop_one is not None}
    return result.ranking, {layer.index: layer.cosine_mean for layer in result.layers}


def _check_layers_fit(
    model: nn.Module, layout: DecoderLayout, attention: DecoderLayout, layers: list[int], config: PruneConfig
) -> None:
    """Refuse, before any fit, dropping blocks that leave a generating model no attention."""
    already = set(replaced_layers(attention))
    live = [i for i in attention.attention_layers if i not in layers and i not in already]
    if config.unit == "block" and not live and layout.caches and _generates(model):
        raise PCError(
            f"dropping blocks {layers} leaves {type(model).__name__} no block with attention, and generate needs one",
            "prune fewer blocks, or name them with --layers",
        )


def _check_rank(config: PruneConfig, signatures: dict[int, CoreSignature]) -> None:
    """``rank`` below every chosen layer's width (known once the cores are probed, before any fit)."""
    for sig in signatures.values():
        if config.rank is not None and config.rank >= min(sig.dim_in, sig.dim_out):
            raise PCError(
                f"--rank {config.rank} is not below the layer width {min(sig.dim_in, sig.dim_out)}",
                "use a smaller rank, or none for a full W",
            )


@dataclass
class _Fitted:
    """Every compared init's maps (and the healed ones), their held-out error, the heal's report."""

    swap: CoreSwap
    signatures: dict[int, CoreSignature]
    variants: dict[str, dict[int, LinearCompensation]]
    error: dict[str, dict[str, float]]
    heal: HealReport | None


def _fitted(
    model: nn.Module,
    layout: DecoderLayout,
    layers: list[int],
    encoder: BatchEncoder,
    fit: list[CalibrationSample],
    held: list[CalibrationSample],
    config: PruneConfig,
    work: WorkProgress,
    task_score: Callable[[nn.Module], float] | None,
) -> _Fitted:
    """Probe the chosen cores, fit each init bottom-up, heal the chosen one when asked, and measure
    every variant's held-out error against the original (the model is left with its originals)."""
    probe = encoder(probe_batch(fit, config.calibration.batch_size))
    signatures = probe_cores(model, layout, layers, probe)
    _check_rank(config, signatures)
    maps = residual_maps(model, layout, layers, probe)
    swap = CoreSwap(model, layout, layers)
    names = list(dict.fromkeys([*config.compare, config.init]))
    if "merged" in names:
        check_mergeable(model, layout, layers, probe, maps)
    variants = {
        name: fit_variant(model, layout, swap, layers, signatures, maps, name, encoder, fit, config, work)
        for name in names
    }
    heal_report = None
    base = trained_base(layout, layers, config.heal) if config.heal.steps > 0 else TrainedBase([], [])
    if config.heal.steps > 0:
        variants["heal"], heal_report = _healed(
            model, layout, swap, variants[config.init], signatures, encoder, fit, config, base, work, task_score
        )
    error: dict[str, dict[str, float]] = {}
    if held:
        batch_size, progress = config.calibration.batch_size, config.show_progress
        error = held_out_error(
            model, layout, swap, variants, encoder, held, batch_size, progress, work, original_base=base.as_original
        )
    return _Fitted(swap, signatures, variants, error, heal_report)


def _task_score(encoder: BatchEncoder, config: PruneConfig) -> Callable[[nn.Module], float] | None:
    """The heal's step selection on the user's pairs (read now: a bad file fails before any forward)."""
    if config.heal.steps == 0 or config.heal.select_pairs is None:
        return None
    pooling = config.heal.pooling or "mean"
    return pairs_mrr(encoder.tokenizer, config.heal.select_pairs, pooling, max_length=encoder.max_length)


def prune_samples(
    model: nn.Module, encoder: BatchEncoder, samples: list[CalibrationSample], config: PruneConfig
) -> PruneResult:
    """``prune_`` on already-read samples: the core of the public function."""
    if config.stack == "both":
        return _prune_both_stacks(model, encoder, samples, config)
    attention_layout = find_decoder(model, config.decoder, config.stack)
    layout = block_units(attention_layout) if config.unit == "block" else attention_layout
    k = check_choice(layout, model, config)  # before any forward pass
    check_teacher_top_k(model, config.heal)
    task_score = _task_score(encoder, config)
    fit_encoder_to(encoder, model, layout)
    calibration = one_sample_batches(model, layout, encoder, samples, config.calibration)
    if calibration is not config.calibration:
        config = replace(config, calibration=calibration, heal=replace(config.heal, batch_size=1))
    replaced = replaced_layers(layout)
    fit, held = split_samples(samples, config.held_out)
    if not fit:
        raise PCError("no calibration samples left to fit on", "pass more samples or a smaller held-out share")
    fitted_passes = sum(name in FITTED for name in {*config.compare, config.init})
    fitted_passes *= k if config.order == "bottom-up" else 1
    needs_profile = config.layers is None and config.profile is None
    drop_one = min(len(fit), DROP_ONE_SAMPLES) if needs_profile and config.ranking == "drop-one" else 0
    heal_samples = config.heal.steps * config.heal.batch_size
    if config.heal.steps and config.heal.teacher_top_k:  # the teacher's one pass over the heal's samples
        heal_samples += len(fit)
    total = len(fit) * (fitted_passes + needs_profile) + drop_one + len(held) + heal_samples
    with WorkProgress(total, "pruning", enabled=config.show_progress) as work:
        ranking, scores = _ranking(model, encoder, fit, config, k, layout, work)
        layers = choose_layers(config, k, ranking, replaced)
        params_before = _count(model)
        kv_before = kv_bytes_per_token(model, attention_layout, attention_layout.attention_layers)
        _check_layers_fit(model, layout, attention_layout, layers, config)
        fitted = _fitted(model, layout, layers, encoder, fit, held, config, work, task_score)
    chosen = "heal" if fitted.heal is not None else config.init
    for layer, module in fitted.variants[chosen].items():
        module.dropped_params = [name for name, _ in fitted.swap.originals[layer].named_parameters()]
    fitted.swap.install(fitted.variants[chosen])
    kept = [i for i in attention_layout.attention_layers if i not in layers]
    kv = {"before": kv_before, "after": kv_bytes_per_token(model, attention_layout, kept)}
    return PruneResult(
        pruned_layers=layers,
        previously_pruned=replaced,
        scores={i: scores[i] for i in layers if i in scores},
        init=config.init,
        unit=config.unit,
        k=len(layers),
        order=config.order,
        ridge=config.ridge,
        bias=config.bias,
        rank=config.rank,
        signatures=fitted.signatures,
        error=fitted.error,
        heal=fitted.heal.to_dict() if fitted.heal is not None else None,
        parameters={"before": params_before, "after": _count(model)},
        kv_cache_bytes_per_token=kv if layout.caches and _generates(model) else None,
        calibration=_calibration_record(config, fit, held),
        decoder=_decoder_record(layout),
        model_class=type(model).__name__,
    )


def _calibration_record(config: PruneConfig, fit: list, held: list) -> dict[str, Any]:
    calibration = config.calibration
    return {
        "source": calibration.source,
        "n_fit": len(fit),
        "n_held_out": len(held),
        "max_length": calibration.max_length,
        "seed": calibration.seed,
    }


def _decoder_record(layout: DecoderLayout) -> dict[str, Any]:
    return {
        "blocks": layout.blocks_path,
        "num_layers": layout.num_layers,
        "attention_layers": layout.attention_layers,
        "core_names": layout.core_names,
        "caches": layout.caches,
    }


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
