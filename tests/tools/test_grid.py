"""Tests for progan.tools.grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from progan.tools.grid import make_grid, save_image_grid


def _batch(n: int, c: int, h: int = 4, w: int = 5) -> np.ndarray:
    # image i is filled with value 10 * (i + 1)
    return np.stack([np.full((c, h, w), 10 * (i + 1), np.uint8) for i in range(n)])


def test_layout_default_cols_is_sqrt():
    grid = make_grid(_batch(9, 3))
    assert grid.shape == (12, 15, 3) and grid.dtype == np.uint8
    # row-major: image 5 (value 60) at row 1, col 2
    assert (grid[4:8, 10:15] == 60).all()


def test_partial_last_row_black_and_padding():
    grid = make_grid(torch.from_numpy(_batch(5, 3)), cols=2, pad=1)
    assert grid.shape == (3 * 4 + 2, 2 * 5 + 1, 3)
    assert (grid[4, :] == 0).all()  # padding row
    assert (grid[10:14, 6:11] == 0).all()  # empty cell
    assert (grid[10:14, 0:5] == 50).all()


def test_grayscale_and_png_roundtrip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    grid = make_grid(images, cols=4)
    assert grid.shape == (8, 32, 1)
    path = save_image_grid(images, tmp_path / "sub" / "g.png", cols=4)
    with Image.open(path) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grid[:, :, 0])
    rgb = save_image_grid(_batch(2, 3), tmp_path / "rgb.png")
    with Image.open(rgb) as im:
        assert im.mode == "RGB" and im.size == (10, 4)
    assert not list(tmp_path.rglob("*.tmp"))


def test_rejects_float_images():
    with pytest.raises(ValueError):
        make_grid(np.zeros((1, 3, 4, 4), np.float32))
