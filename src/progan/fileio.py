"""Crash-safe file writing.

Every file progan writes (datasets, checkpoints, images, JSON) goes through
:func:`atomic_write`: the content is written to a temporary file in the destination's folder,
flushed to disk, and renamed over the destination. A crash or a full disk leaves either the old
file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# mkstemp creates files readable by their owner only; finished files get the usual
# permissions (0o666 minus the umask), like files written with open(). Read once at import.
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``write_fn`` receives a binary file object to write into.

    The temporary file lives beside ``path`` (same file system, so the rename is atomic) and is
    removed if ``write_fn`` or the flush fails; the exception is re-raised unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_UMASK)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented UTF-8 JSON (with a trailing newline)."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry (the rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
