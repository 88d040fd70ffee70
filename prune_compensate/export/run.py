"""``export_``: a loaded pruned decoder → an engine's format, checked, then written atomically.

Like ``prune_``, a plain function of a loaded model and a small config; ``jobs.export_model`` is
the one call that loads a checkpoint first (``pc export``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import output_dir
from ..errors import PCError
from ..model.load import LoadedModel
from .decilm import check_decilm, write_decilm
from .gguf_file import OUTTYPES, check_gguf, write_gguf
from .plan import DecoderPlan, plan_decoder
from .verify import check_plan
from .vocab import base_gguf, read_vocab

FORMATS = ("decilm", "gguf")
EXPORT_MANIFEST = "export_manifest.json"
GGUF_MAGIC = b"GGUF"
FOLDER_README = """# Exported by prune_compensate

A pruned Llama-family decoder in the heterogeneous Nemotron-NAS ("DeciLM") layout: see
export_manifest.json for which layers keep their attention, which have a linear map
(`replace_with_linear`) and which none (`no_op`).

- llama.cpp / Ollama / LM Studio: `pc export PRUNED --format gguf --out model.gguf` writes the GGUF
  directly (architecture `deci`).
- transformers: needs NVIDIA's remote DeciLM code (`configuration_decilm.py`, `modeling_decilm.py`
  from a Nemotron-NAS repository such as nvidia/Llama-3_1-Nemotron-51B-Instruct) copied into this
  folder with an `auto_map` in config.json, then `trust_remote_code=True`.
- MLX-LM reads the map under `self_attn.linear.weight`; vLLM builds `no_op` layers only.
"""


@dataclass
class ExportConfig:
    """``format``: ``decilm`` (a folder) or ``gguf`` (one file, llama.cpp architecture ``deci``).
    ``outtype``: GGUF tensor type (norms stay float32). ``drop_bias``: export maps fitted with a
    bias without it (no format adds one; prune with ``--no-bias`` to fit without). ``vocab_from``:
    the GGUF whose tokenizer the file gets (default: the base's, when it was a GGUF; ``"none"``: no
    tokenizer)."""

    out: Path
    format: str = "gguf"
    outtype: str = "f16"
    drop_bias: bool = False
    vocab_from: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.format not in FORMATS:
            raise PCError(f"unknown --format {self.format!r}", f"use {' or '.join(FORMATS)}")
        if self.outtype not in OUTTYPES:
            raise PCError(f"unknown --outtype {self.outtype!r}", f"use {', '.join(OUTTYPES)}")
        if self.format == "decilm" and self.outtype != "f16":
            raise PCError("--outtype is a GGUF setting", "drop it with --format decilm (the folder keeps the dtype)")
        if self.format == "gguf" and self.out.suffix != ".gguf":
            raise PCError(f"--out {self.out} does not end in .gguf", "name the GGUF file to write, e.g. model.gguf")


@dataclass
class ExportResult:
    """What ``export_`` wrote: per-layer kinds, the maps whose bias was left out, the check."""

    out: str
    format: str
    layers: dict[str, list[int]]
    dropped_bias: list[int] = field(default_factory=list)
    check_error: float = 0.0
    bytes: int = 0
    outtype: str | None = None
    vocab: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        output_dir.write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")


def check_out(config: ExportConfig) -> None:
    """Fail before any work if ``config.out`` cannot be written (only our own kind is replaced)."""
    out = config.out.resolve()
    if config.format == "decilm":
        output_dir.check_out_dir(out, config.overwrite, owned=EXPORT_MANIFEST)
        return
    output_dir.check_out_file(out, "--out")
    if out.exists() and not config.overwrite:
        raise PCError(f"{out} already exists", "choose a new --out or pass --overwrite")
    if out.exists() and out.read_bytes()[:4] != GGUF_MAGIC:
        raise PCError(f"{out} exists and is not a GGUF file, so --overwrite will not replace it", "choose a new --out")


def _layers(plan: DecoderPlan) -> dict[str, list[int]]:
    kinds: dict[str, list[int]] = {"attention": [], "linear": [], "no_op": []}
    for i, layer in enumerate(plan.layers):
        kinds[layer.attention].append(i)
    kinds["no_ffn"] = [i for i, layer in enumerate(plan.layers) if not layer.ffn]
    kinds["merged"] = plan.merged_layers()
    return kinds


def _vocab_source(config: ExportConfig, manifest: dict[str, Any]) -> str:
    if config.vocab_from is not None:
        return config.vocab_from
    base = base_gguf(manifest)
    if base is None:
        raise PCError(
            "a GGUF needs the model's tokenizer in GGUF form, and this model was not pruned from a .gguf",
            "pass --vocab-from BASE.gguf (any GGUF of the same base model), or --vocab-from none",
        )
    return str(base)


def export_(loaded: LoadedModel, config: ExportConfig, manifest: dict[str, Any] | None = None) -> ExportResult:
    """Write the pruned decoder ``loaded`` as ``config.format``: plan it (refusing what the format
    cannot hold), check the plan computes the model's logits, then write atomically. ``manifest``:
    the checkpoint's, recorded in the export and searched for the base GGUF's tokenizer."""
    manifest = manifest or {}
    check_out(config)
    plan = plan_decoder(loaded.model, drop_bias=config.drop_bias)
    if config.format == "decilm":
        check_decilm(plan)  # what DeciLM cannot hold that GGUF can: fail before the check
    vocab = read_vocab(_vocab_source(config, manifest)) if config.format == "gguf" else None
    if vocab is not None:
        check_gguf(plan, vocab)
    error = check_plan(plan, loaded.model)
    out = config.out.resolve()
    dropped = [i for i, layer in enumerate(plan.layers) if layer.map_bias is not None and bool(layer.map_bias.any())]
    result = ExportResult(str(out), config.format, _layers(plan), dropped, error)
    if config.format == "gguf":
        result.outtype, result.vocab = config.outtype, vocab.source
        with output_dir.atomic_file(out) as tmp:
            write_gguf(plan, vocab, tmp, config.outtype, name=out.stem)
        result.bytes = out.stat().st_size
        return result
    with output_dir.atomic_out_dir(out, config.overwrite, owned=EXPORT_MANIFEST) as tmp:
        write_decilm(plan, tmp)
        if loaded.processor is not None:
            loaded.processor.save_pretrained(tmp)
        generation = getattr(loaded.model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(tmp)
        (tmp / "README.md").write_text(FOLDER_README, encoding="utf-8")
        record = {**result.to_dict(), "source": manifest.get("model"), "base": manifest.get("base")}
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    result.bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return result
