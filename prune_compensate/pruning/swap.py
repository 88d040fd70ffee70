"""Install or restore replacement modules for the attention cores of chosen layers (the fitting
and healing passes switch between the original and the pruned model batch by batch)."""

from __future__ import annotations

from torch import nn

from ..model.locate import DecoderLayout
from .compensation import replace_module


def core_path(layout: DecoderLayout, index: int) -> str:
    """Dotted name of the unit a replacement stands in for (an attention core, or a whole block)."""
    if layout.unit == "block":
        return f"{layout.blocks_path}.{index}"
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
                replace_module(self.model, core_path(self.layout, index), target)

    def restore(self) -> None:
        self.install({})
