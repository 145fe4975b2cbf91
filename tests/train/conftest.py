"""Shared fixtures of the training tests: small synthetic datasets (configs: micro.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from progan.data.create import make_synthetic_dataset


@pytest.fixture(scope="session")
def shapes8(tmp_path_factory) -> Path:
    """256 labelled 8x8 synthetic images."""
    path = tmp_path_factory.mktemp("data") / "shapes8.zip"
    make_synthetic_dataset(path, count=256, resolution=8, seed=1)
    return path


@pytest.fixture(scope="session")
def shapes16(tmp_path_factory) -> Path:
    """128 labelled 16x16 synthetic images."""
    path = tmp_path_factory.mktemp("data") / "shapes16.zip"
    make_synthetic_dataset(path, count=128, resolution=16, seed=3)
    return path
