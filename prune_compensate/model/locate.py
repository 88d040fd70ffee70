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
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..errors import PCError

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
    frozenset({"q", "k", "v"}),  # T5 / UDOP
    frozenset({"kv_a_proj_with_mqa"}),  # multi-head latent attention (DeepSeek-V2/V3, Mistral 4)
)


def is_attention_core(module: nn.Module) -> bool:
    """Owns query/key/value projections — or is a compensation that replaced such a core (marked by
    ``replaces_attention``, so finding layers needs nothing from the pruning code)."""
    if getattr(module, "replaces_attention", False):
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
    """Where the text decoder's blocks are. ``blocks_path`` is the dotted name of the block list.
    ``ends`` (dotted name, module) are the modules that may produce the stack's final hidden state
    ``(B, T, D)``: its last block and the norms beside the block list; whichever of them runs last
    in a forward is the final one (a final norm after the blocks, not BART's embedding norm before)."""

    blocks_path: str
    blocks: nn.ModuleList
    core_names: list[str | None]  # None: a block without attention (hybrid stacks)
    ends: list[tuple[str, nn.Module]] = field(default_factory=list)
    caches: bool = True  # False for the encoder stack of an encoder–decoder: it keeps no KV cache
    cross_attends: bool = False  # the decoder of an encoder–decoder: its tokens are the decoder inputs
    unit: str = "attention"  # what is ranked and replaced: attention cores, or whole blocks (``block_units``)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the prunable units: the blocks that own an attention core (all of them,
        except in hybrid stacks such as Qwen 3.5 or LFM 2, whose other blocks mix tokens by linear
        attention or convolution); with ``unit="block"``, every block."""
        return [i for i, name in enumerate(self.core_names) if name is not None]

    @property
    def bias_owners(self) -> list[int]:
        """Layers whose attention computes the relative position bias that the stack's other layers
        reuse (T5-style stacks: Pix2Struct, UDOP; the core holds ``relative_attention_bias``). A
        replacement would not compute it, and every later layer would read a wrong bias, so these
        are never pruned, whichever the unit."""
        owners = []
        for i, name in enumerate(self.core_names):
            if name is None:
                continue
            unit = self.blocks[i] if self.unit == "block" else self.blocks[i].get_submodule(name)
            if any(sub.rsplit(".", 1)[-1] == "relative_attention_bias" for sub, _ in unit.named_modules()):
                owners.append(i)
        return owners

    @property
    def prunable_layers(self) -> list[int]:
        """``attention_layers`` less the ``bias_owners``: the units a prune may choose."""
        owners = set(self.bias_owners)
        return [i for i in self.attention_layers if i not in owners]

    def core(self, index: int) -> nn.Module:
        """The module a unit's replacement stands in for: the attention core, or the whole block."""
        if self.unit == "block":
            return self.blocks[index]
        name = self.core_names[index]
        if name is None:
            raise PCError(
                f"block {index} of {self.blocks_path} has no attention (a hybrid stack)",
                f"choose among the attention layers {self.attention_layers}",
            )
        return self.blocks[index].get_submodule(name)


UNITS = ("attention", "block")


def check_unit(unit: str) -> None:
    """``--unit`` is ``attention`` or ``block`` (checked by the configs, before any model is loaded)."""
    if unit not in UNITS:
        raise PCError(f"unknown --unit {unit!r}", f"use one of {', '.join(UNITS)}")


def block_units(layout: DecoderLayout) -> DecoderLayout:
    """The same stack seen as whole blocks (ShortGPT / SLEB / ReplaceMe): every block is a unit,
    its "core" is the block itself, and the residual update it adds is what a compensation
    replaces. Blocks without attention (hybrid stacks) are units too."""
    return replace(layout, core_names=[""] * layout.num_layers, unit="block")


def replaced_layers(layout: DecoderLayout) -> list[int]:
    """Units that are already a compensation (a pruned checkpoint): attention cores replaced by a
    compensation, or, with ``unit="block"``, whole blocks replaced by one."""
    marker = "replaces_block" if layout.unit == "block" else "replaces_attention"
    return [i for i in layout.attention_layers if getattr(layout.core(i), marker, False)]


# attributes of a block that transformers' layer loops read off the block object
BLOCK_ATTRIBUTES = ("attention_type", "block_type", "layer_type")


def block_attributes(block: nn.Module) -> dict[str, Any]:
    """The plain (str / int / bool) ``BLOCK_ATTRIBUTES`` a block carries, for ``BlockCompensation``."""
    found = {}
    for name in BLOCK_ATTRIBUTES:
        value = getattr(block, name, None)
        if isinstance(value, (str, int, bool)):
            found[name] = value
    return found


def attention_layer_index(block: nn.Module) -> int | None:
    """The KV-cache slot of a block: its attention core's ``layer_idx`` (or the block's own)."""
    found = find_attention_core(block)
    core = found[1] if found is not None else block
    index = getattr(core, "layer_idx", None)
    return index if isinstance(index, int) else getattr(block, "layer_idx", None)


def has_lm_head(model: nn.Module) -> bool:
    """Whether the model scores next tokens (LMs, VLMs) rather than returning states (encoders)."""
    return getattr(model, "get_output_embeddings", lambda: None)() is not None


def _input_embedding(model: nn.Module) -> nn.Module | None:
    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return embedding


STACKS = ("decoder", "encoder", "both")  # both: pruning only (the K most redundant over the two stacks)


def check_stack(stack: str) -> None:
    """``--stack`` is ``decoder``, ``encoder`` or (for pruning) ``both`` (checked by the configs,
    before any model is loaded)."""
    if stack not in STACKS:
        raise PCError(f"unknown --stack {stack!r}", f"use one of {', '.join(STACKS)}")


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Every non-empty ``ModuleList`` of blocks some of which own a self-attention core (all of them
    in most stacks; some in hybrid ones, where the others use linear attention or convolutions)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and all(isinstance(block, nn.Module) and not isinstance(block, nn.ModuleList) for block in module)
        and any(find_attention_core(block) is not None for block in module)
    ]


def _has_cross_attention(blocks: nn.ModuleList) -> bool:
    """Decoder blocks of an encoder–decoder attend to the encoder: a second attention core whose
    name says so (``encoder_attn``, ``crossattention``, ``cross_attn``)."""
    first = next((block for block in blocks if find_attention_core(block) is not None), blocks[0])
    for name, module in first.named_modules():
        lowered = name.lower()
        if is_attention_core(module) and ("cross" in lowered or "encoder_attn" in lowered):
            return True
    return False


def _under_text_embedding(model: nn.Module, candidates: list[tuple[str, nn.ModuleList]]) -> list:
    """The candidates nearest the model's input (text) embedding: walk up from the embedding until
    an ancestor holds one of the lists. Vision towers own q/k/v blocks too, but not beside it."""
    embedding = _input_embedding(model)
    names = {id(module): name for name, module in model.named_modules()}
    if embedding is None or id(embedding) not in names:
        return candidates
    parts = names[id(embedding)].split(".")
    for depth in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:depth])
        under = [c for c in candidates if not prefix or c[0].startswith(prefix + ".")]
        if under:
            shallowest = min(c[0].count(".") for c in under)
            return [c for c in under if c[0].count(".") == shallowest]
    return candidates


def _encoder_root(model: nn.Module) -> str | None:
    """Dotted name of an encoder–decoder's encoder (``get_encoder()``), ``None`` for other models.
    Its stacks are the encoder side; any other text stack is the decoder side (T5Gemma 2 merges
    self- and cross-attention, so cross-attention modules alone do not tell the sides apart)."""
    config = getattr(model, "config", None)
    configs = [config, getattr(config, "text_config", None)]
    if not any(getattr(c, "is_encoder_decoder", False) for c in configs if c is not None):
        return None
    try:
        encoder = model.get_encoder()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    return next((name for name, module in model.named_modules() if module is encoder and name), None)


def _under(path: str, root: str) -> bool:
    return path.startswith(root + ".")


def _side(path: str, blocks: nn.ModuleList, candidates: list, root: str | None) -> str:
    """``"encoder"``, ``"decoder"`` (of an encoder–decoder) or ``"only"`` (a single text stack)."""
    if root is not None:
        return "encoder" if _under(path, root) else "decoder"
    if _has_cross_attention(blocks):
        return "decoder"
    # the other stack of the same encoder–decoder sits under the same grandparent (``….encoder.layers``
    # beside ``….decoder.layers``); a Q-Former's cross-attending blocks elsewhere do not count
    home = path.rsplit(".", 2)[0]
    siblings = [b for name, b in candidates if name != path and name.rsplit(".", 2)[0] == home]
    return "encoder" if any(_has_cross_attention(b) for b in siblings) else "only"


def _layout(model: nn.Module, path: str, blocks: nn.ModuleList, side: str) -> DecoderLayout:
    cores = [find_attention_core(block) for block in blocks]
    core_names = [core[0] if core is not None else None for core in cores]
    parent_path = path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    prefix = f"{parent_path}." if parent_path else ""
    ends = [(f"{path}.{len(blocks) - 1}", blocks[-1])]
    ends += [(prefix + name, child) for name, child in parent.named_children() if is_norm(child)]
    return DecoderLayout(path, blocks, core_names, ends, caches=side != "encoder", cross_attends=side == "decoder")


def find_decoder(model: nn.Module, path: str | None = None, stack: str = "decoder") -> DecoderLayout:
    """Locate the text decoder's block list by structure.

    ``path`` (dotted, e.g. ``"model.language_model.layers"``) skips the search. ``stack`` picks
    between the two text stacks of an encoder–decoder (Florence-2, T5Gemma 2): ``"decoder"`` (the
    one with a KV cache, default) or ``"encoder"``. Raises ``PCError`` naming the lists it saw when
    none fits.
    """
    check_stack(stack)
    if stack == "both":
        raise PCError("find_decoder locates one stack", "pass stack='encoder' or stack='decoder'")
    candidates = _block_lists(model)
    root = _encoder_root(model)
    if path is not None:
        chosen = [c for c in candidates if c[0] == path]
        if not chosen:
            seen = ", ".join(name for name, _ in candidates) or "none"
            raise PCError(
                f"--decoder {path!r} is not a list of attention blocks in {type(model).__name__} (lists seen: {seen})",
                "pass the dotted path of one of the lists seen",
            )
        return _layout(model, *chosen[0], _side(*chosen[0], candidates, root))
    if not candidates:
        lists = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
        raise PCError(
            f"no decoder found in {type(model).__name__}: no list of blocks whose blocks own an attention "
            f"module with query/key/value projections (module lists seen: {', '.join(lists[:8]) or 'none'})",
            "pass --decoder with the dotted path of the text blocks, or open an issue with the model class",
        )
    if root is not None:
        wanted = [c for c in candidates if _under(c[0], root) == (stack == "encoder")]
        near = _under_text_embedding(model, wanted or candidates)
    else:
        near = _under_text_embedding(model, candidates)
        if len(near) > 1:  # an encoder–decoder: both stacks sit beside the shared embedding
            decoders = [c for c in near if _has_cross_attention(c[1])]
            encoders = [c for c in near if not _has_cross_attention(c[1])]
            near = (decoders if stack == "decoder" else encoders) or near
    side = _side(*near[0], candidates, root)
    if stack == "encoder" and side != "encoder":
        raise PCError(
            f"{type(model).__name__} has one text stack ({near[0][0]}), not an encoder and a decoder",
            "leave out --stack",
        )
    return _layout(model, *near[0], side)


@dataclass(frozen=True)
class ResidualSite:
    """Which tensor of a block is the residual stream right after the attention sub-block.

    ``module`` is the dotted name (inside the block) of the module to hook; ``where`` says whether
    the residual is that module's first input (``"input"``) or its (first) output (``"output"``).
    """

    module: str
    where: str
    layout: str  # "pre-norm" or "post-norm"


def first_tensor(value: Any) -> torch.Tensor | None:
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


def _fingerprint(value: Any) -> tuple | None:
    """A cheap identity of a tensor's values (shape and two sums), to tell whether two modules of a
    block were fed the same tensor during the probe forward."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        return None
    data = value.detach().double()
    return (tuple(value.shape), round(float(data.sum()), 6), round(float(data.abs().sum()), 6))


@dataclass
class ChildTrace:
    """What one probe forward showed of a block: the order its direct children ran in, and a
    fingerprint of the input each child (and the block itself, key ``""``) was called with."""

    order: list[str]
    inputs: dict[str, tuple | None]


@contextmanager
def record_child_order(block: nn.Module) -> Iterator[ChildTrace]:
    """Record the order in which the block's direct children run during one forward, and their inputs."""
    trace = ChildTrace([], {})
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            if name:
                trace.order.append(name)
            if name not in trace.inputs:
                first = args[0] if args else kwargs.get("hidden_states")
                trace.inputs[name] = _fingerprint(first)

        return hook

    handles.append(block.register_forward_pre_hook(record(""), with_kwargs=True))
    for name, child in block.named_children():
        handles.append(child.register_forward_pre_hook(record(name), with_kwargs=True))
    try:
        yield trace
    finally:
        for handle in handles:
            handle.remove()


def _parallel(trace: ChildTrace, container: str) -> bool:
    """Attention and MLP read the same residual (Cohere, Phi, GPT-J: one shared norm; GPT-NeoX: a
    second norm of the block input): some child after attention is fed attention's own input or
    the block's input, so nothing after attention sees the residual with attention added."""
    core_in, block_in = trace.inputs.get(container), trace.inputs.get("")
    later = trace.order[trace.order.index(container) + 1 :]
    return any(trace.inputs.get(name) is not None and trace.inputs.get(name) in (core_in, block_in) for name in later)


def residual_site_from_order(block: nn.Module, core_name: str, trace: ChildTrace) -> ResidualSite:
    """Decide where the residual after attention is, given what the probe forward showed."""
    order = trace.order
    container = core_name.split(".")[0]
    if container not in order:
        raise PCError(
            f"attention {core_name!r} of {type(block).__name__} did not run during the probe forward",
            "check that the calibration inputs reach the language model",
        )
    first = order.index(container)
    children = dict(block.named_children())
    pre_norm = any(is_norm(children[name]) for name in order[:first])
    if pre_norm and _parallel(trace, container):
        # residual after attention = block input + attention's output (never materialised by the block)
        return ResidualSite(module=core_name, where="core_sum", layout="parallel")
    after: list[str] = []
    for name in order[first + 1 :]:
        if not is_norm(children[name]):
            break
        after.append(name)
    if pre_norm and not after and first == len(order) - 1:
        # attention is the block's last child (Nemotron-H: each block holds one mixer, attention,
        # Mamba or MLP): the residual after attention is the block's output
        return ResidualSite(module="", where="output", layout="pre-norm")
    if pre_norm:
        if not after:
            raise PCError(
                f"{type(block).__name__} is pre-norm but no norm runs between attention and the MLP, "
                "and the MLP does not read attention's input",
                "this block layout is not supported; please open an issue with the model class",
            )
        return ResidualSite(module=after[-1], where="input", layout="pre-norm")
    if after:
        return ResidualSite(module=after[0], where="output", layout="post-norm")
    return ResidualSite(module=container, where="output", layout="post-norm")


def residual_from_hook(
    site: ResidualSite, args: tuple, kwargs: dict, output: Any, before: torch.Tensor | None = None
) -> torch.Tensor:
    """Pick the residual tensor out of a forward hook's arguments for ``site`` (``before``: the
    block's input, needed by parallel blocks whose site is the core's output plus it)."""
    if site.where == "input":
        return block_input(args, kwargs)
    tensor = first_tensor(output)
    if tensor is None:
        raise PCError(f"module {site.module!r} returned no tensor", "please report this model class")
    if site.where == "core_sum":
        if before is None:
            raise PCError("a parallel block's residual needs the block input", "please report this model class")
        return before + tensor
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
