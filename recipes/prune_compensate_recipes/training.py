"""Resumable training state shared by the recipes (ELMM and TOFU): trainable weights, optimizer
state, RNG states, the loop's progress and the best weights so far, written atomically as
safetensors + JSON, so a run killed at any point resumes to the weights an uninterrupted run ends
with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from prune_compensate import PCError

from .io import atomic_dir_write


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_training_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Write the trainable weights, the optimizer's state, the RNG states, ``progress`` (JSON) and
    the best weights so far into ``folder`` atomically (safetensors + JSON, no pickle)."""
    params = trainable_parameters(model)
    names = list(params)
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"{names[index]}::{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})

    def write(tmp: Path) -> None:
        save_file({n: p.detach().contiguous() for n, p in params.items()}, str(tmp / "weights.safetensors"))
        save_file(tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        meta = {"progress": progress, "param_groups": groups, "names": names}
        (tmp / "progress.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    atomic_dir_write(folder, write, owned="progress.json")


def load_training_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore what ``save_training_state`` wrote (weights, optimizer, RNG) and return the saved
    ``progress`` and best weights."""
    meta = json.loads((folder / "progress.json").read_text(encoding="utf-8"))
    params = trainable_parameters(model)
    if list(params) != meta["names"]:
        raise PCError(f"training state in {folder} is for a different model", "remove it or use a new out dir")
    with torch.no_grad():
        for name, tensor in load_file(str(folder / "weights.safetensors")).items():
            params[name].copy_(tensor)
    slots = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in slots.items():
        if key == "_empty":
            continue
        name, slot = key.split("::")
        state.setdefault(meta["names"].index(name), {})[slot] = tensor
    groups = optimizer.state_dict()["param_groups"]
    for group, saved in zip(groups, meta["param_groups"], strict=True):
        group.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
    return meta["progress"], best
