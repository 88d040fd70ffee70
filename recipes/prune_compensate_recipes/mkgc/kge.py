"""Structural KG embeddings (TransE, RotatE, ComplEx) trained with PyKEEN on a dataset's training
split within a wall-clock budget: the structural baselines of ``benchmarks/mkgc_baselines.py`` and
the pre-trained structure tokens of the ELMM recipe (``prompt.structure_from``).

Hyper-parameters are common published settings scaled to a CPU budget. Training runs PyKEEN's
sLCWA loop one epoch at a time until ``epochs`` or ``minutes`` is spent; the last epoch's model is
kept (no selection on valid, so nothing about the evaluation splits leaks into it).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from .data import KGDataset

KGE_SETTINGS: dict[str, dict[str, Any]] = {
    "transe": dict(
        model="TransE",
        model_kwargs=dict(embedding_dim=200, scoring_fct_norm=1),
        lr=1e-3,
        loss="MarginRankingLoss",
        loss_kwargs=dict(margin=5.0),
        negatives=16,
    ),
    # 64 negatives at lr 1e-3 left RotatE at chance after 8 epochs (9 min) on DB15K; fewer negatives
    # per step and a larger step fit a CPU budget better
    "rotate": dict(
        model="RotatE",
        model_kwargs=dict(embedding_dim=200),
        lr=5e-3,
        loss="NSSALoss",
        loss_kwargs=dict(margin=9.0, adversarial_temperature=1.0),
        negatives=16,
    ),
    "complex": dict(
        model="ComplEx",
        model_kwargs=dict(embedding_dim=200),
        lr=1e-3,
        loss="SoftplusLoss",
        loss_kwargs={},
        negatives=16,
    ),
}


def train_kge(
    dataset: KGDataset,
    name: str,
    *,
    minutes: float,
    epochs: int = 1000,
    batch_size: int = 1024,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train KGE model ``name`` (a key of ``KGE_SETTINGS``) on ``dataset.train`` → the model (eval
    mode) and what the training did (epochs, seconds, final loss, hyper-parameters)."""
    from pykeen.losses import loss_resolver
    from pykeen.models import model_resolver
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    spec = KGE_SETTINGS[name]
    torch.manual_seed(seed)
    factory = TriplesFactory(
        dataset.train,
        entity_to_id={e: i for i, e in enumerate(dataset.entities)},
        relation_to_id={r: i for i, r in enumerate(dataset.relations)},
    )
    model = model_resolver.make(
        spec["model"],
        spec["model_kwargs"],
        triples_factory=factory,
        loss=loss_resolver.make(spec["loss"], spec["loss_kwargs"]),
        random_seed=seed,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    loop = SLCWATrainingLoop(
        model=model,
        triples_factory=factory,
        optimizer=optimizer,
        negative_sampler_kwargs=dict(num_negs_per_pos=spec["negatives"]),
    )
    start, done, losses = time.perf_counter(), 0, []
    while done < epochs and (time.perf_counter() - start) < minutes * 60:
        losses += loop.train(
            triples_factory=factory,
            num_epochs=done + 1,
            batch_size=batch_size,
            continue_training=done > 0,
            use_tqdm=False,
        )
        done += 1
    seconds = time.perf_counter() - start
    info = {
        "epochs": done,
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / max(done, 1),
        "final_loss": losses[-1] if losses else None,
        "batch_size": batch_size,
        "seed": seed,
        **spec,
    }
    return model.eval(), info


def kge_features(model: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Real feature rows of a trained KGE model: entities ``(|E|, k)`` and relations ``(2R, k)``,
    the second R rows being the inverse relations, which the model defines without training them:
    −r for TransE (t − r = h), the conjugate r̄ for RotatE and ComplEx (t ∘ r̄ scores like h).
    Complex vectors become ``[Re; Im]`` rows, so k = 2·dim for RotatE and ComplEx."""
    with torch.no_grad():
        entities = model.entity_representations[0](indices=None).detach()
        relations = model.relation_representations[0](indices=None).detach()
    if name == "transe":
        inverse = -relations
    elif name in ("rotate", "complex"):
        inverse = relations.conj()
    else:
        raise ValueError(f"no inverse relation rule for {name}")

    def real(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.real, x.imag], -1).float() if x.is_complex() else x.float()

    return real(entities), real(torch.cat([relations, inverse]))


def kge_scores(anchors: torch.Tensor, relations: torch.Tensor, entity_rows: torch.Tensor, name: str) -> torch.Tensor:
    """A KGE's score of every entity as the answer of (anchor, relation), from ``kge_features`` rows:
    ``anchors``, ``relations`` ``(B, k)``, ``entity_rows`` ``(|E|, k)`` → ``(B, |E|)`` float32.

    −‖a + r − t‖₁ for TransE, −‖a∘r − t‖₂ for RotatE (``[Re; Im]`` rows), as one distance matrix:
    PyKEEN's ``score_t`` broadcasts a ``(B, |E|, dim)`` tensor, minutes on a large graph's split.
    A head query is the same call with the inverse relation's row (``kge_features``' second half)."""
    if name == "transe":
        return -torch.cdist(anchors + relations, entity_rows, p=1.0)
    if name != "rotate":
        raise ValueError(f"no distance score for {name}")
    half = anchors.shape[1] // 2
    ar, ai, rr, ri = anchors[:, :half], anchors[:, half:], relations[:, :half], relations[:, half:]
    rotated = torch.cat([ar * rr - ai * ri, ar * ri + ai * rr], dim=1)
    return -torch.cdist(rotated, entity_rows, compute_mode="donot_use_mm_for_euclid_dist")
