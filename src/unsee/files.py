"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unsee.errors import UnseeError

# Read once at import: os.umask can only be read by setting it, which would race with other threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def as_json(value: Any) -> Any:
    """`value` as a JSON file gives it back (tuples as lists, paths as strings), so saved and current settings compare."""
    return json.loads(json.dumps(value, default=str))


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)` then rename tmp over `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file owner-only (0600); give it the mode a plain new file gets (0666 - umask),
        # so images and reports are readable by the web server or colleague that should read them.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_dir(folder: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_folder)`, then swap it in for `folder`: `folder` is the old or the new one, never half of
    either. Between the two renames only `folder.old` exists (a reader may fall back to it)."""
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(tmp)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def append_line_group(path: str | Path, lines: list[str]) -> None:
    """Append lines with one O_APPEND write and fsync: a crash keeps all of them or none.

    One `write` on an O_APPEND file is not interleaved with other writers' on Linux
    local filesystems, so several processes may append to the same file.
    """
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that `path` is, or can be created as, a writable folder, without creating it."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UnseeError(
            f"{what} {str(path)!r} cannot be created: {str(probe)!r} is a file, not a folder; choose another path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UnseeError(
            f"{what} {str(path)!r} is not writable (no write permission on {str(probe)!r}); choose another path"
        )
    return path
