"""Profile a tiny random-initialised LLaVA-style VLM with image inputs — the VLM path, no download.

    python examples/profile_tiny_llava.py [OUT_DIR]

Builds the model from a config (CLIP vision tower + Llama text decoder, MiniLM's WordPiece
vocabulary), saves it with its processor, then profiles it exactly as ``pc profile DIR`` does,
on calibration samples that each carry an image (matplotlib's sample PNGs: real image files).
Random weights make the cosine values meaningless; the point is the path and the output.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

from pc_testkit.tiny_models import build_llava
from prune_compensate import CalibrationSample, ProfileConfig, load_model, profile
from prune_compensate.report import print_profile


def main(out_dir: str | None = None) -> None:
    root = Path(out_dir or tempfile.mkdtemp())
    model_dir = build_llava(root / "tiny-llava")
    images = sorted(str(p) for p in (Path(matplotlib.get_data_path()) / "images").glob("*.png"))[:2]
    samples = [
        CalibrationSample("A photo of Denton, a city in Texas.", images[:1]),
        CalibrationSample("The Rolling Stones, an English rock band.", images[1:2]),
    ]
    loaded = load_model(model_dir)
    result = profile(loaded, ProfileConfig(k=1), samples)
    print_profile(result)
    result.to_json(root / "profile.json")
    print(f"model in {model_dir}; profile JSON in {root / 'profile.json'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
