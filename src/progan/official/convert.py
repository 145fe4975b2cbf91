"""``progan convert FILE.pkl OUT``: an official pickle -> files progan reads without it.

OUT is a new (or empty) folder that receives, only after the whole pickle has been read and
mapped:

* ``snapshot-official.safetensors``: Gs as a progan generator snapshot (weights, network
  config, depth and fade), so ``progan generate OUT`` and every command taking a checkpoint
  use it like any snapshot;
* ``networks.pt``: G, D and Gs (key ``G_ema``) in the layout of a training state
  (format ``progan-networks``, read with ``torch.load(weights_only=True)``), for
  ``progan train --init-from``;
* ``source.json``: where the weights came from (file name, SHA-256, names, settings, lod).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from progan.config import TrainConfig, to_dict
from progan.errors import CheckpointError
from progan.fileio import atomic_write_bytes, atomic_write_json
from progan.official.load import OfficialFile, read_official
from progan.train.checkpoint import save_generator_snapshot, serialize_training_state

SNAPSHOT_FILE = "snapshot-official.safetensors"
NETWORKS_FILE = "networks.pt"
SOURCE_FILE = "source.json"
NETWORKS_FORMAT = "progan-networks"


def networks_state(official: OfficialFile) -> dict[str, Any]:
    """G, D and Gs of ``official`` as a plain dict (tensors, numbers, strings)."""
    return {
        "format": NETWORKS_FORMAT,
        "version": 1,
        "config": to_dict(TrainConfig(network=official.network)),
        "G": official.state_dicts["G"],
        "D": official.state_dicts["D"],
        "G_ema": official.state_dicts["Gs"],
        "depth": dict(official.depth),
        "alpha": dict(official.alpha),
        "source": official.provenance()["source"],
        "source_sha256": official.sha256,
    }


def convert_official(path: str | Path, out: str | Path) -> Path:
    """Convert an official pickle into the folder ``out`` (created; must be empty if it
    exists). Returns the snapshot's path. Nothing is written when the pickle is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: exists and is not an empty folder; choose a new one")
    official = read_official(path)  # every check happens before anything is written
    state = serialize_training_state(networks_state(official))
    out.mkdir(parents=True, exist_ok=True)
    snapshot = out / SNAPSHOT_FILE
    save_generator_snapshot(
        snapshot,
        official.state_dicts["Gs"],
        official.network,
        official.depth["Gs"],
        official.alpha["Gs"],
        extra={"converted_from": official.provenance()["source"], "sha256": official.sha256},
    )
    atomic_write_bytes(out / NETWORKS_FILE, state)
    atomic_write_json(out / SOURCE_FILE, official.provenance())
    return snapshot


def load_networks_state(path: str | Path) -> dict[str, Any]:
    """Read ``networks.pt`` (or any training state) with ``weights_only=True``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable progan networks file ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") not in (
        NETWORKS_FORMAT,
        "progan-training-state",
    ):
        raise CheckpointError(f"{path}: not a progan networks file or training state")
    return state
