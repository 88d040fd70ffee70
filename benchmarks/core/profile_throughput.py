"""Profiling cost on the real MiniLM: peak memory and samples/s for 100 vs 1,000 samples, and
profiling throughput relative to a plain forward over the same batches.

    python -m benchmarks.core.profile_throughput [--out benchmarks/core/results/profile_minilm.json]

Each measurement runs in a fresh subprocess, so the peak resident memory (``ru_maxrss``) belongs
to that run alone. The claim under test: profiling memory does not grow with the sample count
(statistics are running sums), and the hooks cost little beside the forward itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_result


def child(mode: str, n: int) -> dict:
    import torch

    from prune_compensate import CalibrationConfig, ProfileConfig, load_model, profile, read_samples
    from prune_compensate.calibration.encode import BatchEncoder, batches
    from prune_compensate.calibration.forward import forward_kwargs, move_inputs

    torch.set_num_threads(2)
    calibration = CalibrationConfig(n_samples=n, batch_size=8, max_length=256)
    samples = read_samples(calibration)
    loaded = load_model()
    encoder = BatchEncoder(loaded.processor, calibration.max_length)
    start = time.perf_counter()
    if mode == "profile":
        profile(loaded, ProfileConfig(k=3, calibration=calibration, show_progress=False), samples)
    else:
        with torch.inference_mode():
            for batch in batches(samples, calibration.batch_size):
                loaded.model(**move_inputs(encoder(batch), loaded.model), **forward_kwargs(loaded.model))
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "n_samples": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "peak_rss_mib": peak_kib / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/core/results/profile_minilm.json")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "N"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    runs = []
    for n in (100, 1000):
        for mode in ("forward", "profile"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(n)], check=True, capture_output=True, text=True
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1])
    by = {(r["mode"], r["n_samples"]): r for r in runs}
    summary = {
        "command": "python -m benchmarks.core.profile_throughput",
        "machine": f"{platform.machine()}, torch threads 2, {platform.python_version()}",
        "runs": runs,
        "profile_vs_forward_throughput": {
            n: by[("profile", n)]["samples_per_s"] / by[("forward", n)]["samples_per_s"] for n in (100, 1000)
        },
        "profile_peak_rss_growth_mib_100_to_1000": by[("profile", 1000)]["peak_rss_mib"]
        - by[("profile", 100)]["peak_rss_mib"],
        # the forward's own activation peak grows with the longest batch drawn; what profiling adds is this:
        "profile_minus_forward_peak_rss_mib": {
            n: by[("profile", n)]["peak_rss_mib"] - by[("forward", n)]["peak_rss_mib"] for n in (100, 1000)
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(Path(args.out), summary, args)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
