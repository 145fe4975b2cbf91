"""Helpers for the data tests: small image folders and datasets built on the fly."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progan.data.dataset import DatasetWriter


@pytest.fixture
def rgb_folder(tmp_path: Path) -> Path:
    """A folder of 6 RGB PNGs of 40x48 (two in a sub-folder)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "rgb"
    (folder / "sub").mkdir(parents=True)
    for rel in ["img0.png", "img1.png", "img2.png", "img3.png", "sub/more0.png", "sub/more1.png"]:
        arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / rel)
    return folder


def _make_dataset(
    dest: Path, count: int = 10, resolution: int = 8, channels: int = 3, labels: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Write a random dataset; returns (images uint8 (N, C, R, R), labels int64 (N,) or None)."""
    rng = np.random.default_rng(count * 7 + resolution)
    images = rng.integers(0, 256, (count, channels, resolution, resolution), dtype=np.uint8)
    lab = rng.integers(0, 4, count).astype(np.int64) if labels else None
    with DatasetWriter(dest, resolution, channels, source="test") as w:
        for i in range(count):
            w.add(images[i], None if lab is None else int(lab[i]))
    return images, lab


@pytest.fixture
def make_dataset():
    """``make_dataset(dest, count=10, resolution=8, channels=3, labels=True)`` writes a random
    dataset and returns ``(images uint8 (N, C, R, R), labels int64 (N,) or None)``."""
    return _make_dataset


@pytest.fixture
def cifar_files() -> dict[str, bytes]:
    """The CIFAR-10 python layout (file name -> bytes) with 4 images per batch and 5 classes,
    pickled with protocol 2 like the original files."""
    n = 4
    rng = np.random.default_rng(0)
    files = {}
    for b in range(1, 6):
        batch = {
            b"batch_label": f"training batch {b} of 5".encode(),
            b"labels": [int(x) for x in rng.integers(0, 5, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)],
        }
        files[f"data_batch_{b}"] = pickle.dumps(batch, protocol=2)
    files["batches.meta"] = pickle.dumps(
        {
            b"label_names": [s.encode() for s in ("airplane", "automobile", "bird", "cat", "deer")],
            b"num_vis": 3072,
        },
        protocol=2,
    )
    files["test_batch"] = files["data_batch_1"]
    return files
