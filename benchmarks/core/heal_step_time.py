"""What a heal step costs on a real decoder, with the teacher run on every step and with it cached.

    python -m benchmarks.core.heal_step_time --out benchmarks/core/results/heal_step_time.json

SmolLM2-135M-Instruct, the K = 8 attention sub-layers the paper's cosine ranking drops (zero maps:
the start does not change a step's cost), ``--n-samples`` embedded prose samples of at most 256
tokens. For each (teacher top-k, batch size) the heal runs ``--steps`` steps with no evaluation
between them; the report's seconds include the evaluation at step 0 and at the last step on the
heal's validation samples and, when cached, the teacher's one pass over all samples (a fixed part,
not a per-step one: run two ``--steps`` to separate them).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

from benchmarks.common import write_result
from pc_testkit import smollm2
from prune_compensate import CalibrationConfig, HealConfig, PruneConfig, load_model, prune_, read_samples

COSINE_K8 = [6, 7, 8, 9, 25, 26, 28, 29]  # decoder_sweep_k2_k4_k8.json's ranking, first 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=40)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=["64:16", "0:16", "64:8"], help="TOPK:BATCH")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dense = load_model(smollm2.float32_folder())
    calibration = CalibrationConfig("embedded:prose", args.n_samples, 256)
    samples = read_samples(calibration)
    document: dict = {"model": "SmolLM2-135M-Instruct", "layers": COSINE_K8, "rows": []}
    for spec in args.configs:
        top_k, batch_size = (int(x) for x in spec.split(":"))
        model = dataclasses.replace(dense, model=copy.deepcopy(dense.model))
        heal = HealConfig(
            steps=args.steps, lr=1e-3, batch_size=batch_size, eval_every=10**6, objective="kl", teacher_top_k=top_k
        )
        config = PruneConfig(
            layers=COSINE_K8, init="zero", compare=(), calibration=calibration, heal=heal, show_progress=False
        )
        report = prune_(model, config, samples).heal
        row = {"teacher_top_k": top_k, "batch_size": batch_size, "steps": report["steps_run"]}
        row |= {"seconds": report["seconds"], "peak_rss_mb": report["peak_rss_mb"]}
        document["rows"].append(row)
        print(row, flush=True)
        write_result(args.out, document, args)


if __name__ == "__main__":
    main()
