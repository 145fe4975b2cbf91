"""The built-in shapes dataset: deterministic, labeled, distinct modes."""

from __future__ import annotations

import numpy as np
import pytest

from progan.data.create import create_dataset, make_synthetic_dataset
from progan.data.dataset import ImageDataset
from progan.data.synthetic import BACKGROUND_COLORS, CLASSES, render_shape
from progan.errors import DatasetError


def test_render_is_deterministic_and_independent_of_count():
    a, la = render_shape(seed=3, index=17, resolution=16)
    b, lb = render_shape(seed=3, index=17, resolution=16)
    c, _ = render_shape(seed=4, index=17, resolution=16)
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert la == lb and 0 <= la < len(CLASSES)
    assert not np.array_equal(a, c)


def test_backgrounds_are_plain_and_shapes_are_large():
    """The Quickstart's content: a flat background colour (every border pixel one of
    BACKGROUND_COLORS) and a shape covering a large part of the image."""
    colours = {tuple(c) for c in BACKGROUND_COLORS}
    covered = []
    for index in range(100):
        img, _ = render_shape(seed=0, index=index, resolution=32)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert {tuple(int(v) for v in p) for p in border} <= colours, index
        covered.append(np.mean(np.any(img != img[0, 0], axis=2)))
    # circles of radius 0.28-0.38 cover 25-45 % of the image; rings and crosses less
    assert 0.15 < np.mean(covered) < 0.45


def test_squares_are_upright():
    """Squares are axis-aligned (no rotation): the shape fills its bounding box, where a
    square rotated by 45 degrees would fill half of it."""
    squares = [i for i in range(200) if render_shape(0, i, 32)[1] == CLASSES.index("square")]
    assert len(squares) > 20
    for index in squares:
        img, _ = render_shape(seed=0, index=index, resolution=32)
        diff = np.abs(img.astype(int) - img[0, 0]).sum(axis=2)
        shape = diff > diff.max() / 2  # pixels more than half covered
        rows, cols = np.nonzero(shape)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert shape.sum() / box > 0.9, index


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
