"""``pc data download NAME``: fetch a dataset from its public source, verify every file's SHA-256,
and put it under the data root in the layout ``load_staged`` reads.

Why our own downloader: DB15K, MKG-W and MKG-Y (zjukg/NATIVE), the GraIL inductive training graphs
with their valid/test splits (kkteru/grail) and the text cross-links (kg-bert, mmkb, Wikidata
labels) are not distributed by PyKEEN. ``downloads.json`` (written by
``tools/make_download_registry.py``) pins each file's repository, ref, path and checksum; files are
fetched from pinned commits where one is known. A dataset is written into a temporary sibling
folder and renamed into place only when every file has been verified, so a broken download never
leaves a half dataset. ``PC_DATA_MIRROR`` replaces ``https://raw.githubusercontent.com`` (a local
mirror, or the tests' server on 127.0.0.1).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prune_compensate import PCError

RAW = "https://raw.githubusercontent.com"
REGISTRY = Path(__file__).with_name("downloads.json")
TEXT = ("FB15k-237/entity2text.txt", "FB15k-237/relation2text.txt", "FB15k-237/entity2wikidata.json.gz")
WN_TEXT = ("WN18RR/entity2text.txt.gz", "WN18RR/relation2text.txt")


def registry() -> dict[str, dict[str, Any]]:
    return json.loads(REGISTRY.read_text(encoding="utf-8"))


def downloadable() -> list[str]:
    """Names ``pc data download`` accepts: DB15K, MKG-W, MKG-Y, text, inductive/<split>, inductive."""
    splits = sorted({path.split("/")[1] for path in registry() if path.startswith("inductive/")})
    return ["DB15K", "MKG-W", "MKG-Y", "text", "inductive", *(f"inductive/{s}" for s in splits)]


def files_for(name: str) -> list[str]:
    """Registry paths that make up ``name``, with the text files its loader joins in."""
    paths = list(registry())
    if name == "text":
        return [*TEXT, *WN_TEXT]
    if name == "inductive":
        return [p for p in paths if p.startswith("inductive/")] + [*TEXT, *WN_TEXT]
    own = [p for p in paths if p.startswith(name + "/")]
    if not own or name not in downloadable():
        raise PCError(
            f"no download known for {name!r}", f"use one of: {', '.join(downloadable()[:5])}, inductive/<split>"
        )
    extra: tuple[str, ...] = ()
    if name == "DB15K":
        extra = ("mmkb/DB15K_SameAsLink.txt", *TEXT)
    elif name == "MKG-W" or name.startswith("inductive/fb237"):
        extra = TEXT
    elif name.startswith("inductive/WN18RR"):
        extra = WN_TEXT
    return own + list(extra)


def url_of(entry: dict[str, Any]) -> str:
    base = os.environ.get("PC_DATA_MIRROR", RAW).rstrip("/")
    return f"{base}/{entry['repo']}/{entry['ref']}/{entry['path']}"


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https or a set mirror
            return response.read()
    except urllib.error.HTTPError as err:
        raise PCError(f"download of {url} failed (HTTP {err.code})", "check the name, or try again later") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PCError(
            f"cannot reach {url} ({reason})", "check the network connection (or set PC_DATA_MIRROR to a mirror)"
        ) from err


def download(name: str, root: Path, timeout: float = 60.0, show_progress: bool = True) -> list[Path]:
    """Fetch the files of ``name`` into ``root`` (skipping files already there with the right
    checksum); returns the files written. Nothing is moved into ``root`` before every file has
    been fetched and verified."""
    from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    entries = registry()
    wanted = [p for p in files_for(name) if not _verified(root / p, entries[p])]
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    try:
        columns = (*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not show_progress) as progress:
            task = progress.add_task(f"download {name}", total=sum(entries[p]["bytes"] for p in wanted))
            for path in wanted:
                entry = entries[path]
                data = _fetch(url_of(entry), timeout)
                digest = hashlib.sha256(data).hexdigest()
                if digest != entry["sha256"]:
                    raise PCError(
                        f"{url_of(entry)} does not match its recorded checksum (sha256 {digest[:12]}…, expected "
                        f"{entry['sha256'][:12]}…)",
                        "the source changed or the download was damaged: try again, or report it",
                    )
                target = staging / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
                progress.advance(task, entry["bytes"])
        return _move_into(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verified(path: Path, entry: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return hashlib.sha256(data).hexdigest() == entry["sha256"]


def _move_into(staging: Path, root: Path) -> list[Path]:
    """Move the verified files into ``root`` (one rename each, after every file was verified)."""
    written = []
    for file in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = root / file.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
        written.append(target)
    return written
