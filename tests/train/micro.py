"""Micro training configs for the training tests (imported by them and by conftest.py)."""

from __future__ import annotations

from pathlib import Path

from progan.config import TrainConfig
from progan.train.api import configure


def make_micro_config(
    data: Path,
    outdir: Path,
    *,
    phase_kimg: float,
    total_kimg: float,
    tick_kimg: float,
    snapshot_ticks: int = 1,
    keep_checkpoints: int = 3,
    **overrides,
) -> TrainConfig:
    """The tiny preset shrunk further (feature maps <= 16, latent 8, 4 grid images), data
    cached on the CPU and no loader workers unless overridden; phases, length and ticks in
    kimg as given."""
    overrides = {"num_workers": 0, "data_cache": "cpu", **overrides}
    cfg = configure(data, outdir, "tiny", **overrides)
    cfg.network.fmap_base, cfg.network.fmap_max, cfg.network.latent_size = 64, 16, 8
    cfg.schedule.stabilize_kimg = cfg.schedule.fade_kimg = phase_kimg
    cfg.schedule.total_kimg = total_kimg
    cfg.tick_kimg = tick_kimg
    cfg.snapshot_ticks = snapshot_ticks
    cfg.keep_checkpoints = keep_checkpoints
    cfg.grid_size = 4
    cfg.validate()
    return cfg
