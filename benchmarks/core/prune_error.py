"""Held-out error of pruning with compensation, and what each fitting idea buys.

    python -m benchmarks.core.prune_error        # ~4 min on 2 CPU cores

MiniLM (real weights, the embedded FB15k-237 calibration text): K=3, 1,000 fitting / 300 held-out
samples, the 3 highest-cosine layers. Rows, each a full bottom-up prune from the original model:

* ``local, no bias``   — plain per-token ridge least squares of the core's own output;
* ``local``            — + an affine (bias) term;
* ``downstream``       — + the paper's ε taken against the original model (the default);
* ``independent``      — all layers fitted from the original model in one pass (for comparison);

and the same default prune of a tiny random LLaVA (K=1 of 2 layers) with image inputs, so the VLM
path is measured too. "relative" is the relative squared error of the final hidden states
(‖ΔH‖² / ‖H‖²); ratios are to the uncompensated drop (``none``). Writes
``benchmarks/core/results/prune_error.json``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

from benchmarks.common import write_result
from pc_testkit.tiny_models import build_llava
from prune_compensate import CalibrationConfig, CalibrationSample, PruneConfig, load_model, prune_, read_samples
from prune_compensate.pruning.config import INITS

VARIANTS = {
    "local, no bias": dict(target="local", bias=False),
    "local": dict(target="local"),
    "downstream": dict(),
    "independent": dict(order="independent"),
}


def main() -> None:
    calibration = CalibrationConfig(n_samples=1300)
    samples = read_samples(calibration)
    results: dict = {"command": "python -m benchmarks.core.prune_error", "minilm": {}, "tiny_llava": {}}
    for name, overrides in VARIANTS.items():
        config = PruneConfig(
            k=3, held_out=300 / 1300, compare=INITS, calibration=calibration, show_progress=False, **overrides
        )
        result = prune_(load_model(), config, samples)
        row = {init: err for init, err in result.error.items()}
        row["lstsq_over_none"] = row["lstsq"]["relative"] / row["none"]["relative"]
        row["mean_over_none"] = row["mean"]["relative"] / row["none"]["relative"]
        row["layers"] = result.pruned_layers
        results["minilm"][name] = row
        print(name, {k: round(v["relative"], 4) for k, v in result.error.items()}, round(row["lstsq_over_none"], 3))
    images = sorted(str(p) for p in (Path(matplotlib.get_data_path()) / "images").glob("*.png"))
    llava = load_model(build_llava(Path(tempfile.mkdtemp()) / "tiny-llava"))
    vlm_samples = [CalibrationSample(s.text, [images[i % len(images)]], s.origin) for i, s in enumerate(samples[:200])]
    config = PruneConfig(
        k=1, held_out=0.25, compare=INITS, calibration=CalibrationConfig(batch_size=8), show_progress=False
    )
    result = prune_(llava, config, vlm_samples)
    results["tiny_llava"] = {"layers": result.pruned_layers, **result.error}
    print("tiny llava", {k: round(v["relative"], 4) for k, v in result.error.items()})
    out = Path("benchmarks/core/results/prune_error.json")
    write_result(out, results)


if __name__ == "__main__":
    main()
