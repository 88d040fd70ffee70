"""Run every image-text-to-text family transformers registers through profile → prune → reload →
forward → generate, and say for each what happened (the family table of the docs).

Families with a hand-built tiny model in ``FAMILIES`` take the image path with their hand-set
processor. Every other registered family is built tiny from its own default config (sizes shrunk
by ``shrink_config``), first with its real processor class on an image
(``processor_build.build_with_processor``) and, where that fails, on text alone with MiniLM's
WordPiece tokenizer: that proves the decoder is found, pruned, saved, reloaded and generates, but
not that its processor's image inputs work. Each row records which path it took and why the image
path was not, so the table never claims more than was run.
"""

from __future__ import annotations

import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .families import overrides
from .processor_build import build_with_processor, family_processor
from .shrink import fit_vocabulary, tiny_config
from .tiny_models import FAMILIES, Family, wordpiece

# Model types whose hand-built tiny model (in FAMILIES) takes the image path.
HAND_BUILT: dict[str, str] = {
    "blip-2": "blip2",
    "instructblip": "instructblip",
    "kosmos-2": "kosmos2",
    "florence2": "florence2",
    "aya_vision": "aya_vision",
    **{family.name: family.name for family in FAMILIES},
}

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Marie Curie won the Nobel Prize in Physics and later in Chemistry.",
    "A knowledge graph stores facts as triples of head, relation and tail.",
    "The Amazon river flows through Peru, Colombia and Brazil to the Atlantic.",
]


def registered_families() -> dict[str, str]:
    """``model_type → model class name`` of every image-text-to-text family transformers registers
    (and of its older vision-to-sequence mapping, where this version still has one)."""
    from transformers.models.auto import modeling_auto

    names: dict[str, str] = {}
    for mapping in ("MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"):
        names.update(getattr(modeling_auto, mapping, {}))
    return dict(sorted(names.items()))


@dataclass
class SurveyRow:
    """One family's outcome. ``status``: ``supported``; ``refused`` (our one-line error, the reason);
    ``not built`` (its default config does not build tiny offline); ``error`` (a traceback at
    ``stage``, raised in ``raised_in``: ``transformers`` — often a forward that needs image inputs
    the text path has not — or ``prune_compensate``, a bug of ours). ``path``: ``images`` (the
    family's real processor and an image) or ``text`` (WordPiece tokenizer, text prompts only);
    ``built``: ``by hand`` (``FAMILIES``) or ``from config`` (its default config, shrunk);
    ``images_reason``: why a family built from config took the text path, or, for one run on images
    as another family's text model (``FamilyOverrides.published_as_text_model_of``), that class."""

    model_type: str
    model_class: str
    status: str
    path: str
    stage: str = ""
    reason: str = ""
    raised_in: str = ""
    decoder: str = ""
    seconds: float = 0.0
    built: str = ""
    images_reason: str = ""


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def alarm(*_: object) -> None:
        raise _Timeout(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def build_from_config(model_type: str, class_name: str, out: Path) -> Path:
    """A tiny random model of ``model_type`` from its default config, saved with a WordPiece tokenizer."""
    import transformers
    from transformers import AutoConfig

    config = tiny_config(model_type)
    tokenizer = wordpiece()
    fit_vocabulary(config, len(tokenizer))
    torch.manual_seed(0)
    model = getattr(transformers, class_name)(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # A tiny config that does not survive its own save and reload (a validator refuses it, or a size
    # derived at init comes out different) is a failure to build, not a failure of loading.
    again = getattr(transformers, class_name)(AutoConfig.from_pretrained(out))
    built = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    changed = [name for name, t in again.state_dict().items() if built.get(name, tuple(t.shape)) != tuple(t.shape)]
    if changed:
        raise ValueError(f"the tiny config does not survive a save and reload: {changed[0]} changes shape")
    return out


def _flow(model_dir: Path, images: list[str], work: Path, step: Callable[[str], None]) -> str:
    from prune_compensate.calibration.sources import CalibrationSample
    from prune_compensate.checkpoint.reload import load_pruned
    from prune_compensate.checkpoint.save import save_pruned
    from prune_compensate.model.load import load_model
    from prune_compensate.model.locate import find_decoder
    from prune_compensate.pruning.config import PruneConfig
    from prune_compensate.pruning.prune import prune_

    step("load")
    loaded = load_model(model_dir)
    step("locate")
    decoder = find_decoder(loaded.model).blocks_path
    samples = [CalibrationSample(f"{TEXTS[i % 4]} ({i})", images, f"s{i}") for i in range(8)]
    step("prune")
    result = prune_(loaded, PruneConfig(k=1, held_out=0.25, show_progress=False), samples)
    step("save")
    out = save_pruned(loaded.model, loaded.processor, work / "pruned", result.to_manifest())
    step("reload")
    reloaded = load_pruned(out)
    from prune_compensate.calibration.encode import BatchEncoder
    from prune_compensate.calibration.forward import fit_encoder_to, move_inputs

    encoder = BatchEncoder(reloaded.processor, 32)
    fit_encoder_to(encoder, reloaded.model, find_decoder(reloaded.model))
    inputs = move_inputs(encoder(samples[:2]), reloaded.model)
    step("forward")
    with torch.no_grad():
        reloaded.model(**inputs)
    step("generate")
    inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    reloaded.model.generate(**inputs, max_new_tokens=2, do_sample=False)
    return decoder


def survey_family(model_type: str, class_name: str, images: list[str], time_limit: int = 120) -> SurveyRow:
    """Run one family through the flow and say what happened: a hand-built family on its images; any
    other first with its real processor class on an image (``build_with_processor``) and, where
    that fails, on text alone, the image path's failure kept in ``images_reason``. A family whose
    registered class takes no image runs on images as another family's text model where its published
    checkpoints are one (``FamilyOverrides.published_as_text_model_of``)."""
    hand: Family | None = next((f for f in FAMILIES if f.name == HAND_BUILT.get(model_type)), None)
    start = time.perf_counter()
    if hand is not None:
        hand_images = images if hand.vision else []
        row = _attempt(model_type, class_name, "images", "by hand", hand.build, hand_images, time_limit)
    else:
        row = None
        reason = f"no processor class is registered for {model_type}"
        if not takes_images(class_name):  # registered as image-text-to-text, yet a text-only class
            reason = f"{class_name} takes no image input (its forward has no pixel, image or patch argument)"
            wrapper = overrides(model_type).published_as_text_model_of
            if wrapper is not None:
                wrapper_class = registered_families()[wrapper]
                row = _attempt(
                    model_type,
                    class_name,
                    "images",
                    "from config",
                    lambda out: build_with_processor(wrapper, wrapper_class, out, text_model_type=model_type),
                    images[:1],
                    time_limit,
                )
                row.images_reason = f"run as the text model of {wrapper_class}, the class of its published checkpoints"
                reason += f"; as the text model of {wrapper_class}, at {row.stage}: {row.reason}"
        elif family_processor(model_type, class_name) is not None:
            row = _attempt(
                model_type,
                class_name,
                "images",
                "from config",
                _generic(model_type, class_name, True),
                images[:1],
                time_limit,
            )
            reason = f"at {row.stage}: {row.reason}"
        if row is None or row.status != "supported":
            row = _attempt(
                model_type, class_name, "text", "from config", _generic(model_type, class_name, False), [], time_limit
            )
            row.images_reason = reason
    row.seconds = round(time.perf_counter() - start, 1)
    return row


def takes_images(class_name: str) -> bool:
    """Whether the model class's forward has an image argument (``pixel_values``, ``image_*``,
    ``*patches``, ``vision_*``). Mistral 4 is registered for image-text-to-text with a causal-LM
    class that has none, so no processor could give it an image."""
    import inspect

    import transformers

    params = inspect.signature(getattr(transformers, class_name).forward).parameters
    return any(word in name for name in params for word in ("pixel", "image", "patches", "vision"))


def _generic(model_type: str, class_name: str, with_processor: bool) -> Callable[[Path], Path]:
    if with_processor:
        return lambda out: build_with_processor(model_type, class_name, out)
    return lambda out: build_from_config(model_type, class_name, out)


def _attempt(
    model_type: str,
    class_name: str,
    path: str,
    built: str,
    build: Callable[[Path], Path],
    images: list[str],
    time_limit: int,
) -> SurveyRow:
    """One try of the flow on a freshly built model; every outcome is a row."""
    from prune_compensate.errors import PCError

    row = SurveyRow(model_type, class_name, "supported", path, built=built)
    stage = {"now": "build"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        try:
            with _time_limit(time_limit):
                model_dir = build(work / "model")
                row.decoder = _flow(model_dir, images, work, lambda s: stage.update(now=s))
        except PCError as err:
            row.status, row.reason = "refused", str(err).splitlines()[0]
        except Exception as err:  # noqa: BLE001 — every outcome is a row of the table
            row.reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:240]
            if stage["now"] == "build":
                row.status = "not built"
            else:
                row.status = "error"
                row.raised_in = _where(err)
        row.stage = "" if row.status == "supported" else stage["now"]
        row.reason = row.reason.replace(str(work / "model"), "MODEL").replace(str(work), "WORK")
    return row


def _where(err: BaseException) -> str:
    """Which package raised ``err``: the innermost frame that is ours or transformers'."""
    tb = err.__traceback__
    found = "other"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "prune_compensate" in name and "testing" not in name:
            found = "prune_compensate"
        elif "transformers" in name:
            found = "transformers"
        tb = tb.tb_next
    return found


def survey(images: list[str], only: list[str] | None = None, time_limit: int = 120) -> list[SurveyRow]:
    """Every registered family (or those named in ``only``), one row each."""
    rows = []
    for model_type, class_name in registered_families().items():
        if only and model_type not in only:
            continue
        rows.append(survey_family(model_type, class_name, images, time_limit))
    return rows


def rows_to_json(rows: list[SurveyRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
