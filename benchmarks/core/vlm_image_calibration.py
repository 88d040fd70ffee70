"""Does a compensation fitted on text alone transfer to image prompts? For every hand-built tiny VLM
family, prune the same layer three ways and measure the error on held-out *image* prompts:

* ``none``: drop the attention, no map;
* ``lstsq (text)``: the map fitted on text-only calibration (the old default);
* ``lstsq (image + text)``: the map fitted on the embedded image + text default.

Held-out prompts are those of the embedded image set's last two photos (never fitted on); the fits
use the embedded text samples and, for the mixed fit, the other nine photos' prompts. Error =
relative squared error of the final hidden states against the unpruned model on image prompts.
Random-weight tiny models: this checks the mechanism, not a real model's numbers.

    python -m benchmarks.core.vlm_image_calibration   # → benchmarks/core/results/vlm_image_calibration.json
"""

from __future__ import annotations

import random
import tempfile
import warnings
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from pc_testkit import FAMILIES
from prune_compensate import CalibrationConfig, PruneConfig, load_model, prune_, read_samples
from prune_compensate.calibration.encode import BatchEncoder
from prune_compensate.calibration.forward import model_needs_images
from prune_compensate.calibration.sources import embedded_image_calibration_path

OUT = Path(__file__).resolve().parent / "results" / "vlm_image_calibration.json"
N_TEXT = 60
LAYER = 1


def main() -> None:
    warnings.simplefilter("ignore")
    images = read_samples(CalibrationConfig(source=str(embedded_image_calibration_path()), n_samples=10_000))
    images.sort(key=lambda s: int(s.origin.rsplit(":", 1)[1]))  # file order: photo by photo
    photos = list(dict.fromkeys(s.images[0] for s in images))
    held_photos = set(photos[-2:])
    held = [s for s in images if s.images[0] in held_photos]
    fit_images = [s for s in images if s.images[0] not in held_photos]
    text = read_samples(CalibrationConfig(n_samples=N_TEXT, seed=0))
    mixed = text[: N_TEXT - len(fit_images)] + fit_images
    random.Random(0).shuffle(mixed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            if not family.vision:
                continue
            model_dir = family.build(Path(tmp) / family.name)
            probe = load_model(model_dir)
            if model_needs_images(probe.model, BatchEncoder(probe.processor, 32)):
                continue  # no text-only fit to compare with (PaliGemma, BLIP-2, Kosmos-2)
            row = {"family": family.name}
            for name, fit in (("text", text), ("image+text", mixed)):
                loaded = load_model(model_dir)
                samples = fit + held  # held-out share = the held prompts exactly
                config = PruneConfig(
                    layers=[LAYER],
                    held_out=len(held) / len(samples),
                    compare=("none",),
                    show_progress=False,
                    calibration=CalibrationConfig(batch_size=4),
                )
                error = prune_(loaded, config, samples).error
                row["none"] = error["none"]["relative"]
                row[f"lstsq ({name})"] = error["lstsq"]["relative"]
            rows.append(row)
            print(row, flush=True)
    document = {
        "schema": 1,
        "command": "python -m benchmarks.core.vlm_image_calibration",
        "seeds": {"text_draw": 0, "mix_shuffle": 0, "tiny_model_weights": 0},
        "budget": "no time limit; one layer dropped, lstsq vs none, CPU",
        "layer": LAYER,
        "n_text": N_TEXT,
        "rows": rows,
    }
    write_result(OUT, document)
    table = Table(title="held-out relative error on image prompts (tiny random VLMs, one layer dropped)")
    for column in ("family", "none", "lstsq (text)", "lstsq (image+text)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["family"], *(f"{row[c]:.4f}" for c in ("none", "lstsq (text)", "lstsq (image+text)")))
    Console().print(table)


if __name__ == "__main__":
    main()
