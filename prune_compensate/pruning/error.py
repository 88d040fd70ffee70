"""Held-out error of a pruned model against the original, streamed over batches.

Per batch the caller runs the original and the pruned model on the same inputs and hands both
outputs here; only sums are kept. Definitions (real tokens only, padding masked):

* ``mse``: mean over tokens and features of ``(h_pruned − h_orig)²`` of the final hidden states
  (the output of the located stack's final norm, or of its last block when it has none; read
  by a hook, so every output class works);
* ``relative``: relative squared error ``‖H_pruned − H_orig‖²_F / ‖H_orig‖²_F`` over all held-out
  tokens (= MSE / mean square of the original); ``relative_norm`` is its square root;
* LMs (``logits``): ``kl`` = mean over tokens of KL(p_orig ‖ p_pruned) of the next-token
  distribution, ``top1`` = share of tokens whose arg-max next token agrees;
* encoders: ``embedding_cosine`` = mean over samples of the cosine between mean-pooled final
  hidden states (the sentence embedding of sentence-transformers' MiniLM).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..calibration.encode import BatchEncoder, encoded_batches, positions_mask, real_tokens
from ..calibration.forward import forward_parameters, move_inputs
from ..calibration.sources import CalibrationSample
from ..errors import PCError
from ..model.locate import DecoderLayout
from ..progress import WorkProgress
from ..scoring.embedding import mean_pool
from .compensation import LinearCompensation
from .swap import CoreSwap


@dataclass
class FinalOutputs:
    """What the error report and heal compare: the located stack's final hidden state ``(B, T, D)``
    (read by a hook, so every output class works) and the logits ``(B, T, V)`` when the model has them."""

    hidden: torch.Tensor
    logits: torch.Tensor | None


@contextmanager
def capture_final_hidden(layout: DecoderLayout) -> Iterator[dict[str, Any]]:
    """Hook the stack's possible ends (``layout.ends``) for the duration; ``store["hidden"]`` is the
    output of the one that ran last, ``store["name"]`` its dotted name."""
    store: dict[str, Any] = {}
    handles = []

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _args: tuple, output: Any) -> None:
            store["hidden"] = output if isinstance(output, torch.Tensor) else output[0]
            store["name"] = name

        return hook

    last_block = f"{layout.blocks_path}.{layout.num_layers - 1}"
    try:
        for name, module in layout.ends:
            if name == last_block:  # whatever sits there now: a whole-block unit may have replaced it
                module = layout.blocks[layout.num_layers - 1]
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def forward_final(model: nn.Module, layout: DecoderLayout, inputs: dict[str, torch.Tensor]) -> FinalOutputs:
    """One full forward (gradients as the caller's mode allows) returning ``FinalOutputs``."""
    extra = {"use_cache": False} if "use_cache" in forward_parameters(model) else {}
    with capture_final_hidden(layout) as store:
        outputs = model(**move_inputs(inputs, model), **extra)
    if "hidden" not in store:
        raise PCError(
            f"the blocks {layout.blocks_path} did not run in the forward pass", "please report this model class"
        )
    return FinalOutputs(store["hidden"], getattr(outputs, "logits", None))


@dataclass
class OutputError:
    sum_sq_diff: float = 0.0
    sum_sq_ref: float = 0.0
    n_values: int = 0
    n_tokens: int = 0
    kl_sum: float = 0.0
    top1_agree: int = 0
    has_logits: bool = False
    cos_sum: float = 0.0
    n_sequences: int = 0

    def update(self, reference: FinalOutputs, pruned: FinalOutputs, mask: torch.Tensor) -> None:
        ref_h, new_h = reference.hidden, pruned.hidden
        mask = positions_mask(mask, ref_h.shape[1]).bool().to(ref_h.device)
        a, b = ref_h[mask].double(), new_h[mask].double()
        self.sum_sq_diff += float(((b - a) ** 2).sum())
        self.sum_sq_ref += float((a**2).sum())
        self.n_values += a.numel()
        self.n_tokens += a.shape[0]
        ref_logits = reference.logits
        if ref_logits is not None and pruned.logits is not None and ref_logits.shape[:2] == mask.shape:
            self.has_logits = True
            # float32 softmaxes (a 7B model's vocabulary × tokens in float64 would double the memory), float64 sum
            log_p = torch.log_softmax(ref_logits[mask].float(), dim=-1)
            log_q = torch.log_softmax(pruned.logits[mask].float(), dim=-1)
            self.kl_sum += float((log_p.exp() * (log_p - log_q)).sum(dtype=torch.float64))
            self.top1_agree += int((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        else:
            pooled_a, pooled_b = mean_pool(ref_h.double(), mask), mean_pool(new_h.double(), mask)
            self.cos_sum += float(torch.nn.functional.cosine_similarity(pooled_a, pooled_b, dim=-1).sum())
            self.n_sequences += pooled_a.shape[0]

    def summary(self) -> dict[str, float]:
        out = {
            "mse": self.sum_sq_diff / max(self.n_values, 1),
            "relative": self.sum_sq_diff / self.sum_sq_ref if self.sum_sq_ref else float("nan"),
            "relative_norm": math.sqrt(self.sum_sq_diff / self.sum_sq_ref) if self.sum_sq_ref else float("nan"),
            "n_tokens": self.n_tokens,
        }
        if self.has_logits:
            out["kl"] = self.kl_sum / max(self.n_tokens, 1)
            out["top1"] = self.top1_agree / max(self.n_tokens, 1)
        else:
            out["embedding_cosine"] = self.cos_sum / max(self.n_sequences, 1)
        return out


def held_out_error(
    model: nn.Module,
    layout: DecoderLayout,
    swap: CoreSwap,
    variants: dict[str, dict[int, LinearCompensation]],
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    batch_size: int,
    show_progress: bool = True,
    work: WorkProgress | None = None,
    original_base: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> dict[str, dict[str, float]]:
    """Error of each variant against the original model on ``samples`` (see ``evaluate``).
    ``original_base``: a context with the base parameters a heal trained (norms, MLPs) set back to
    their original values (``heal.TrainedBase.as_original``), for the reference and every variant
    but ``"heal"``."""
    errors = {name: OutputError() for name in variants}
    for inputs in encoded_batches(encoder, samples, batch_size, "held-out error", show_progress, work):
        mask = real_tokens(inputs)
        swap.restore()
        with torch.inference_mode():
            with original_base():
                reference = forward_final(model, layout, inputs)
            for name, modules in variants.items():
                swap.install(modules)
                with nullcontext() if name == "heal" else original_base():
                    errors[name].update(reference, forward_final(model, layout, inputs), mask)
    swap.restore()
    return {name: err.summary() for name, err in errors.items()}
