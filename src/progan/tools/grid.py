"""Image grids: tile a batch of uint8 images into one picture and save it as PNG."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from progan.errors import ProganError
from progan.fileio import atomic_write

__all__ = [
    "conditional_grid_labels",
    "dataset_grid",
    "make_grid",
    "save_image_grid",
    "to_numpy_uint8",
    "write_png",
]


def to_numpy_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return ``images`` (uint8, NCHW, tensor or array) as a contiguous uint8 NCHW ndarray.

    A single CHW image is accepted and becomes a batch of one. Other dtypes are rejected: the
    grid never guesses a value range.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"expected uint8 NCHW images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got dtype {images.dtype}")
    return np.ascontiguousarray(images)


def make_grid(
    images: torch.Tensor | np.ndarray, cols: int | None = None, pad: int = 0
) -> np.ndarray:
    """Tile ``images`` into a grid, row-major (image ``i`` at row ``i // cols``, col ``i % cols``).

    Args:
        images: uint8 (N, C, H, W) tensor or ndarray, values in [0, 255]; C is 1 or 3.
        cols: images per row; default ``ceil(sqrt(N))``. Unused cells stay black.
        pad: pixels of black border between (not around) the cells.

    Returns:
        uint8 ndarray (rows*H + (rows-1)*pad, cols*W + (cols-1)*pad, C), i.e. HWC; C = 1 keeps
        a trailing axis of size 1 (``save_image_grid`` writes it as a grayscale PNG).
    """
    x = to_numpy_uint8(images)
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("cannot make a grid of zero images")
    if cols is None:
        cols = max(1, math.ceil(math.sqrt(n)))
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y0, x0 = r * (h + pad), col * (w + pad)
        out[y0 : y0 + h, x0 : x0 + w] = x[i].transpose(1, 2, 0)
    return out


def write_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Atomically write a uint8 HW, HW1 (grayscale) or HW3 (RGB) ndarray as a PNG file."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"expected an HW, HW1 or HW3 image, got shape {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    cols: int | None = None,
    pad: int = 0,
) -> Path:
    """Tile uint8 NCHW ``images`` with :func:`make_grid` and write the grid to ``path`` (PNG).

    One-channel images give a grayscale PNG, three-channel ones an RGB PNG. The write is atomic.
    Returns the path written.
    """
    return write_png(make_grid(images, cols=cols, pad=pad), path)


def conditional_grid_labels(num_classes: int, per_row: int) -> np.ndarray:
    """Labels for a class-per-row grid: int64 (num_classes * per_row,), row c all class c.

    Pair with ``make_grid(images, cols=per_row)``.
    """
    if num_classes < 1 or per_row < 1:
        raise ValueError("num_classes and per_row must be >= 1")
    return np.repeat(np.arange(num_classes, dtype=np.int64), per_row)


def dataset_grid(
    dataset,
    num: int = 64,
    seed: int = 0,
    rows_per_label: bool = False,
    per_row: int = 8,
) -> tuple[np.ndarray, int | None]:
    """Pick real images from a dataset for a comparison grid.

    Args:
        dataset: ``len(ds)``, ``ds[i] -> (uint8 CHW, label)``; for ``rows_per_label`` also
            ``num_classes`` and ``labels`` (int64 (N,)).
        num: images to pick (ignored with ``rows_per_label``); at most ``len(dataset)``.
        seed: seed of the random choice (without replacement).
        rows_per_label: one row per class, ``per_row`` random images of that class each
            (black cells where a class has fewer images).
        per_row: images per row with ``rows_per_label``.

    Returns:
        ``(images uint8 NCHW, cols)``; ``cols`` is ``per_row`` for class rows, else None (the
        grid's default square layout).
    """
    rng = np.random.default_rng(seed)
    if not rows_per_label:
        count = min(num, len(dataset))
        if count < 1:
            raise ValueError("no images to show")
        idx = np.sort(rng.choice(len(dataset), size=count, replace=False))
        return np.stack([np.asarray(dataset[int(i)][0]) for i in idx]), None
    labels = getattr(dataset, "labels", None)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    if labels is None or num_classes < 1:
        raise ProganError("--rows-per-label needs a labelled dataset")
    first = np.asarray(dataset[0][0])
    cells = []
    for c in range(num_classes):
        members = np.flatnonzero(np.asarray(labels) == c)
        pick = rng.choice(members, size=min(per_row, len(members)), replace=False)
        row = [np.asarray(dataset[int(i)][0]) for i in np.sort(pick)]
        row += [np.zeros_like(first)] * (per_row - len(row))
        cells += row
    return np.stack(cells), per_row
