"""Nearest training images of generated images (paper Figure 10).

For each generated image, find the ``k`` training images closest in L2 distance in a feature
space: raw pixels, or the Inception-v3 pool features of ``progan.metrics.inception`` (optionally
of a centre crop, as the paper does to focus on the face). The dataset is streamed in batches
while a running top-k is kept, so the memory used does not grow with the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from progan.errors import ProganError

__all__ = [
    "FeatureFn",
    "center_crop",
    "find_nearest_neighbors",
    "inception_features",
    "neighbor_grid",
    "pixel_features",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps uint8 NCHW images to float (N, D) features."""


class _Dataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[np.ndarray, int]: ...


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float64 (N, C*H*W): the raw pixel values in [0, 255]."""
    return images.reshape(len(images), -1).to(torch.float64)


def inception_features(path: str | None = None, device: str | torch.device = "cpu") -> FeatureFn:
    """Feature function giving the 2048-d Inception-v3 pool features (float64 (N, 2048)).

    Loads ``progan.metrics.inception.load_inception(path, device)`` once; one-channel images
    are repeated to three channels.
    """
    from progan.metrics.inception import load_inception  # lazy: heavy, optional weights

    model = load_inception(path=path, device=device)

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return model(images.to(device))["pool"].to("cpu", torch.float64)

    return features


def center_crop(images: torch.Tensor, fraction: float | None) -> torch.Tensor:
    """Central square crop of NCHW images keeping ``fraction`` (0, 1] of the side length."""
    if fraction is None or fraction >= 1.0:
        return images
    if not 0.0 < fraction <= 1.0:
        raise ProganError(f"crop fraction must be in (0, 1], got {fraction}")
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[..., top : top + ch, left : left + cw]


def _match_shape(fakes: torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """Bring uint8 NCHW fakes to the dataset's channel count and resolution."""
    if fakes.shape[1] != channels:
        if fakes.shape[1] == 1:
            fakes = fakes.repeat(1, channels, 1, 1)
        elif channels == 1:
            fakes = fakes.float().mean(1, keepdim=True).round().to(torch.uint8)
        else:
            raise ProganError(f"cannot compare {fakes.shape[1]}- and {channels}-channel images")
    if fakes.shape[-1] != resolution or fakes.shape[-2] != resolution:
        x = F.interpolate(fakes.float(), (resolution, resolution), mode="bilinear", antialias=True)
        fakes = x.round().clamp(0, 255).to(torch.uint8)
    return fakes


def find_nearest_neighbors(
    fakes: torch.Tensor | np.ndarray,
    dataset: _Dataset,
    k: int,
    feature_fn: FeatureFn = pixel_features,
    crop: float | None = None,
    batch_size: int = 256,
    max_images: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each fake image, the ``k`` dataset images nearest in feature space.

    Args:
        fakes: uint8 (N, C, H, W) generated images; resized/converted to the dataset's shape.
        dataset: ``len(ds)``, ``ds[i] -> (uint8 CHW ndarray, label)``.
        k: neighbours per fake (clipped to the number of dataset images searched).
        feature_fn: uint8 NCHW tensor -> float (N, D); :func:`pixel_features` by default.
        crop: centre-crop fraction applied to fakes and reals before ``feature_fn`` (None = all).
        batch_size: dataset images per feature batch.
        max_images: search only the first this many dataset images (None = all).

    Returns:
        ``indices`` int64 (N, k) of dataset images, nearest first, and ``distances`` float64
        (N, k), the Euclidean distances in feature space (0 for an exact duplicate).
    """
    fakes = torch.as_tensor(np.asarray(fakes))
    if fakes.dtype != torch.uint8 or fakes.ndim != 4:
        raise ValueError("fakes must be uint8 NCHW images")
    total = len(dataset) if max_images is None else min(len(dataset), max_images)
    if total == 0:
        raise ProganError("the dataset is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, total)
    first, _ = dataset[0]
    fakes = _match_shape(fakes, first.shape[0], first.shape[-1])
    fake_feat = feature_fn(center_crop(fakes, crop)).to(torch.float64)
    n = len(fake_feat)
    best_d = torch.full((n, 0), float("inf"), dtype=torch.float64)
    best_i = torch.zeros((n, 0), dtype=torch.int64)
    for start in range(0, total, batch_size):
        idx = range(start, min(start + batch_size, total))
        reals = torch.from_numpy(np.stack([np.asarray(dataset[i][0]) for i in idx]))
        real_feat = feature_fn(center_crop(reals, crop)).to(torch.float64)
        d = torch.cdist(fake_feat, real_feat, compute_mode="donot_use_mm_for_euclid_dist")
        cand_d = torch.cat([best_d, d], 1)
        cand_i = torch.cat([best_i, torch.arange(idx.start, idx.stop).expand(n, -1)], 1)
        keep = min(k, cand_d.shape[1])
        # stable sort: ties keep the lower dataset index
        order = torch.sort(cand_d, dim=1, stable=True).indices[:, :keep]
        best_d, best_i = cand_d.gather(1, order), cand_i.gather(1, order)
    return best_i.numpy(), best_d.numpy()


def neighbor_grid(
    fakes: torch.Tensor | np.ndarray, dataset: _Dataset, indices: np.ndarray
) -> torch.Tensor:
    """Images for a neighbour figure: row i = fake i followed by its neighbours, uint8 NCHW.

    Use with ``make_grid(images, cols=k + 1)``. Fakes are converted to the dataset's shape.
    """
    first, _ = dataset[0]
    fakes = _match_shape(torch.as_tensor(np.asarray(fakes)), first.shape[0], first.shape[-1])
    rows = []
    for fake, row in zip(fakes, indices, strict=True):
        rows.append(fake[None])
        rows.append(torch.from_numpy(np.stack([np.asarray(dataset[int(i)][0]) for i in row])))
    return torch.cat(rows)
