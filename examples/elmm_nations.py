"""ELMM from Python on Nations (pykeen's 14-country graph) with the real MiniLM, in about a minute.

    python examples/elmm_nations.py

Same as ``pc run elmm data=nations prune.k=3 ...``: prune half of MiniLM's attention with the core,
train LoRA + KGC head, evaluate, save, reload, and score a query with the reloaded model.
"""

from __future__ import annotations

import torch

from prune_compensate_recipes.elmm.config import load_config
from prune_compensate_recipes.elmm.run import load_elmm, print_results, run_elmm

config = load_config(
    None,
    [
        "data=nations",
        "out=runs/example_nations",
        "prune.k=3",
        "prune.calibration_samples=200",
        "prompt.structure_tokens=true",
        "train.epochs=3",
        "train.batch_size=64",
        "train.lr=1e-3",
        "train.head_lr=3e-3",
        "train.resume=false",
    ],
)
document = run_elmm(config)
print_results(document)

run = load_elmm(config.out)
usa, relation = run.dataset.entities.index("usa"), 0
scores = run.scores(torch.tensor([usa]), torch.tensor([relation]))[0]
best = scores.topk(3).indices.tolist()
print(f"(usa, {run.dataset.relation_label(relation)}, ?) →", [run.dataset.entities[i] for i in best])
