"""Drop-one ranking: how far the model's *output* moves when one unit alone is removed.

The paper ranks an attention sub-layer by the cosine between its input and output residual
stream: a local view that cannot see a small change that later layers amplify (on SmolLM2 the
last attention sub-layers look nearly idle by cosine, yet the whole last block moves the stream
most). This ranking asks the question pruning answers: for each unit, remove it (no
compensation) and measure the output against the dense model's on calibration tokens —

* a model that predicts tokens: the next-token KL(dense ‖ dropped), averaged over real tokens;
* an encoder: 1 − cosine between the dense and dropped last hidden states, averaged likewise.

Lowest first is most redundant. It costs one forward per unit per batch on ``DROP_ONE_SAMPLES``
samples; the dense output is kept for one batch at a time only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..calibration.encode import BatchEncoder, encoded_batches, probe_batch, real_tokens
from ..calibration.forward import forward_parameters, move_inputs, probe_cores
from ..calibration.sources import CalibrationSample
from ..model.locate import DecoderLayout, has_lm_head
from ..progress import WorkProgress
from .compensation import make_compensation
from .swap import CoreSwap

DROP_ONE_SAMPLES = 32  # L + 1 forwards each: on a CPU, a 30-layer 135M model takes minutes


def output_rows(model: nn.Module, inputs: dict[str, torch.Tensor], predicts_tokens: bool) -> torch.Tensor:
    """The model's output at the real tokens, in float64: ``(n, vocab)`` next-token log-probabilities
    for a token predictor, ``(n, hidden)`` unit-length last hidden states for an encoder."""
    extra = {"use_cache": False} if "use_cache" in forward_parameters(model) else {}
    with torch.inference_mode():
        out = model(**move_inputs(inputs, model), **extra)
    values: Any = out.logits if predicts_tokens else getattr(out, "last_hidden_state", None)
    if values is None:
        values = out[0]
    mask = real_tokens(inputs).to(values.device).bool()
    rows = values[mask] if mask.shape == values.shape[:2] else values.flatten(0, -2)
    rows = rows.double()
    if predicts_tokens:
        return torch.log_softmax(rows, dim=-1)
    return torch.nn.functional.normalize(rows, dim=-1)


def divergence(dense: torch.Tensor, dropped: torch.Tensor, predicts_tokens: bool) -> float:
    """Summed over rows: KL(dense ‖ dropped) of log-probabilities, or 1 − cosine of unit vectors."""
    if predicts_tokens:
        return float((dense.exp() * (dense - dropped)).sum())
    return float((1.0 - (dense * dropped).sum(-1)).sum())


def drop_one_scores(
    model: nn.Module,
    layout: DecoderLayout,
    encoder: BatchEncoder,
    samples: list[CalibrationSample],
    units: list[int],
    batch_size: int,
    show_progress: bool = True,
    work: WorkProgress | None = None,
) -> dict[int, float]:
    """Mean output divergence per unit of ``units`` when it alone is removed (see module docstring),
    on the first ``DROP_ONE_SAMPLES`` of ``samples``. The model is left with its originals."""
    samples = samples[:DROP_ONE_SAMPLES]
    predicts_tokens = has_lm_head(model)
    signatures = probe_cores(model, layout, units, encoder(probe_batch(samples, batch_size)))
    removed = {i: make_compensation(sig, "none", None, False) for i, sig in signatures.items()}
    swap = CoreSwap(model, layout, units)
    totals, rows = dict.fromkeys(units, 0.0), 0
    try:
        for inputs in encoded_batches(encoder, samples, batch_size, "drop-one ranking", show_progress, work):
            dense = output_rows(model, inputs, predicts_tokens)
            for index in units:
                swap.install({index: removed[index]})
                totals[index] += divergence(dense, output_rows(model, inputs, predicts_tokens), predicts_tokens)
            swap.restore()
            rows += dense.shape[0]
    finally:
        swap.restore()
    return {index: total / max(rows, 1) for index, total in totals.items()}
