"""Where a model comes from: a local folder, or a Hugging Face Hub id resolved to a commit.

Why a resolution step before ``from_pretrained``: the hub client retries a refused connection for
about 20 seconds and transformers then reports it as a generic ``OSError``; users need one line
that says what went wrong (no such repo, a gated repo without a token, no network, not cached while
offline) and what to do. So the config file is fetched first through ``huggingface_hub`` (its own
progress bars, ``HF_HOME`` / ``HF_TOKEN`` / ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` as the user set
them), its typed errors become ``PCError``s, and the snapshot folder it lands in names the
resolved commit, which the checkpoint manifest records so a pruned model can be traced to its base.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import PCError


@dataclass
class ModelOrigin:
    """A local folder (``path``) or a hub repo (``repo_id`` at ``revision``, resolved to ``commit``).

    ``local_dir`` is where the files are on this machine (the hub cache snapshot for a repo);
    ``local_only`` says that loading must not touch the network (``--offline``, or the hub was
    unreachable and the cache had the model)."""

    local_dir: Path
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    local_only: bool = False
    gguf_file: str | None = None  # a GGUF checkpoint in ``local_dir``, dequantised by transformers on load

    @property
    def source(self) -> str:
        """What ``from_pretrained`` is given: the repo id, or the local folder."""
        return self.repo_id or str(self.local_dir)

    def to_manifest(self) -> dict[str, Any]:
        if self.gguf_file is not None:
            gguf = self.local_dir / self.gguf_file
            # the hash keyed by file, as a delta checkpoint fingerprints a local base
            sha256 = {self.gguf_file: file_sha256(gguf)}
            return {"path": str(self.local_dir.resolve()), "gguf_file": self.gguf_file, "sha256": sha256}
        if self.repo_id is None:
            return {"path": str(self.local_dir.resolve())}
        return {"hub_id": self.repo_id, "revision": self.revision or "main", "commit": self.commit}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks; remembered per (path, size, mtime) within a process,
    so a multi-GB GGUF named by a manifest and by a delta's base record is read once."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_path(name: str) -> bool:
    """A name that can only be meant as a folder (so a typo is not sent to the hub)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def endpoint_reachable(timeout: float = 3.0) -> bool:
    """A TCP connect to the hub endpoint (skipped behind a proxy, where only HTTP can tell)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    url = urlparse(_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_config(repo_id: str, revision: str | None, cache_dir: str | None) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache_dir, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None


def resolve_hub(
    repo_id: str, revision: str | None = None, offline: bool = False, cache_dir: str | None = None
) -> ModelOrigin:
    """Fetch (or find in the cache) ``repo_id``'s config and return where the model lives."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f"{repo_id}@{revision}" if revision else repo_id
    if offline or _offline_env():
        cached = _cached_config(repo_id, revision, cache_dir)
        if cached is None:
            how = "--offline" if offline else "HF_HUB_OFFLINE"
            raise PCError(
                f"model {at} is not in the Hugging Face cache and {how} forbids downloading it",
                "run once without --offline (and with HF_HUB_OFFLINE unset) on a machine with internet, "
                "or pass a local model directory",
            )
        return _origin(repo_id, revision, cached, local_only=True)
    if not endpoint_reachable():
        cached = _cached_config(repo_id, revision, cache_dir)
        if cached is None:
            raise PCError(
                f"cannot reach the Hugging Face Hub at {_endpoint()} to download {at}, and it is not in the cache",
                "check the network connection, or pass --offline to use a cached model",
            )
        return _origin(repo_id, revision, cached, local_only=True)
    try:
        config = Path(hf_hub_download(repo_id, "config.json", revision=revision, cache_dir=cache_dir))
    except GatedRepoError as err:
        raise PCError(
            f"{repo_id} is a gated repository and this machine has no access to it",
            "accept its terms on the Hub, then set HF_TOKEN (or run `hf auth login`)",
        ) from err
    except RepositoryNotFoundError as err:
        raise PCError(
            f"model {repo_id} was not found on the Hugging Face Hub (or it is private)",
            "check the id, set HF_TOKEN for a private repository, or pass a local model directory",
        ) from err
    except RevisionNotFoundError as err:
        raise PCError(f"{repo_id} has no revision {revision!r}", "pass an existing --revision") from err
    except HFValidationError as err:
        raise PCError(f"{repo_id!r} is neither a local folder nor a valid hub id", "check the name") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise PCError(
            f"could not download {at} and it is not in the cache ({str(err).splitlines()[0]})",
            "check the network connection, or pass --offline to use a cached model",
        ) from err
    except Exception as err:  # e.g. a repository without config.json
        from huggingface_hub.errors import EntryNotFoundError

        if isinstance(err, EntryNotFoundError):
            raise PCError(
                f"{at} has no config.json, so it is not a transformers model", "pass a transformers model id"
            ) from err
        raise
    return _origin(repo_id, revision, config, local_only=False)


def _origin(repo_id: str, revision: str | None, config_file: Path, local_only: bool) -> ModelOrigin:
    snapshot = config_file.parent  # .../models--org--name/snapshots/<commit>/config.json
    commit = snapshot.name if snapshot.parent.name == "snapshots" else None
    return ModelOrigin(snapshot, repo_id, revision, commit, local_only)


def resolve_origin(
    name_or_path: str,
    revision: str | None = None,
    offline: bool = False,
    cache_dir: str | None = None,
    gguf_file: str | None = None,
) -> ModelOrigin:
    """A local folder if one exists by that name; else a hub id (see ``resolve_hub``). A ``.gguf``
    file, or a folder plus ``gguf_file``, is a GGUF checkpoint (the way transformers takes one)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        if gguf_file is not None and gguf_file != path.name:
            raise PCError(f"{name_or_path} is a GGUF file and --gguf-file names {gguf_file}", "pass one of them")
        path, gguf_file = path.parent, path.name
    if gguf_file is not None:
        if not path.is_dir():
            raise PCError(
                f"--gguf-file needs a local folder, and {name_or_path} is none",
                "pass the folder that holds the .gguf file, or the .gguf file itself",
            )
        if not (path / gguf_file).is_file():
            raise PCError(f"{path} holds no GGUF file {gguf_file}", "check --gguf-file (the file name in the folder)")
        return ModelOrigin(path, local_only=True, gguf_file=gguf_file)
    if path.exists():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf")) if path.is_dir() else []
            hint = (
                f"pass --gguf-file {ggufs[0]} to load its GGUF file"
                if ggufs
                else "point at the folder that holds config.json and the weights, or at a .gguf file"
            )
            raise PCError(f"{name_or_path} has no config.json, so it is not a Hugging Face model directory", hint)
        return ModelOrigin(path, local_only=True)
    if looks_like_path(name_or_path):
        raise PCError(f"model folder {name_or_path} does not exist", "check the path, or pass a hub id (org/name)")
    return resolve_hub(name_or_path, revision, offline, cache_dir)
