"""Install or restore replacement modules for the attention cores of chosen layers (the fitting
and healing passes switch between the original and the pruned model batch by batch). A core whose
map is merged into the MLP below (``merged.MergedCore``) brings that MLP's new down-projection
with it, and restoring puts the original projection back."""

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
        self.projections: dict[str, nn.Module] = {}  # path -> the original, for every path ever merged into

    def install(self, modules: dict[int, nn.Module]) -> None:
        merged: dict[str, nn.Module] = {}
        for index, original in self.originals.items():
            target = modules.get(index, original)
            if self.layout.core(index) is not target:
                replace_module(self.model, core_path(self.layout, index), target)
            path = getattr(target, "projection_path", None)
            if path is not None:
                merged[path] = target.projection
        for path in {*self.projections, *merged}:
            current = self.model.get_submodule(path)
            original = self.projections.setdefault(path, current)
            wanted = merged.get(path, original)
            if current is not wanted:
                replace_module(self.model, path, wanted)

    def restore(self) -> None:
        self.install({})
