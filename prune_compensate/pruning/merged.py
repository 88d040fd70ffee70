"""The merged map (``--init merged``): a dropped attention's compensation folded into the
down-projection of the MLP just below it, so the pruned model is a standard one with ``no_op``
attention layers (ReplaceMe's trick, applied to one layer at a time).

Why: in a pre-norm block the attention of layer l reads the residual ``h = r + m`` that the MLP of
layer l − 1 has just written (``m = act · W_dᵀ``, ``(..., D)``). Fitting the map on ``m`` instead of
the normed residual, ``a ≈ m T + b`` (``T`` ``(D, D)``, ``b`` ``(D,)``), lets it move into that
projection: ``m' = m (I + T) + b = act · W_dᵀ (I + T) + b``, so layer l − 1's down-projection becomes
a ``MergedProjection`` with weight ``W_dᵀ (I + T)`` ``(I, D)`` and bias ``b``, and the attention of
layer l becomes ``none`` (no compute, no KV cache). It is exact for the fitted map and keeps the
bias, which an engine adds as the down-projection's (llama.cpp's ``ffn_down.bias``): the map runs at
the ``no_op`` speed in an engine. It reads less than the linear-layer map (the MLP's output, not
the whole residual), so it fits a little worse; it is fitted bottom-up like the other inits.

Scope, checked on a real forward before any fit (``check_mergeable``): layer l ≥ 1 whose block
adds its attention output to the residual unchanged, below it a block whose output is its input
plus its attention output plus its MLP's output, the MLP ending in one ``nn.Linear`` from the MLP
width to the hidden width (Llama, Mistral, Qwen and the like; not Gemma's post-MLP norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..calibration.forward import CoreSignature, TokenMask, run_forward
from ..errors import PCError
from ..model.locate import DecoderLayout, block_input, first_tensor, is_norm
from .compensation import LinearCompensation, MergedProjection


class MergedCore(LinearCompensation):
    """The ``none`` core of a layer whose map is merged below it. It holds the fitted projection
    and where it goes (not as a submodule: the projection lives in the model at ``projection_path``),
    so that ``CoreSwap`` installs both together."""

    def __init__(
        self, dim_in: int, dim_out: int, projection_path: str, projection: MergedProjection, **kwargs: Any
    ) -> None:
        kwargs.update(kind="none", bias=False)
        super().__init__(dim_in, dim_out, **kwargs)
        self.projection_path = projection_path
        self._projection = (projection,)  # a tuple: not registered as this module's child

    @property
    def projection(self) -> MergedProjection:
        return self._projection[0]


def down_projection(block: nn.Module, core_name: str | None) -> tuple[str, nn.Linear]:
    """(dotted name in ``block``, module) of the MLP's output projection, found by structure: the one
    ``nn.Linear`` outside the attention core that maps a width other than the hidden one to it."""
    hidden = _hidden_width(block)
    found = [
        (name, m)
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear)
        and not (core_name and (name == core_name or name.startswith(core_name + ".")))
        and m.out_features == hidden
        and m.in_features != hidden
    ]
    if len(found) != 1:
        raise PCError(
            f"--init merged needs one MLP output projection per block; this block has {len(found)}",
            "use --init lstsq (the map as its own layer)",
        )
    return found[0]


def _hidden_width(block: nn.Module) -> int:
    """The residual width: what the block's first norm normalises."""
    norms = [m for m in block.modules() if is_norm(m) and getattr(m, "weight", None) is not None]
    if not norms:
        raise PCError("--init merged needs pre-norm blocks (this block has no norm)", "use --init lstsq")
    return int(norms[0].weight.shape[-1])


def merge(down: nn.Linear, transform: torch.Tensor, bias: torch.Tensor | None, layer: int) -> MergedProjection:
    """``down`` with ``m ↦ m (I + T) + b`` folded in: ``W = W_dᵀ (I + T)``, ``b' = b_d (I + T) + b``,
    computed in float64."""
    weight = down.weight.detach().double().T  # (I, D)
    eye = torch.eye(transform.shape[0], dtype=torch.float64, device=transform.device)
    step = eye + transform.double().to(weight.device)
    new_bias = torch.zeros(down.out_features, dtype=torch.float64, device=weight.device)
    if down.bias is not None:
        new_bias = down.bias.detach().double() @ step
    if bias is not None:
        new_bias = new_bias + bias.double().to(weight.device)
    module = MergedProjection(down.in_features, down.out_features, merged_layer=layer)
    module.load_solution(weight @ step, new_bias)
    return module.to(device=down.weight.device, dtype=down.weight.dtype)


def projection_path(layout: DecoderLayout, layer: int) -> str:
    """Where the map of ``layer`` is merged: the MLP output projection of the block below."""
    name, _ = down_projection(layout.blocks[layer - 1], layout.core_names[layer - 1])
    return f"{layout.blocks_path}.{layer - 1}.{name}"


def check_mergeable(
    model: nn.Module, layout: DecoderLayout, layers: list[int], inputs: dict[str, Any], maps: dict[int, Any]
) -> None:
    """Refuse, in one line and before any fit, a layer whose map cannot be merged (module doc): an
    attention output that is not added to the residual as it is (``maps``:
    ``bottom_up.residual_maps``), or a block below that is not ``x + attention + MLP`` with the MLP
    ending in its output projection (checked on one forward of ``inputs``). Layer 0 and whole
    blocks are ``PruneConfig``'s to refuse, before the model loads."""
    odd = [i for i in layers if maps[i].kind != "identity"]
    if odd:
        raise PCError(
            f"--init merged: layer {odd[0]}'s attention output enters the residual through its "
            f"{maps[odd[0]].kind} output map, not as it is",
            "use --init lstsq (the map as its own layer)",
        )
    assert layout.unit != "block" and 0 not in layers  # PruneConfig refuses both before the model loads
    below = sorted({i - 1 for i in layers})
    seen: dict[int, dict[str, torch.Tensor]] = {i: {} for i in below}
    handles = []

    def keep(index: int, key: str) -> Any:
        """Keeps the module's first output under ``key``; for ``"block"``, its input too (``"in"``)."""

        def hook(_m: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if key == "block":
                seen[index].setdefault("in", block_input(args, kwargs).detach().double())
            seen[index].setdefault(key, first_tensor(output).detach().double())

        return hook

    try:
        for i in below:
            block, core = layout.blocks[i], layout.core_names[i]
            name, projection = down_projection(block, core)
            handles.append(block.register_forward_hook(keep(i, "block"), with_kwargs=True))
            handles.append(projection.register_forward_hook(keep(i, "mlp"), with_kwargs=True))
            if core is not None:
                handles.append(block.get_submodule(core).register_forward_hook(keep(i, "attn"), with_kwargs=True))
        with torch.no_grad():
            run_forward(model, inputs, TokenMask())
    finally:
        for handle in handles:
            handle.remove()
    for i in below:
        parts = seen[i]
        if "block" not in parts or "mlp" not in parts:
            raise PCError(f"--init merged: layer {i}'s MLP did not run on a probe batch", "use --init lstsq")
        expected = parts["in"] + parts.get("attn", torch.zeros_like(parts["in"])) + parts["mlp"]
        out = parts["block"]
        scale = float(out.abs().max()) + 1e-12
        if expected.shape != out.shape or float((expected - out).abs().max()) > 1e-3 * scale:
            raise PCError(
                f"--init merged: block {i} is not input + attention + MLP projection (a norm after its MLP?)",
                "use --init lstsq (the map as its own layer)",
            )


@contextmanager
def projection_rows(
    model: nn.Module, layout: DecoderLayout, layers: list[int], token_mask: TokenMask, sink: Callable[[int, Any], None]
) -> Iterator[None]:
    """Hooks handing ``sink(layer, rows)`` the output rows ``(N, D)`` of the MLP projection below
    each of ``layers`` (what its merged map is fitted on), removed on exit."""
    handles = []

    def hook_for(layer: int) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            sink(layer, token_mask.rows(output))

        return hook

    try:
        for layer in layers:
            handles.append(model.get_submodule(projection_path(layout, layer)).register_forward_hook(hook_for(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def merged_core(
    model: nn.Module, layout: DecoderLayout, layer: int, sig: CoreSignature, transform: torch.Tensor, bias: Any
) -> MergedCore:
    """The ``none`` core of ``layer`` (signature ``sig``) holding its map merged into the projection
    below (``merge``); ``bias`` ``(D,)`` or None."""
    path = projection_path(layout, layer)
    down = model.get_submodule(path)
    assert isinstance(down, nn.Linear)  # the original: a merged projection is only installed after the fit
    projection = merge(down, transform, bias, layer)
    return MergedCore(sig.dim_in, sig.dim_out, path, projection, output_arity=sig.output_arity, layer_idx=sig.layer_idx)
