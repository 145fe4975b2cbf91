"""Tests for progan.tools.neighbors."""

from __future__ import annotations

import numpy as np
import torch

from progan.tools.grid import make_grid
from progan.tools.neighbors import (
    center_crop,
    find_nearest_neighbors,
    neighbor_grid,
    pixel_features,
)


class ListDataset:
    """Minimal ImageDataset stand-in over a uint8 NCHW array."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], -1


def _data(n=300, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


def test_planted_duplicate_found_at_distance_zero():
    reals = _data()
    fakes = np.random.default_rng(1).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    reals[217] = fakes[2]  # plant an exact copy in a later batch
    idx, dist = find_nearest_neighbors(fakes, ListDataset(reals), k=3, batch_size=64)
    assert idx.shape == (4, 3) and dist.shape == (4, 3)
    assert idx[2, 0] == 217 and dist[2, 0] == 0.0
    assert (np.diff(dist, axis=1) >= 0).all()
    assert (dist[[0, 1, 3], 0] > 0).all()


def test_matches_brute_force_regardless_of_batch_size():
    reals = _data(100, seed=3)
    fakes = _data(5, seed=4)
    flat_r = reals.reshape(100, -1).astype(np.float64)
    flat_f = fakes.reshape(5, -1).astype(np.float64)
    d = np.sqrt(((flat_f[:, None] - flat_r[None]) ** 2).sum(-1))
    expected = np.argsort(d, axis=1, kind="stable")[:, :4]
    for bs in (7, 100, 1000):
        idx, dist = find_nearest_neighbors(fakes, ListDataset(reals), k=4, batch_size=bs)
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_allclose(dist, np.take_along_axis(d, expected, 1), rtol=1e-12)


def test_crop_and_custom_features():
    reals = _data(50)
    fakes = reals[[10]].copy()
    fakes[:, :, 0, :] = 0  # differs only in the border row
    idx, dist = find_nearest_neighbors(fakes, ListDataset(reals), k=1, crop=0.5)
    assert idx[0, 0] == 10 and dist[0, 0] == 0.0
    assert center_crop(torch.zeros(1, 3, 8, 8), 0.5).shape == (1, 3, 4, 4)

    def mean_colour(x: torch.Tensor) -> torch.Tensor:
        return pixel_features(x).view(len(x), 3, -1).mean(2)

    idx, _ = find_nearest_neighbors(fakes, ListDataset(reals), k=2, feature_fn=mean_colour)
    assert idx.shape == (1, 2)


def test_resized_fakes_and_grid():
    reals = _data(20)
    fakes = torch.from_numpy(reals[[5]]).repeat_interleave(2, 2).repeat_interleave(2, 3)
    idx, dist = find_nearest_neighbors(fakes, ListDataset(reals), k=2)
    assert dist[0, 0] < dist[0, 1]
    assert idx[0, 0] == 5
    images = neighbor_grid(fakes, ListDataset(reals), idx)
    assert images.shape == (3, 3, 8, 8)
    assert make_grid(images, cols=3).shape == (8, 24, 3)
