"""Generator snapshots (safetensors) and full training states, written crash-safely.

A run folder holds:

* ``snapshot-KKKKKK.KKK.safetensors``: the EMA generator's weights; its metadata holds the
  :class:`~progan.config.NetworkConfig` as JSON and the depth/alpha it was trained to, so it
  loads with no training state and no pickle.
* ``raw-snapshot-KKKKKK.KKK.safetensors``: the raw (trained, not averaged) generator at the same
  point, in the same format (``progan generate --raw``; metrics ``metric-raw/...``). Its name
  does not match ``snapshot-*``, so everything that lists EMA snapshots is unchanged.
* ``state-KKKKKK.KKK.pt``: the full training state (G, D, EMA, both Adam states, schedule position,
  data position, RNG states) as plain tensors and numbers, written with ``torch.save`` and read
  with ``torch.load(weights_only=True)``, which refuses any pickled code.
* ``checkpoints.json``: the manifest, listing every complete checkpoint with its byte size and
  SHA-256. A checkpoint is entered only after its files are fully on disk; loading verifies
  size and hash and falls back to the previous entry when a file is damaged.

KKKKKK.KKK is the number of kimg (thousands of real images shown) at the checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from progan.config import NetworkConfig, from_dict, to_dict
from progan.errors import CheckpointError, ConfigError
from progan.fileio import atomic_write_bytes, atomic_write_json

MANIFEST = "checkpoints.json"
SNAPSHOT_FORMAT = "progan-generator"


def snapshot_name(kimg: float) -> str:
    """``snapshot-000123.456.safetensors`` for 123,456 images shown (sorts by kimg)."""
    return f"snapshot-{kimg:010.3f}.safetensors"


RAW_PREFIX = "raw-"  # raw-snapshot-KKKKKK.KKK.safetensors: the raw generator's snapshot


def raw_snapshot_name(kimg: float) -> str:
    """``raw-snapshot-000123.456.safetensors``: the raw generator beside :func:`snapshot_name`."""
    return RAW_PREFIX + snapshot_name(kimg)


def state_name(kimg: float) -> str:
    """``state-000123.456.pt`` for 123,456 images shown."""
    return f"state-{kimg:010.3f}.pt"


# --------------------------------------------------------------------------------------------
# Generator snapshots


def save_generator_snapshot(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    network: NetworkConfig,
    depth: int,
    alpha: float,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write G's weights + config as safetensors atomically; returns the file's SHA-256."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {
        "format": SNAPSHOT_FORMAT,
        "version": "1",
        "network": json.dumps(to_dict(network)),
        "depth": str(int(depth)),
        "alpha": repr(float(alpha)),
        "extra": json.dumps(extra or {}),
    }
    data = save_safetensors_bytes(tensors, metadata=metadata)
    _write_or_explain(Path(path), data)
    return hashlib.sha256(data).hexdigest()


@dataclass
class GeneratorSnapshot:
    """A loaded snapshot: weights (CPU tensors), network config, trained depth and alpha."""

    state_dict: dict[str, torch.Tensor]
    network: NetworkConfig
    depth: int
    alpha: float
    extra: dict[str, Any]


def load_generator_snapshot(path: str | Path) -> GeneratorSnapshot:
    """Read a snapshot written by :func:`save_generator_snapshot` (no pickle involved)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read generator snapshot: {exc}") from exc
    try:
        tensors = load_safetensors_bytes(data)
        from safetensors import safe_open  # metadata needs the file API

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise CheckpointError(
            f"{path}: not a progan generator snapshot (metadata format {meta.get('format')!r})"
        )
    try:
        network = from_dict(NetworkConfig, json.loads(meta["network"]))
        network.validate()
        return GeneratorSnapshot(
            tensors,
            network,
            int(meta["depth"]),
            float(meta["alpha"]),
            json.loads(meta.get("extra", "{}")),
        )
    except (KeyError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: damaged snapshot metadata ({exc})") from exc


def _write_failure(path: Path, exc: OSError) -> str:
    entries = []
    with contextlib.suppress(CheckpointError):
        entries = read_manifest(path.parent)
    previous = (
        f"the previous checkpoint ({entries[-1]['state']}, {entries[-1]['kimg']:.3f} kimg) is "
        f"intact; free space and resume with: progan train --resume {path.parent}"
        if entries
        else "no earlier checkpoint was affected"
    )
    return f"{path}: could not write ({exc.strerror or exc}); nothing was replaced: {previous}"


def _write_or_explain(path: Path, data: bytes) -> None:
    """Atomic write; an OSError (full disk, quota, permissions) becomes a CheckpointError
    saying that the previous checkpoint is untouched."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CheckpointError(_write_failure(path, exc)) from exc


# --------------------------------------------------------------------------------------------
# Training states


def serialize_training_state(state: dict[str, Any]) -> bytes:
    """``torch.save`` bytes of a dict of tensors, numbers, strings, lists and dicts."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_training_state(path: str | Path, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a training state with ``weights_only=True``; verify size/hash when ``expected``
    (a manifest entry) is given. Raises :class:`CheckpointError` naming the problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read training state: {exc}") from exc
    if expected is not None:
        if len(data) != expected.get("state_bytes"):
            raise CheckpointError(
                f"{path}: truncated or altered ({len(data)} bytes, manifest says "
                f"{expected.get('state_bytes')})"
            )
        if hashlib.sha256(data).hexdigest() != expected.get("state_sha256"):
            raise CheckpointError(f"{path}: SHA-256 does not match the manifest (file damaged)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file contains pickled objects other than tensors and plain "
            f"data, which progan never writes (nothing in it was executed). Details: {exc}"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable training state ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != "progan-training-state":
        raise CheckpointError(f"{path}: not a progan training state")
    return state


# --------------------------------------------------------------------------------------------
# Manifest of complete checkpoints


def read_manifest(run_dir: str | Path) -> list[dict[str, Any]]:
    """Entries of ``checkpoints.json``, oldest first ([] when there is none)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["checkpoints"]
        assert isinstance(entries, list)
        return entries
    except (OSError, ValueError, KeyError, AssertionError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint manifest ({exc})") from exc


def write_checkpoint(
    run_dir: str | Path,
    kimg: float,
    images: int,
    training_state: dict[str, Any],
    snapshot_sha256: str,
    keep: int,
) -> dict[str, Any]:
    """Write ``state-KKKKKK.KKK.pt``, then add it to the manifest, then prune old states.

    The snapshot for the same kimg must already be written. The previous checkpoint stays on
    disk and in the manifest until the new one is complete, so a failure at any point (full
    disk, kill) leaves the last good checkpoint usable. Only the ``keep`` newest training
    states are kept; generator snapshots are all kept.
    """
    run_dir = Path(run_dir)
    data = serialize_training_state(training_state)
    state_file = state_name(kimg)
    _write_or_explain(run_dir / state_file, data)
    entry = {
        "kimg": kimg,
        "images": images,
        "state": state_file,
        "state_bytes": len(data),
        "state_sha256": hashlib.sha256(data).hexdigest(),
        "snapshot": snapshot_name(kimg),
        "snapshot_sha256": snapshot_sha256,
    }
    entries = [e for e in read_manifest(run_dir) if e["state"] != state_file] + [entry]
    pruned = entries[:-keep] if keep > 0 else []
    kept = entries[len(pruned) :]
    try:
        atomic_write_json(run_dir / MANIFEST, {"checkpoints": kept})
    except OSError as exc:
        raise CheckpointError(_write_failure(run_dir / MANIFEST, exc)) from exc
    for old in pruned:
        with contextlib.suppress(OSError):
            os.unlink(run_dir / old["state"])
    return entry


def newest_valid_checkpoint(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest entry, loaded state) of the newest checkpoint that verifies.

    Damaged newer checkpoints are skipped with a warning naming them.
    """
    run_dir = Path(run_dir)
    entries = read_manifest(run_dir)
    if not entries:
        raise CheckpointError(f"{run_dir}: no complete checkpoint to resume from")
    problems = []
    for entry in reversed(entries):
        try:
            return entry, load_training_state(run_dir / entry["state"], expected=entry)
        except CheckpointError as exc:
            problems.append(str(exc))
            warnings.warn(f"skipping damaged checkpoint: {exc}", stacklevel=2)
    raise CheckpointError(f"{run_dir}: every checkpoint is damaged:\n  " + "\n  ".join(problems))


def newest_snapshot(path: str | Path, raw: bool = False) -> Path:
    """The newest generator snapshot in a run folder, or in the newest run of a folder of
    runs (the ``--outdir`` of ``progan train``); ``raw=True``: the newest raw generator's
    (``raw-snapshot-*``, written beside each EMA snapshot since issue 24)."""
    path = Path(path)
    pattern = (RAW_PREFIX if raw else "") + "snapshot-*.safetensors"
    snaps = sorted(path.glob(pattern))
    if snaps:
        return snaps[-1]
    runs = (
        sorted(p for p in path.iterdir() if p.is_dir() and p.name[:5].isdigit())
        if path.is_dir()
        else []
    )
    for run in reversed(runs):
        snaps = sorted(run.glob(pattern))
        if snaps:
            return snaps[-1]
    older = " (runs made before raw snapshots existed have only EMA ones)" if raw else ""
    raise CheckpointError(
        f"{path}: no {'raw ' if raw else ''}generator snapshot ({pattern}) found here or in "
        f"its run folders{older}"
    )


def raw_snapshot_for(snapshot: str | Path) -> Path:
    """The raw generator's snapshot beside the EMA snapshot ``snapshot`` (same kimg); a raw
    snapshot is returned as it is. Raises CheckpointError when it does not exist."""
    snapshot = Path(snapshot)
    raw = (
        snapshot
        if snapshot.name.startswith(RAW_PREFIX)
        else (snapshot.with_name(RAW_PREFIX + snapshot.name))
    )
    if not raw.is_file():
        raise CheckpointError(
            f"{snapshot}: no raw generator snapshot beside it ({raw.name} is missing; runs "
            "made before raw snapshots existed have only EMA ones)"
        )
    return raw


BEST_NAME = "best.json"  # the best fully grown snapshot by the first training metric


def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``best.json`` (metric, value, kimg, snapshot), or None when absent/broken."""
    path = Path(run_dir) / BEST_NAME
    try:
        best = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return best if isinstance(best, dict) and "snapshot" in best else None
