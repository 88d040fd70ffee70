"""Write an output folder safely: refuse to replace anything that is not ours, build the new folder
beside the old one, swap it in, and clean up after runs that were killed.

Why this shape: ``--overwrite`` must never delete a user's folder (only one that holds our marker
file, e.g. ``prune_manifest.json``), and a crash at any point must leave the user with the old
folder or the new one, never neither. The new folder is built in a hidden sibling
``.NAME.partial-XXXX`` that carries a small JSON marker naming the process that writes it; on
success the old folder is renamed to ``.NAME.old-XXXX``, the new one renamed into place, and the
old one deleted. A later run in the same parent folder removes partials whose writer process is
gone, and puts back an ``.old-`` folder whose swap was interrupted before the new one arrived.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PCError

PARTIAL_INFIX = ".partial-"
OLD_INFIX = ".old-"
MARKER = ".prune_compensate_partial.json"


def _default_mode() -> int:
    """The mode ``mkdir`` would give under the current umask (``mkdtemp`` gives 0700)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _normal_permissions(folder: Path) -> None:
    """Files as ``open`` would create them under the umask (some writers, safetensors among them,
    leave 0600), folders as ``mkdir`` would."""
    mode = _default_mode()
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, mode if path.is_dir() else mode & 0o666)


def _writer_alive(marker: Path) -> bool:
    """True unless the marker names a process on this host that no longer runs."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable marker: not provably ours to delete
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str, owned: str) -> None:
    """Tidy what killed runs left beside ``parent/name``.

    * ``.X.partial-*`` folders (any X) holding our marker whose writer process is gone: removed;
    * ``.name.old-*`` holding ``owned`` while ``parent/name`` is missing (a swap interrupted
      between its two renames): renamed back to ``name``; if ``name`` exists, removed.
    Nothing without our marker or ``owned`` file is touched.
    """
    for entry in parent.glob(f".*{PARTIAL_INFIX}*"):
        marker = entry / MARKER
        if entry.is_dir() and not entry.is_symlink() and marker.is_file() and not _writer_alive(marker):
            shutil.rmtree(entry, ignore_errors=True)
    for entry in sorted(parent.glob(f".{name}{OLD_INFIX}*")):
        if not (entry.is_dir() and (entry / owned).is_file()):
            continue
        target = parent / name
        if target.exists():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            os.replace(entry, target)


def check_out_dir(out: Path, overwrite: bool, owned: str, flag: str = "--out") -> None:
    """Fail before any work if ``out`` cannot be written as asked.

    ``owned`` is the file that marks a folder as ours (only such a folder may be overwritten).
    """
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        raise PCError(f"parent folder {parent} of {flag} does not exist", "create it first")
    try:  # a real write probe: os.access says yes to root even on read-only file systems
        Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.probe-")).rmdir()
    except OSError as err:
        raise PCError(f"cannot write into {parent} ({err.strerror})", f"choose a writable {flag}") from err
    clean_stale(parent, out.name, owned)
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise PCError(f"{out} already exists", f"choose a new {flag} or pass --overwrite")
    if out.is_symlink() or not out.is_dir() or not (out / owned).is_file():
        raise PCError(
            f"{out} exists and is not a folder written by prune_compensate (no {owned}), so --overwrite "
            "will not replace it",
            f"choose a new {flag} or remove it yourself",
        )


@contextmanager
def atomic_out_dir(out: str | os.PathLike, overwrite: bool, owned: str) -> Iterator[Path]:
    """Yield an empty hidden folder to write into; on success it replaces ``out`` (see module doc).

    ``owned`` must be written into the folder by the caller; it is what later allows
    ``--overwrite`` of this folder.
    """
    out = Path(out).resolve()
    check_out_dir(out, overwrite, owned)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{PARTIAL_INFIX}"))
        os.chmod(tmp, _default_mode())
    except OSError as err:
        raise PCError(f"cannot write into {out.parent} ({err.strerror})", "choose a writable --out") from err
    marker = tmp / MARKER
    try:
        marker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
        yield tmp
        if not (tmp / owned).is_file():
            raise RuntimeError(f"atomic_out_dir: the writer did not create {owned}")
        marker.unlink()
        _normal_permissions(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{OLD_INFIX}"))
            old.rmdir()  # a unique free name for the old folder
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_file(path: Path, flag: str) -> None:
    """Fail before any work if the file ``path`` (``--json``, ``--plot``) cannot be written."""
    path = Path(path)
    parent = path.resolve().parent
    if path.is_dir():
        raise PCError(f"{flag} {path} is a folder", f"pass a file path to {flag}")
    if not parent.is_dir():
        raise PCError(f"parent folder {parent} of {flag} does not exist", "create it first")
    try:
        handle, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise PCError(f"cannot write {flag} into {parent} ({err.strerror})", f"choose a writable {flag}") from err


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; renamed onto ``path`` (mode as ``open`` would
    give under the umask) when the block ends without error, removed otherwise (no half-written file)."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.partial-")
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename (no half-written file)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
