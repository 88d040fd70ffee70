"""Find the language model's blocks, each block's attention core and its residual stream, by structure.

No table of model names: the text decoder is the block list (an ``nn.ModuleList``) that sits under
the same parent as the model's *input* embedding and whose blocks own an attention core; a core is
the module that directly owns query/key/value projections. That skips vision towers (their blocks
own q/k/v too, but not beside the text embedding) and works for decoders and encoders alike.

Where the residual stream is read "right after attention" depends on the block's layout, which is
found by watching one forward pass (the order in which the block's direct children run):

* pre-norm (a norm runs before attention; Llama, Qwen, Mistral, Gemma 2/3, Llama 4): the residual
  after attention is the *input* of the last norm that runs between attention and the MLP. For
  Llama that is ``post_attention_layernorm``; Gemma 2/3 first normalise the attention output
  (``post_attention_layernorm``) and add it, so the residual is the input of
  ``pre_feedforward_layernorm``.
* post-norm (no norm before attention; BERT, MiniLM, DistilBERT): the residual after attention is
  the *output* of the first norm after attention if the block owns one (DistilBERT's
  ``sa_layer_norm``), else the output of the sub-block holding the core (BERT's ``attention``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .compensate import LinearCompensation
from .errors import PCError

# Sets of child names that mark a module as an attention core (it owns these projections).
QKV_NAME_SETS: tuple[frozenset[str], ...] = (
    frozenset({"q_proj", "k_proj", "v_proj"}),
    frozenset({"query", "key", "value"}),
    frozenset({"q_lin", "k_lin", "v_lin"}),
    frozenset({"qkv_proj"}),
    frozenset({"qkv"}),
    frozenset({"Wqkv"}),
    frozenset({"query_key_value"}),
    frozenset({"c_attn"}),
)


def is_attention_core(module: nn.Module) -> bool:
    """Owns query/key/value projections — or is a compensation that replaced such a core."""
    if isinstance(module, LinearCompensation):
        return True
    children = {name for name, _ in module.named_children()}
    return any(names <= children for names in QKV_NAME_SETS)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def find_attention_core(block: nn.Module) -> tuple[str, nn.Module] | None:
    """The first (outermost) self-attention core inside ``block``, with its dotted name."""
    for name, module in block.named_modules():
        if name and is_attention_core(module) and "cross" not in name.lower():
            return name, module
    return None


@dataclass
class DecoderLayout:
    """Where the text decoder's blocks are. ``blocks_path`` is the dotted name of the block list."""

    blocks_path: str
    blocks: nn.ModuleList
    core_names: list[str]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def core(self, index: int) -> nn.Module:
        return self.blocks[index].get_submodule(self.core_names[index])


def replaced_layers(layout: DecoderLayout) -> list[int]:
    """Layers whose attention core is already a compensation (a pruned checkpoint)."""
    return [i for i in range(layout.num_layers) if isinstance(layout.core(i), LinearCompensation)]


def has_lm_head(model: nn.Module) -> bool:
    """Whether the model scores next tokens (LMs, VLMs) rather than returning states (encoders)."""
    return getattr(model, "get_output_embeddings", lambda: None)() is not None


def _input_embedding(model: nn.Module) -> nn.Module | None:
    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return embedding


def find_decoder(model: nn.Module) -> DecoderLayout:
    """Locate the text decoder's block list by structure. Raises ``PCError`` naming the class if none."""
    names = {id(module): name for name, module in model.named_modules()}
    candidates: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if all(find_attention_core(block) is not None for block in module):
                candidates.append((name, module))
    if not candidates:
        raise PCError(
            f"no decoder found in {type(model).__name__}: no list of blocks whose blocks own "
            "an attention module with query/key/value projections",
            "this model family is not supported yet; please open an issue with the model class",
        )
    chosen = candidates[0]
    embedding = _input_embedding(model)
    if embedding is not None and id(embedding) in names and len(candidates) > 1:
        # Walk up from the text embedding until an ancestor holds one of the candidate lists.
        parts = names[id(embedding)].split(".")
        for depth in range(len(parts) - 1, -1, -1):
            prefix = ".".join(parts[:depth])
            under = [c for c in candidates if not prefix or c[0].startswith(prefix + ".")]
            if under:
                chosen = min(under, key=lambda c: c[0].count("."))
                break
    path, blocks = chosen
    core_names = [find_attention_core(block)[0] for block in blocks]  # type: ignore[index]
    return DecoderLayout(blocks_path=path, blocks=blocks, core_names=core_names)


@dataclass(frozen=True)
class ResidualSite:
    """Which tensor of a block is the residual stream right after the attention sub-block.

    ``module`` is the dotted name (inside the block) of the module to hook; ``where`` says whether
    the residual is that module's first input (``"input"``) or its (first) output (``"output"``).
    """

    module: str
    where: str
    layout: str  # "pre-norm" or "post-norm"


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    return None


def block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a block (or core) was called with: first positional or ``hidden_states=``."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise PCError("a decoder block was called without hidden states", "please report this model class")


@contextmanager
def record_child_order(block: nn.Module) -> Iterator[list[str]]:
    """Record the order in which the block's direct children run during one forward."""
    order: list[str] = []
    handles = []
    for name, child in block.named_children():
        handles.append(child.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name)))
    try:
        yield order
    finally:
        for handle in handles:
            handle.remove()


def residual_site_from_order(block: nn.Module, core_name: str, order: list[str]) -> ResidualSite:
    """Decide where the residual after attention is, given the run order of the block's children."""
    container = core_name.split(".")[0]
    if container not in order:
        raise PCError(
            f"attention {core_name!r} of {type(block).__name__} did not run during the probe forward",
            "check that the calibration inputs reach the language model",
        )
    first = order.index(container)
    children = dict(block.named_children())
    pre_norm = any(is_norm(children[name]) for name in order[:first])
    after: list[str] = []
    for name in order[first + 1 :]:
        if not is_norm(children[name]):
            break
        after.append(name)
    if pre_norm:
        if not after:
            raise PCError(
                f"{type(block).__name__} is pre-norm but no norm runs between attention and the MLP "
                "(parallel attention/MLP blocks have no residual after attention)",
                "this block layout is not supported",
            )
        return ResidualSite(module=after[-1], where="input", layout="pre-norm")
    if after:
        return ResidualSite(module=after[0], where="output", layout="post-norm")
    return ResidualSite(module=container, where="output", layout="post-norm")


def residual_from_hook(site: ResidualSite, args: tuple, kwargs: dict, output: Any) -> torch.Tensor:
    """Pick the residual tensor out of a forward hook's arguments for ``site``."""
    if site.where == "input":
        return block_input(args, kwargs)
    tensor = _first_tensor(output)
    if tensor is None:
        raise PCError(f"module {site.module!r} returned no tensor", "please report this model class")
    return tensor


# How a core's output enters the residual stream, for blocks where that is an affine map applied
# before a post-norm: residual_after = norm(output_map(core_out) + residual_before). Looked up by
# block class name through the MRO, so subclasses inherit their parent's handler.
OUTPUT_MAPS: dict[str, Callable[[nn.Module], nn.Linear]] = {
    "BertLayer": lambda block: block.attention.output.dense,
    "RobertaLayer": lambda block: block.attention.output.dense,
    "ElectraLayer": lambda block: block.attention.output.dense,
}


def output_map(block: nn.Module) -> nn.Linear | None:
    """The registered affine map of ``block`` (``None``: none registered for its class or parents)."""
    for cls in type(block).__mro__:
        handler = OUTPUT_MAPS.get(cls.__name__)
        if handler is not None:
            return handler(block)
    return None
