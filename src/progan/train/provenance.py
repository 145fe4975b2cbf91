"""How a run was run: ``run.json`` in the run folder, one entry per training session.

Every session of a run (its start and every ``--resume``) appends one record to the
``sessions`` list of ``run.json`` (beside ``config.json``; written atomically, earlier entries
kept as they are):

* ``started`` (UTC, ISO 8601), ``command`` (``sys.argv``), ``resumed_from`` (the checkpoint a
  resumed session loaded, else None);
* ``world_size``, ``hostname`` (rank 0's), ``devices`` (one per rank: its rank, host and
  device name: the CUDA device's name, or ``"cpu"`` and the processor);
* ``python``, ``torch``, ``progan`` (versions) and ``git`` (the commit of the progan source and
  whether its tracked files had changes, when the package runs from a git checkout; else
  None).

A ``run.json`` that cannot be read is kept aside as ``run-unreadable-TIME.json`` and a new
list started, so that a damaged record never stops training.

Data-parallel, every rank describes its own device (:func:`record_session` gathers them) and
rank 0 alone writes the file.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from progan.fileio import atomic_write_json
from progan.train.distributed import Dist

__all__ = ["RUN_NAME", "append_session", "device_name", "git_state", "read_sessions"]

RUN_NAME = "run.json"
GIT_TIMEOUT_S = 5.0


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second (``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _processor() -> str:
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return name or platform.machine()


def device_name(device: torch.device) -> str:
    """The CUDA device's name (``"cuda:0 NVIDIA H100 80GB HBM3"``) or ``"cpu"`` with the
    processor's name."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    if device.type == "cpu":
        return f"cpu {_processor()}".strip()
    return str(device)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(package_dir: Path | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the progan package runs from,
    or None when it does not run from one (an installed wheel, no git, a timeout). A
    repository that merely encloses an installed package does not count: the package's own
    files must be tracked by it."""
    here = package_dir or Path(__file__).resolve().parents[1]
    if _git(["ls-files", "--error-unmatch", "__init__.py"], here) is None:
        return None
    commit = _git(["rev-parse", "HEAD"], here)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], here)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _progan_version() -> str:
    """``progan.__version__``, else the installed distribution's version."""
    import progan

    version = getattr(progan, "__version__", None)
    if version:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version("progan")
    except metadata.PackageNotFoundError:
        return "unknown"


def session_record(
    started: str,
    devices: list[dict[str, str]],
    resumed_from: str | None,
    world_size: int = 1,
) -> dict[str, Any]:
    """One ``run.json`` session entry (see the module docstring); ``devices`` per rank."""
    return {
        "started": started,
        "command": list(sys.argv),
        "resumed_from": resumed_from,
        "world_size": int(world_size),
        "hostname": devices[0]["host"] if devices else socket.gethostname(),
        "devices": devices,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "progan": _progan_version(),
        "git": git_state(),
    }


def read_sessions(run_dir: str | Path) -> list[dict[str, Any]]:
    """The session entries of ``run_dir/run.json`` (empty when there is none yet)."""
    path = Path(run_dir) / RUN_NAME
    if not path.is_file():
        return []
    try:
        sessions = json.loads(path.read_text(encoding="utf-8"))["sessions"]
    except (OSError, ValueError, KeyError, TypeError):
        sessions = None
    if not isinstance(sessions, list):  # not ours: keep it aside, start a new list
        path.replace(path.with_name(f"run-unreadable-{utc_now().replace(':', '')}.json"))
        return []
    return sessions


def append_session(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``run_dir/run.json``'s sessions (atomically)."""
    sessions = read_sessions(run_dir)
    sessions.append(record)
    atomic_write_json(Path(run_dir) / RUN_NAME, {"sessions": sessions})


def record_session(
    run_dir: Path,
    dist: Dist | None,
    device: torch.device,
    started: str,
    resumed_from: str | None = None,
) -> None:
    """Every rank calls this: each names its host and device; rank 0 appends the session."""
    rank = dist.rank if dist is not None else 0
    mine = {"rank": rank, "host": socket.gethostname(), "device": device_name(device)}
    if dist is None:
        append_session(run_dir, session_record(started, [mine], resumed_from))
        return
    devices = dist.all_gather_object(mine, "exchanging the device names")
    if dist.is_main:
        append_session(run_dir, session_record(started, devices, resumed_from, dist.world_size))
