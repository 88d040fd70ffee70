"""Datasets for someone who cloned the repository: data roots, PyKEEN's download as the fallback
for the graphs it distributes, and ``pc data download`` (checksummed) for the others — all tested
offline: the downloads come from a mirror served on 127.0.0.1, PyKEEN's from a pre-filled cache."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_error
from typer.testing import CliRunner

import prune_compensate_recipes.mkgc.staged as staged
from prune_compensate.cli import app
from prune_compensate_recipes.mkgc.data import load_kg
from prune_compensate_recipes.mkgc.download import files_for, registry

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = staged.default_shared_root()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="the staged datasets are not beside this checkout")
runner = CliRunner()


@pytest.fixture
def no_default_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with nothing staged: no shared/data beside the checkout, an empty cache."""
    monkeypatch.setattr(staged, "default_shared_root", lambda: tmp_path / "no-checkout-data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(staged.DATA_DIR_ENV, raising=False)
    return tmp_path / "cache" / "prune_compensate" / "data"


def _mirror_tree(root: Path, names: list[str], damage: str | None = None) -> None:
    """Lay out ``repo/ref/path`` files as the public sources serve them (plain text)."""
    entries = registry()
    for path in names:
        entry = entries[path]
        data = (SHARED / path).read_bytes()
        data = gzip.decompress(data) if path.endswith(".gz") else data
        if path == damage:
            data = data.replace(b"1", b"2", 1)
        target = root / entry["repo"] / entry["ref"] / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A static file server on 127.0.0.1 standing in for the public sources (PC_DATA_MIRROR)."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PC_DATA_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()


@needs_shared
def test_download_verifies_and_loads_like_the_staged_copy(mirror: Path, no_default_roots: Path) -> None:
    _mirror_tree(mirror, files_for("MKG-Y"))
    result = runner.invoke(app, ["data", "download", "MKG-Y", "--quiet"])
    assert result.exit_code == 0, result.output
    downloaded = staged.load_staged("MKG-Y")  # found in the user cache now
    reference = load_kg(SHARED / "MKG-Y", name="MKG-Y")
    assert downloaded.entities == reference.entities and downloaded.relations == reference.relations
    for split in ("train", "valid", "test"):
        assert downloaded.split(split).tolist() == reference.split(split).tolist()
    assert downloaded.entity_text[0] == reference.entities[0].replace("_", " ")
    # a second run finds every file verified and fetches nothing
    assert "0 files written" in runner.invoke(app, ["data", "download", "MKG-Y", "--quiet"]).output


@needs_shared
def test_a_damaged_download_is_one_line_and_leaves_nothing(
    mirror: Path, no_default_roots: Path, tmp_path: Path
) -> None:
    _mirror_tree(mirror, files_for("MKG-Y"), damage="MKG-Y/train2id.txt")
    out = tmp_path / "data"
    msg = cli_error(["data", "download", "MKG-Y", "--data-dir", str(out), "--quiet"])
    assert "does not match its recorded checksum" in msg and "train2id.txt" in msg
    assert not list(out.rglob("*.txt"))  # nothing moved in before every file was verified


def test_unreachable_source_is_one_line(no_default_roots: Path, tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PC_DATA_MIRROR", f"http://127.0.0.1:{port}")
    msg = cli_error(["data", "download", "MKG-Y", "--data-dir", str(tmp_path / "d"), "--quiet"])
    assert "cannot reach http://127.0.0.1" in msg and "network connection" in msg


def test_missing_dataset_says_which_way_to_get_it(no_default_roots: Path, monkeypatch) -> None:
    msg = cli_error(["data", "info", "DB15K"])
    assert "dataset DB15K is not under any data root" in msg and "pc data download DB15K" in msg

    def offline(*_: object, **__: object) -> None:
        raise ConnectionError("no network")

    import pykeen.datasets

    monkeypatch.setattr(pykeen.datasets, "FB15k237", offline)
    msg = cli_error(["data", "info", "FB15k-237"])
    assert "PyKEEN's download of it failed (ConnectionError: no network)" in msg and "network connection" in msg
    assert "no-such" in cli_error(["data", "download", "no-such"])


def test_pykeen_fallback_reads_pykeens_cache(no_default_roots: Path, tmp_path: Path) -> None:
    """FB15k-237 through PyKEEN's own loader: its cache holds the archive it would download."""
    fixture = FIXTURES / "fb15k237_slice"
    cache = tmp_path / "pykeen-cache"
    (cache / "fb15k237").mkdir(parents=True)  # where PyKEEN keeps the archive it downloads
    with zipfile.ZipFile(cache / "fb15k237" / "FB15K-237.2.zip", "w") as archive:
        for split in ("train", "valid", "test"):
            archive.write(fixture / f"{split}.txt", f"Release/{split}.txt")
    folder = staged.pykeen_fallback("FB15k-237", no_default_roots, cache_root=cache)
    via_pykeen = load_kg(folder)
    reference = load_kg(fixture)

    def labelled(data, split: str) -> set[tuple[str, str, str]]:
        return {(data.entities[h], data.relations[r], data.entities[t]) for h, r, t in data.split(split).tolist()}

    assert labelled(via_pykeen, "train") == labelled(reference, "train")
    # PyKEEN drops evaluation triples whose entities the training split lacks; the rest are identical
    assert labelled(via_pykeen, "test") <= labelled(reference, "test") and labelled(via_pykeen, "test")
    assert staged.dataset_folder("FB15k-237") == folder  # later loads find it without PyKEEN


def test_data_dir_comes_first(tmp_path: Path, no_default_roots: Path, monkeypatch) -> None:
    mine = tmp_path / "mine" / "MKG-Y"
    mine.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (mine / f"{split}.txt").write_text("a\tr\tb\nb\tr\tc\n")
    monkeypatch.setenv(staged.DATA_DIR_ENV, str(tmp_path / "env"))
    assert staged.data_roots(tmp_path / "mine")[:2] == [tmp_path / "mine", tmp_path / "env"]
    data = staged.load_staged("MKG-Y", tmp_path / "mine")
    assert data.num_entities == 3 and data.entity_text == ["a", "b", "c"]
    summary = json.loads(json.dumps(data.summary()))
    assert summary["splits"]["train"] == 2
