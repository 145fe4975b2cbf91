"""Small real generators saved as snapshots, for the explorer and projection tests."""

from __future__ import annotations

import pytest
import torch

from progan.config import NetworkConfig
from progan.nn import Generator
from progan.train.checkpoint import save_generator_snapshot


def save_snapshot(path, label_size: int = 0, depth: int = 2, resolution: int = 16, seed: int = 0):
    """A randomly initialised 16x16 generator (latent 8) written as a snapshot at ``depth``."""
    torch.manual_seed(seed)
    net = NetworkConfig(
        resolution=resolution,
        channels=3,
        latent_size=8,
        fmap_base=32,
        fmap_max=8,
        label_size=label_size,
    )
    save_generator_snapshot(path, Generator(net).state_dict(), net, depth=depth, alpha=1.0)
    return path


@pytest.fixture
def snapshot(tmp_path):
    return save_snapshot(tmp_path / "snapshot-000001.000.safetensors")


@pytest.fixture
def cond_snapshot(tmp_path):
    return save_snapshot(tmp_path / "cond-000001.000.safetensors", label_size=3)


@pytest.fixture
def early_snapshot(tmp_path):
    return save_snapshot(tmp_path / "early-000001.000.safetensors", depth=1)
