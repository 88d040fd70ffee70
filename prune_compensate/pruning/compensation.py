"""The module that stands in for a dropped attention core, and the one place modules are replaced.

``LinearCompensation`` returns ``x W + b`` of its own input ``x`` (the input the attention core
would have seen), so the residual stream gets a cheap linear estimate of what attention added.
It honours the replaced core's call contract (positional or keyword ``hidden_states``, any extra
keyword arguments) and return contract (a tuple ``(output, None, ...)`` of the same length as the
core returned, ``None`` for attention weights; or a bare tensor), and it stores nothing in the KV
cache: on the first call with a cache it turns that layer's cache slot into an ``EmptyCacheLayer``
(transformers' ``DummyLayer``), which the cache and the mask builders skip when they read the
sequence length (so pruning layer 0 still gives correct positions and masks during generation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.cache_utils import DummyLayer

if TYPE_CHECKING:
    from ..calibration.forward import CoreSignature

KINDS = ("linear", "lowrank", "none")


class LinearCompensation(nn.Module):
    """``y = x W + b`` with ``x`` ``(..., dim_in)`` and ``y`` ``(..., dim_out)``.

    ``kind``: ``"linear"`` (``weight`` ``(dim_in, dim_out)``), ``"lowrank"`` (``down``
    ``(dim_in, rank)`` then ``up`` ``(rank, dim_out)``), or ``"none"`` (outputs zeros: the layer's
    attention is dropped with no compensation). ``output_arity`` is the length of the tuple the
    replaced core returned (0: it returned a bare tensor). ``dropped_params`` names the replaced
    core's parameters, for the checkpoint (see ``checkpoint``).
    """

    replaces_attention = True  # what ``model.locate`` looks for (it never imports this module)

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        kind: str = "linear",
        rank: int | None = None,
        bias: bool = True,
        output_arity: int = 2,
        layer_idx: int | None = None,
        dropped_params: list[str] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "lowrank" and not rank:
            raise ValueError("a low-rank compensation needs a rank")
        self.dim_in, self.dim_out, self.kind, self.rank = dim_in, dim_out, kind, rank
        self.output_arity, self.layer_idx = output_arity, layer_idx
        # names of the replaced core's parameters (q_proj.weight, ...): checkpoints keep them as
        # zero-size tombstones so that a stock transformers load fails instead of re-initialising them
        self.dropped_params = list(dropped_params or [])
        factory = {"device": device, "dtype": dtype}
        if kind == "linear":
            self.weight = nn.Parameter(torch.zeros(dim_in, dim_out, **factory))
        elif kind == "lowrank":
            self.down = nn.Parameter(torch.zeros(dim_in, rank, **factory))
            self.up = nn.Parameter(torch.zeros(rank, dim_out, **factory))
        self.bias = nn.Parameter(torch.zeros(dim_out, **factory)) if bias and kind != "none" else None

    def extra_repr(self) -> str:
        rank = f", rank={self.rank}" if self.kind == "lowrank" else ""
        return f"{self.dim_in} -> {self.dim_out}, kind={self.kind}{rank}, bias={self.bias is not None}"

    def load_solution(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        """Set the map from a fitted ``(dim_in, dim_out)`` weight (factored for ``lowrank``)."""
        with torch.no_grad():
            if self.kind == "linear" and weight is not None:
                self.weight.copy_(weight.to(self.weight))
            elif self.kind == "lowrank" and weight is not None:
                u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
                r = self.rank
                self.down.copy_((u[:, :r] * s[:r]).to(self.down))
                self.up.copy_(vh[:r].to(self.up))
            if self.bias is not None and bias is not None:
                self.bias.copy_(bias.to(self.bias))

    def dense_weight(self) -> torch.Tensor | None:
        if self.kind == "linear":
            return self.weight
        if self.kind == "lowrank":
            return self.down @ self.up
        return None

    def forward(self, hidden_states: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        if hidden_states is None:
            raise TypeError("LinearCompensation needs the hidden states the attention core would have received")
        # the cache's keyword differs by family (GPT-NeoX: layer_past)
        cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
        if cache is not None and self.layer_idx is not None:
            mark_layer_dropped(cache, self.layer_idx)
        if self.kind == "none":
            out = hidden_states.new_zeros(*hidden_states.shape[:-1], self.dim_out)
        else:
            if self.kind == "linear":
                out = hidden_states @ self.weight
            else:
                out = (hidden_states @ self.down) @ self.up
            if self.bias is not None:
                out = out + self.bias
        if self.output_arity == 0:
            return out
        return (out,) + (None,) * (self.output_arity - 1)


class BlockCompensation(LinearCompensation):
    """Stands in for a whole decoder block: ``y = x + (x W + b)``, ``x`` ``(..., D)`` the block's
    input, so the map estimates the block's total residual update (ReplaceMe's linear map for a
    removed span, one block at a time). ``kind="none"`` makes the block the identity (ShortGPT).

    ``attributes``: plain attributes of the replaced block that the model's layer loop reads
    (ModernBERT's ``attention_type``, Nemotron-H's ``block_type``), kept so the loop still runs."""

    replaces_attention = False
    replaces_block = True  # what ``model.locate.replaced_layers`` looks for

    def __init__(self, dim_in: int, dim_out: int, *, attributes: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if dim_in != dim_out:
            raise ValueError(f"a block maps its width to itself, got {dim_in} -> {dim_out}")
        super().__init__(dim_in, dim_out, **kwargs)
        self.attributes = dict(attributes or {})
        for name, value in self.attributes.items():
            setattr(self, name, value)

    def forward(self, hidden_states: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        update = super().forward(hidden_states, *args, **kwargs)
        if self.output_arity == 0:
            return hidden_states + update
        return (hidden_states + update[0],) + update[1:]


class MergedProjection(LinearCompensation):
    """A down-projection with the map of the attention above it merged in (``merged.py``):
    ``y = act W + b`` with ``act`` ``(..., I)`` (the MLP's inner activations), ``W`` ``(I, D)``, ``b``
    ``(D,)``. It replaces an ``nn.Linear`` (a bare tensor out, no cache), not an attention:
    ``merged_layer`` is the layer whose attention it stands in for."""

    replaces_attention = False

    def __init__(self, dim_in: int, dim_out: int, *, merged_layer: int | None = None, **kwargs: Any) -> None:
        kwargs.update(kind="linear", output_arity=0, layer_idx=None)
        super().__init__(dim_in, dim_out, **kwargs)
        self.merged_layer = merged_layer


def compensation_from_spec(spec: dict[str, Any], **factory: Any) -> LinearCompensation:
    """Rebuild a compensation from a checkpoint's spec (``block: true`` marks a whole block,
    ``merged: true`` a down-projection holding a merged map)."""
    spec = dict(spec)
    if spec.pop("block", False):
        return BlockCompensation(**spec, **factory)
    if spec.pop("merged", False):
        return MergedProjection(**spec, **factory)
    spec.pop("attributes", None)
    return LinearCompensation(**spec, **factory)


CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past")


def make_compensation(sig: CoreSignature, init: str, rank: int | None, bias: bool) -> LinearCompensation:
    """An unfitted replacement for a unit with signature ``sig``: a ``LinearCompensation`` for an
    attention core, a ``BlockCompensation`` (``x + map(x)``) for a whole block."""
    kind = "none" if init == "none" else ("lowrank" if rank else "linear")
    if sig.unit == "block":
        return BlockCompensation(
            sig.dim_in,
            sig.dim_out,
            kind=kind,
            rank=rank,
            bias=bias and init != "mean",
            output_arity=sig.output_arity,
            layer_idx=sig.layer_idx,
            attributes=sig.attributes,
        )
    return LinearCompensation(
        sig.dim_in,
        sig.dim_out,
        kind=kind,
        rank=rank,
        bias=bias and init != "mean",  # Theorem 1 has no bias term
        output_arity=sig.output_arity,
        layer_idx=sig.layer_idx,
    )


class EmptyCacheLayer(DummyLayer):
    """transformers' ``DummyLayer`` (skipped by the cache and mask builders when they read the
    sequence length, never updated) whose keys and values are empty tensors instead of ``None``:
    some models read ``layer.keys.numel()`` on every layer of the cache (Mllama checks each index
    for cached cross-attention states), which fails on ``None``; others read ``layer._layer_type``
    on every layer (Unlimited-OCR looks for its reference sliding-window layer): a dropped layer
    has no attention type."""

    _layer_type: str | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys = torch.empty(0)
        self.values = torch.empty(0)


def mark_layer_dropped(cache: Any, layer_idx: int) -> None:
    """Make ``layer_idx`` of a transformers cache an ``EmptyCacheLayer`` that stores no keys/values."""
    cache = getattr(cache, "self_attention_cache", cache)  # encoder-decoder caches wrap the decoder's
    layers = getattr(cache, "layers", None)
    if layers is None:
        return
    replicate = getattr(cache, "layer_class_to_replicate", None)
    while len(layers) <= layer_idx and replicate is not None:
        layers.append(replicate())
    if layer_idx < len(layers) and not isinstance(layers[layer_idx], EmptyCacheLayer):
        layers[layer_idx] = EmptyCacheLayer()


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Swap the submodule ``name`` of ``root`` for ``new`` in place, keeping the old module's device
    and dtype; returns the old module."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    old = getattr(parent, child)
    reference = next(old.parameters(), None)
    if reference is not None and reference.device.type != "meta":
        new = new.to(device=reference.device, dtype=reference.dtype)
    setattr(parent, child, new)
    return old
