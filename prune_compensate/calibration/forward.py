"""Stream calibration batches through a model with hooks that feed running statistics.

``DecoderTaps`` is the one place hooks are registered; it is a context manager and always removes
them. Per layer it can hand out (a) the residual stream before and after the attention sub-block
(for the cosine profile) and across the whole block, (b) the input and output of the unit's core
(for fitting a compensation: the attention core, or for whole-block units the block's input and
residual update), (c) wall-clock time of the core and of the whole block. Every tensor it hands out is already
masked to real tokens, as ``(N, D)`` rows; nothing is kept past the callback.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..errors import PCError
from ..model.locate import (
    ChildTrace,
    DecoderLayout,
    ResidualSite,
    attention_layer_index,
    block_attributes,
    block_input,
    first_tensor,
    has_lm_head,
    record_child_order,
    residual_from_hook,
    residual_site_from_order,
)
from .encode import BatchEncoder, positions_mask, probe_batch, real_tokens
from .sources import CalibrationConfig, CalibrationSample, CalibrationWarning, for_model

ResidualCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
CoreCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class StopForward(Exception):
    """Raised from a hook to end a calibration forward once the last layer of interest ran."""


@dataclass
class TokenMask:
    """The real (non-padding) tokens of the current batch, ``(B, T)`` bool, and their positions
    counted from each sample's first real token (so left and right padding align alike)."""

    mask: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def set(self, attention_mask: torch.Tensor) -> None:
        self.mask = attention_mask.bool()
        self.positions = (self.mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def rows(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(N, D)`` rows of real tokens. A stack that runs on more positions than
        the batch has (a model that inserts some inside its forward) has the mask stretched once
        per batch by ``positions_mask``."""
        assert self.mask is not None
        if hidden.dim() == 2:  # some cores flatten (B*T, D)
            hidden = hidden.view(self.mask.shape[0], -1, hidden.shape[-1])
        if hidden.dim() == 4:  # Gemma 3n's AltUp: (streams, B, T, D), several residual streams per token
            raise PCError(
                f"the stack carries {hidden.shape[0]} residual streams per token (hidden states of shape "
                f"{tuple(hidden.shape)}, AltUp-style blocks): a linear replacement of one attention has no "
                "single residual to act on",
                "this architecture is not supported; prune a model whose blocks keep one residual stream",
            )
        if hidden.shape[1] != self.mask.shape[1]:
            self.set(positions_mask(self.mask, hidden.shape[1]))
        return hidden[self.mask.to(hidden.device)]

    def row_positions(self) -> torch.Tensor:
        assert self.mask is not None and self.positions is not None
        return self.positions[self.mask]


@dataclass
class LayerTimes:
    core_seconds: float = 0.0
    block_seconds: float = 0.0


@dataclass
class DecoderTaps:
    """Hooks on the text decoder, configured by which callbacks and layers are wanted."""

    layout: DecoderLayout
    token_mask: TokenMask
    sites: list[ResidualSite | None] | None = None
    on_residual: ResidualCallback | None = None
    residual_layers: set[int] | None = None
    on_core: CoreCallback | None = None
    core_layers: set[int] = field(default_factory=set)
    on_block_input: Callable[[int, torch.Tensor], None] | None = None
    on_block: ResidualCallback | None = None  # every block's input and output rows
    time_layers: bool = False
    stop_after: int | None = None
    times: list[LayerTimes] = field(init=False)

    def __post_init__(self) -> None:
        self.times = [LayerTimes() for _ in range(self.layout.num_layers)]
        self._handles: list[Any] = []
        self._before: dict[int, torch.Tensor] = {}
        self._after: dict[int, torch.Tensor] = {}
        self._block_in: dict[int, torch.Tensor] = {}
        self._clock: dict[int, float] = {}
        self.timing_enabled = self.time_layers

    def _now(self, tensor: torch.Tensor | None = None) -> float:
        if tensor is not None and tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)
        return time.perf_counter()

    def _wants_residual(self, index: int) -> bool:
        if self.layout.core_names[index] is None:  # no attention in this block of a hybrid stack
            return False
        return self.on_residual is not None and (self.residual_layers is None or index in self.residual_layers)

    def _register(self, index: int) -> None:
        block = self.layout.blocks[index]
        block_unit = self.layout.unit == "block"
        if block_unit:  # the unit is the block itself: its hooks must run before the block's stop
            self._register_core(index)
        site = self.sites[index] if self.sites is not None and self._wants_residual(index) else None
        # The residual after the unit is the block's output: a whole block, or an attention that is
        # its block's last child (Nemotron-H); no hook of its own, which would run after block_post.
        after_is_output = block_unit or (site is not None and site.module == "")

        def block_pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = block_input(args, kwargs)
            if self._wants_residual(index):
                self._before[index] = hidden
            if self.on_block_input is not None and index in self.core_layers:
                self.on_block_input(index, self.token_mask.rows(hidden))
            if self.on_block is not None:
                self._block_in[index] = hidden
            if self.timing_enabled:
                self._clock[index] = self._now(hidden)

        def block_post(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self.timing_enabled and index in self._clock:
                hidden = block_input(args, kwargs)
                self.times[index].block_seconds += self._now(hidden) - self._clock.pop(index)
            if self.on_block is not None and index in self._block_in:
                output_rows = self.token_mask.rows(first_tensor(output))
                self.on_block(index, self.token_mask.rows(self._block_in.pop(index)), output_rows)
            if self._wants_residual(index):
                before = self._before.pop(index)
                after = first_tensor(output) if after_is_output else self._after.pop(index)
                assert self.on_residual is not None and after is not None
                self.on_residual(index, self.token_mask.rows(before), self.token_mask.rows(after))
            if self.stop_after is not None and index >= self.stop_after:
                raise StopForward

        self._handles.append(block.register_forward_pre_hook(block_pre, with_kwargs=True))
        self._handles.append(block.register_forward_hook(block_post, with_kwargs=True))
        if block_unit:
            return

        if self._wants_residual(index) and not after_is_output:
            assert site is not None
            at_site = site

            def site_hook(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                self._after[index] = residual_from_hook(at_site, args, kwargs, output, self._before.get(index))

            self._handles.append(block.get_submodule(site.module).register_forward_hook(site_hook, with_kwargs=True))
        self._register_core(index)

    def _register_core(self, index: int) -> None:
        """Hooks on a unit's core: its input and output for ``on_core`` (for a whole block, the
        output handed out is the block's residual update, output − input), and its time."""
        if self.layout.core_names[index] is None:
            return
        block_unit = self.layout.unit == "block"
        core = self.layout.core(index)
        wants_core = self.on_core is not None and index in self.core_layers
        if self.timing_enabled or wants_core:

            def core_pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
                if self.timing_enabled:
                    self._clock[-1 - index] = self._now(block_input(args, kwargs))

            def core_post(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                hidden = block_input(args, kwargs)
                if self.timing_enabled and (-1 - index) in self._clock:
                    self.times[index].core_seconds += self._now(hidden) - self._clock.pop(-1 - index)
                if wants_core:
                    out = output[0] if isinstance(output, tuple) else output
                    if block_unit:
                        out = out - hidden
                    assert self.on_core is not None
                    self.on_core(
                        index,
                        self.token_mask.rows(hidden),
                        self.token_mask.rows(out),
                        self.token_mask.row_positions(),
                    )

            self._handles.append(core.register_forward_pre_hook(core_pre, with_kwargs=True))
            self._handles.append(core.register_forward_hook(core_post, with_kwargs=True))

    def __enter__(self) -> DecoderTaps:
        try:
            for index in range(self.layout.num_layers):
                self._register(index)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._before.clear()
        self._after.clear()
        self._block_in.clear()
        self._clock.clear()

    def __exit__(self, *exc: object) -> None:
        self.remove()


def model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def move_inputs(inputs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Inputs on the model's device; floating inputs (pixel values) in the model's dtype, since
    some image processors emit bfloat16 or float32 whatever the model runs in."""
    device = model_device(model)
    dtype = next(model.parameters()).dtype
    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved


@functools.lru_cache(maxsize=64)
def _signature_of(function: Any) -> inspect.Signature:
    return inspect.signature(function)


def forward_parameters(model: nn.Module) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``model.forward``, read once per forward function (the calibration and
    heal loops ask on every batch)."""
    forward = model.forward
    function = getattr(forward, "__func__", None)
    if function is None:  # a plain function set on the instance (a hook wrapper): no caching
        return inspect.signature(forward).parameters
    parameters = dict(_signature_of(function).parameters)
    parameters.pop(next(iter(parameters)), None)  # self
    return parameters


def forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """Extra forward arguments that make calibration forwards cheaper without changing hidden states."""
    params = forward_parameters(model)
    extra: dict[str, Any] = {}
    if "use_cache" in params:
        extra["use_cache"] = False
    if "logits_to_keep" in params:
        extra["logits_to_keep"] = 1
    return extra


def run_forward(model: nn.Module, inputs: dict[str, torch.Tensor], token_mask: TokenMask) -> None:
    """One calibration forward; ``StopForward`` from a hook ends it early by design."""
    token_mask.set(real_tokens(inputs))
    moved = move_inputs(inputs, model)
    try:
        with torch.inference_mode():
            model(**moved, **forward_kwargs(model))
    except StopForward:
        pass


# Forward arguments through which a model takes something other than text (image pixels or
# patches, precomputed image features, layout boxes): a model that accepts one may need it.
NON_TEXT_INPUTS = ("pixel_values", "flattened_patches", "image_embeds", "pixel_values_videos", "bbox")
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def required_non_text_inputs(model: nn.Module) -> list[str]:
    """The forward arguments of ``model`` without a default that are not text inputs."""
    return [
        name
        for name, p in forward_parameters(model).items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and name not in TEXT_INPUTS
    ]


def text_only_probe_error(
    model: nn.Module, encoder: BatchEncoder, errors: tuple[type[Exception], ...]
) -> Exception | None:
    """The error of one tiny text-only forward (one of ``errors``), or ``None`` when it runs."""
    try:
        run_forward(model, encoder([CalibrationSample("a", [], "text-only probe")]), TokenMask())
    except errors as err:
        return err
    return None


def model_needs_images(model: nn.Module, encoder: BatchEncoder) -> bool:
    """Whether ``model`` needs an image in every prompt: its processor refuses text alone
    (PaliGemma), its forward requires ``pixel_values`` (BLIP-2, InstructBLIP), or a one-sample
    text-only forward fails (Kosmos-2 asks for pixel values or image embeddings)."""
    if not encoder.has_images:
        return False
    if encoder.refuses_text_only() or "pixel_values" in required_non_text_inputs(model):
        return True
    return text_only_probe_error(model, encoder, (ValueError, TypeError, RuntimeError)) is not None


def text_only_failure(model: nn.Module, encoder: BatchEncoder) -> str | None:
    """Why ``model`` cannot run on text alone, or ``None`` when it can (or takes text only).

    Asked when no image processor came with the model (a folder without
    ``preprocessor_config.json``): the calibration is then text-only, and a model whose forward
    requires other inputs (BLIP's ``pixel_values``, PI0's ``state``) or refuses a text-only call
    naming one (IDEFICS, Pix2Struct, UDOP, vision encoder–decoders) would crash inside transformers
    mid-run.
    Text models are never probed: only a forward that accepts a non-text input gets one tiny
    text-only call."""
    required = required_non_text_inputs(model)
    if required:
        return f"its forward requires {', '.join(required)}"
    if not any(name in forward_parameters(model) for name in NON_TEXT_INPUTS):
        return None
    err = text_only_probe_error(model, encoder, (ValueError, TypeError))
    message = str(err).strip().splitlines()[0] if err is not None and str(err).strip() else ""
    # only a failure that names a non-text input: an encoder–decoder probed without its
    # decoder inputs (T5Gemma 2) fails for another reason and calibrates fine
    if err is not None and any(word in message.lower() for word in (*NON_TEXT_INPUTS, "image", "pixel", "patches")):
        return f"{type(err).__name__}: {message}"
    return None


def calibration_for(
    model: nn.Module, encoder: BatchEncoder, config: CalibrationConfig, samples: list[CalibrationSample]
) -> list[CalibrationSample]:
    """What ``profile`` and ``prune_`` calibrate on: ``samples`` checked against what the model
    needs (``check_images``) and, when they were read from the embedded default
    (``sources.SourceSamples``) and the model takes images, mixed with the embedded image samples
    (``for_model``). Reading is never done here: see ``sources.read_samples``."""
    if not encoder.has_images and (reason := text_only_failure(model, encoder)) is not None:
        raise PCError(
            f"{type(model).__name__} does not run on text alone ({reason}), and no image processor "
            "was loaded with it, so it cannot be calibrated",
            "load it from a folder or hub id that holds its image processor (preprocessor_config.json)",
        )
    needs_images = model_needs_images(model, encoder)
    return for_model(samples, config, encoder.has_images, needs_images, predicts_tokens=has_lm_head(model))


def feeds_decoder_text(model: nn.Module, layout: DecoderLayout) -> bool:
    """Whether the calibration text also goes to the located stack as decoder inputs: the stack
    cross-attends (the decoder of an encoder–decoder, Florence-2) and ``model.forward`` takes
    ``decoder_input_ids``. BLIP's text decoder cross-attends to the image yet reads ``input_ids``:
    decoder inputs would be ignored, and their mask taken for the stack's tokens."""
    return layout.cross_attends and "decoder_input_ids" in forward_parameters(model)


def takes_mm_token_types(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``mm_token_type_ids`` (which tokens are image, video or
    audio): models with multimodal rotary positions refuse image inputs without them, and a
    processor returns them only when asked unless its defaults say otherwise."""
    return "mm_token_type_ids" in forward_parameters(model)


def fit_encoder_to(encoder: BatchEncoder, model: nn.Module, layout: DecoderLayout) -> None:
    """Set what ``encoder`` sends beside the processor's usual output for ``model``: the text again
    as decoder inputs (``feeds_decoder_text``) and ``mm_token_type_ids`` (``takes_mm_token_types``)."""
    encoder.decoder_text = feeds_decoder_text(model, layout)
    encoder.mm_token_types = takes_mm_token_types(model)


def inserts_positions(
    model: nn.Module,
    layout: DecoderLayout,
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    batch_size: int,
) -> bool:
    """Whether ``model`` runs its stack on more positions than its input has (GIT prepends its image
    features inside its forward). Such a model is calibrated one sample per batch: rows of a padded
    batch could not be lined up with the inserted positions (``positions_mask``). One probe forward
    of the calibration's probe batch, stopped at the first block."""
    inputs = encoder(probe_batch(samples, batch_size))
    seen: list[int] = []

    def first_block(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = block_input(args, kwargs)
        if hidden.dim() == 3:
            seen.append(hidden.shape[1])
        raise StopForward

    handle = layout.blocks[0].register_forward_pre_hook(first_block, with_kwargs=True)
    try:
        run_forward(model, inputs, TokenMask())
    finally:
        handle.remove()
    return bool(seen) and seen[0] > real_tokens(inputs).shape[1]


def one_sample_batches(
    model: nn.Module,
    layout: DecoderLayout,
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    calibration: CalibrationConfig,
) -> CalibrationConfig:
    """``calibration`` with batch size 1, and a warning, when ``model`` inserts positions inside its
    forward (``inserts_positions``, probed once per encoder); else ``calibration`` itself."""
    if calibration.batch_size == 1:
        return calibration
    if encoder.stack_inserts_positions is None:
        encoder.stack_inserts_positions = inserts_positions(model, layout, encoder, samples, calibration.batch_size)
    if not encoder.stack_inserts_positions:
        return calibration
    warnings.warn(
        f"{type(model).__name__} inserts positions inside its forward (an image prefix), so it is "
        "calibrated one sample per batch",
        CalibrationWarning,
        stacklevel=2,
    )
    return replace(calibration, batch_size=1)


def find_residual_sites(
    model: nn.Module, layout: DecoderLayout, inputs: dict[str, torch.Tensor], token_mask: TokenMask
) -> list[ResidualSite | None]:
    """Run one probe forward, watching the order of each block's children, and locate the
    residual after attention in every block that has attention (``None`` for the others of a
    hybrid stack; see ``locate``). The probe doubles as warm-up. For whole-block units the
    residual after the unit is simply the block's output."""
    if layout.unit == "block":
        run_forward(model, inputs, token_mask)
        return [ResidualSite(module="", where="output", layout="block") for _ in layout.blocks]
    with _record_all(layout) as traces:
        run_forward(model, inputs, token_mask)
    return [
        residual_site_from_order(block, core_name, trace) if core_name is not None else None
        for block, core_name, trace in zip(layout.blocks, layout.core_names, traces, strict=True)
    ]


@contextmanager
def _record_all(layout: DecoderLayout) -> Iterator[list[ChildTrace]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(record_child_order(block)) for block in layout.blocks]


@dataclass
class CoreSignature:
    """What a core takes and returns: input/output feature sizes and the returned tuple's length
    (0 for a bare tensor), read off one real forward so replacements honour the same contract."""

    dim_in: int
    dim_out: int
    output_arity: int
    layer_idx: int | None
    unit: str = "attention"  # "block": the unit is a whole block (``BlockCompensation``)
    attributes: dict[str, Any] = field(default_factory=dict)  # a block's attributes its model's loop reads


def probe_cores(
    model: nn.Module, layout: DecoderLayout, indices: Iterable[int], inputs: dict[str, torch.Tensor]
) -> dict[int, CoreSignature]:
    """Run one forward and read the call/return signature of the chosen units' cores."""
    wanted = sorted(set(indices))
    found: dict[int, CoreSignature] = {}
    handles = []

    def make_hook(index: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            hidden = block_input(args, kwargs)
            out = output[0] if isinstance(output, tuple) else output
            arity = len(output) if isinstance(output, tuple) else 0
            if layout.unit == "block":
                block = layout.blocks[index]
                found[index] = CoreSignature(
                    hidden.shape[-1],
                    out.shape[-1],
                    arity,
                    attention_layer_index(block),
                    unit="block",
                    attributes=block_attributes(block),
                )
                return
            layer_idx = getattr(layout.core(index), "layer_idx", None)
            found[index] = CoreSignature(hidden.shape[-1], out.shape[-1], arity, layer_idx)

        return hook

    try:
        for index in wanted:
            handles.append(layout.core(index).register_forward_hook(make_hook(index), with_kwargs=True))
        run_forward(model, inputs, TokenMask())
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i in wanted if i not in found]
    if missing:
        raise PCError(f"attention of layers {missing} did not run on calibration inputs", "please report this model")
    return found
