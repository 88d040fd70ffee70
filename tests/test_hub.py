"""Hub ids load like ``from_pretrained`` (cache, revision, offline, remote code), failures are one
line, and a checkpoint records its base's hub id and commit. No test touches the internet: models
sit in a hub-cache layout under a temporary folder, and the "network" is a closed local port."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_error

from prune_compensate import PCError, load_model
from prune_compensate.model.locate import find_decoder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_hub_cache(model_dir: Path, cache: Path, repo_id: str, commit: str = COMMIT) -> Path:
    """Lay a model folder out as huggingface_hub's cache does: snapshots/<commit>/ + refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hub_id_loads_from_the_cache_with_its_commit(family_dirs: dict, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    put_in_hub_cache(family_dirs["llama"], cache, "tiny-org/tiny-llama")
    loaded = load_model("tiny-org/tiny-llama", offline=True, cache_dir=cache)
    assert find_decoder(loaded.model).num_layers == 2
    assert loaded.origin.to_manifest() == {"hub_id": "tiny-org/tiny-llama", "revision": "main", "commit": COMMIT}
    assert loaded.local_dir == cache / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT
    pinned = load_model("tiny-org/tiny-llama", revision=COMMIT, offline=True, cache_dir=cache)
    assert pinned.origin.commit == COMMIT
    with pytest.raises(PCError, match="tiny-org/tiny-llama@v9 is not in the Hugging Face cache"):
        load_model("tiny-org/tiny-llama", revision="v9", offline=True, cache_dir=cache)
    with pytest.raises(PCError, match="forbids downloading it"):
        load_model("tiny-org/absent", offline=True, cache_dir=cache)


def test_remote_code_needs_the_flag(family_dirs: dict, tmp_path: Path) -> None:
    model = tmp_path / "custom"
    shutil.copytree(family_dirs["llama"], model)
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="tiny-custom-llama",
        architectures=["CustomForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_custom.py").write_text(
        "from transformers import LlamaConfig\n\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'tiny-custom-llama'\n"
    )
    (model / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_custom import CustomConfig\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n"
    )
    msg = cli_error(["profile", str(model), "--quiet"])
    assert "needs to run code from its repository" in msg and "--trust-remote-code" in msg
    loaded = load_model(model, trust_remote_code=True)
    assert type(loaded.model).__name__ == "CustomForCausalLM" and find_decoder(loaded.model).num_layers == 2


def _pc(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prune_compensate.cli", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_refused_network_is_one_line_and_the_cache_still_works(family_dirs: dict, tmp_path: Path) -> None:
    """A fresh HF_HOME, HF_HUB_OFFLINE unset, the Hub endpoint a closed port: an uncached id fails
    fast in one line; a cached one is pruned, and the manifest names its hub id and commit."""
    put_in_hub_cache(family_dirs["llama"], tmp_path / "hf" / "hub", "tiny-org/tiny-llama")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    failed = _pc(["profile", "tiny-org/absent", "--quiet"], env, tmp_path)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    error = " ".join(failed.stderr.split())
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1" in error and "pass --offline" in error
    pruned = _pc(
        ["prune", "tiny-org/tiny-llama", "--k", "1", "--n-samples", "6", "--out", "p", "--quiet"], env, tmp_path
    )
    assert pruned.returncode == 0, pruned.stderr
    manifest = json.loads((tmp_path / "p" / "prune_manifest.json").read_text())
    assert manifest["base"] == {"hub_id": "tiny-org/tiny-llama", "revision": "main", "commit": COMMIT}


def test_refused_network_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub client alone retries a refused connection for about 23 s; the probe answers at once."""
    import prune_compensate.model.hub as hub

    monkeypatch.setattr(hub, "_endpoint", lambda: f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(hub, "_offline_env", lambda: False)
    start = time.perf_counter()
    with pytest.raises(PCError, match="cannot reach the Hugging Face Hub"):
        load_model("tiny-org/absent", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
