"""The built-in shapes dataset: deterministic, labeled, distinct modes."""

from __future__ import annotations

import numpy as np
import pytest

from progan.data.create import create_dataset, make_synthetic_dataset
from progan.data.dataset import ImageDataset
from progan.data.synthetic import CLASSES, render_shape
from progan.errors import DatasetError


def test_render_is_deterministic_and_independent_of_count():
    a, la = render_shape(seed=3, index=17, resolution=16)
    b, lb = render_shape(seed=3, index=17, resolution=16)
    c, _ = render_shape(seed=4, index=17, resolution=16)
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert la == lb and 0 <= la < len(CLASSES)
    assert not np.array_equal(a, c)


def test_make_synthetic_dataset(tmp_path):
    summary = make_synthetic_dataset(tmp_path / "s.zip", count=200, resolution=16, seed=1)
    assert (summary.count, summary.resolution, summary.channels) == (200, 16, 3)
    ds = ImageDataset(tmp_path / "s.zip")
    assert ds.class_names == list(CLASSES) and ds.num_classes == len(CLASSES)
    counts = np.bincount(ds.labels, minlength=len(CLASSES))
    assert counts.min() >= 20  # every shape is present
    images = np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float64)
    # the shape (bright) stands out from the (dark) background: strong per-image contrast
    assert np.mean(images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))) > 120
    # classes are distinct modes: the mean image of circles differs from that of rings
    circle = images[ds.labels == CLASSES.index("circle")].mean(0)
    ring = images[ds.labels == CLASSES.index("ring")].mean(0)
    centre = slice(6, 10)
    assert circle[:, centre, centre].mean() > ring[:, centre, centre].mean() + 30
    # same seed, fewer images: a prefix of the same dataset
    make_synthetic_dataset(tmp_path / "t.zip", count=10, resolution=16, seed=1)
    small = ImageDataset(tmp_path / "t.zip")
    for i in range(10):
        np.testing.assert_array_equal(small[i][0], ds[i][0])


def test_synthetic_source_name_in_create(tmp_path):
    summary = create_dataset(
        "synthetic:shapes", tmp_path / "s", 8, max_images=12, progress=False, seed=5
    )
    assert summary.count == 12 and summary.resolution == 8
    assert ImageDataset(tmp_path / "s").meta["source"].startswith("synthetic:shapes")
    with pytest.raises(DatasetError, match="unknown synthetic dataset"):
        create_dataset("synthetic:faces", tmp_path / "x.zip", 8, progress=False)
