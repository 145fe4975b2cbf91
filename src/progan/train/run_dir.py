"""Run folders: automatic numbering and a lock so that one process trains into a folder.

``RUNS/00003-shapes-tiny-16/`` holds config.json, log.jsonl, TensorBoard events, sample grids,
generator snapshots, training states and checkpoints.json.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from progan.errors import ProganError

LOCK_NAME = "run.lock"


def new_run_dir(outdir: str | Path, description: str) -> Path:
    """Create and return ``outdir/NNNNN-description`` with the next free number."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
    number = max(numbers, default=-1) + 1
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", description).strip("_") or "run"
    while True:
        path = outdir / f"{number:05d}-{safe}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another process took this number
            number += 1


class RunLock:
    """An exclusive lock file ``run.lock`` holding ``hostname pid``.

    A lock left by a process that no longer exists on this host is stale and is taken over; a
    live holder raises :class:`ProganError` naming it. Use as a context manager.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    raise ProganError(
                        f"{self.path.parent}: another process is training into this run folder "
                        f"(lock {self.path}: {self._read()}). Stop it first, or delete the lock "
                        "file if that process runs on another machine and is gone."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is dead
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return self
        raise ProganError(f"{self.path}: could not take the run lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read(self) -> str:
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def _holder_alive(self) -> bool:
        parts = self._read().split()
        if len(parts) != 2 or not parts[1].isdigit():
            return False  # empty or garbled: left by a crash while writing it
        host, pid = parts[0], int(parts[1])
        if host != socket.gethostname():
            return True  # cannot check another machine: assume it is alive
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
