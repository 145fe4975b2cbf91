"""A perceptual distance from the early layers of the FID Inception (used by ``progan project``).

LPIPS (Zhang et al. 2018) compares unit-normalised activations of a pretrained network's early
layers; its VGG/AlexNet weights and learnt layer weights cannot be downloaded here. progan
already loads NVIDIA's FID Inception-v3 (:mod:`progan.metrics.inception`), so this distance
follows the LPIPS recipe on that network with *uniform* weights:

1. images (N, C, R, R) float in [-1, 1] are upscaled bilinearly to ``input_size`` pixels
   (96 by default, i.e. 3x for 32x32 networks; the full 299x299 graph costs about 10x more per
   image, see docs/RESULTS.md) -- the FID graph's own input scale is [-1, 1] as well;
2. the activations after ``Conv2d_2b_3x3``, ``Conv2d_4a_3x3`` and ``Mixed_5b`` (64, 192 and 256
   channels; at 96 px 45x45, 20x20 and 9x9 positions) are normalised to unit length along the
   channel axis at every position;
3. distance = sum over the three layers of the mean over positions of the squared difference
   of the normalised vectors. Each term lies in [0, 4]; identical images give 0.

Because step 3 is a squared Euclidean distance between the concatenated vectors
``unit_features / sqrt(positions)``, :func:`flat_features` lets nearest-neighbour searches use
``torch.cdist`` on precomputed features and get exactly the same numbers.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

__all__ = ["PerceptualDistance"]

LAYERS = ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b")


class PerceptualDistance:
    """Early-Inception perceptual distance; differentiable in the images.

    Args:
        weights: FID Inception weights file (None: progan's usual search, see
            :func:`progan.metrics.inception.find_inception_weights`).
        device: torch device of the network.
        input_size: side in pixels the images are resized to before the network (>= 75, the
            smallest input the layers up to ``Mixed_5b`` accept).
        random_weights: a seeded random network instead of the weights (tests only).
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        input_size: int = 96,
        random_weights: bool = False,
    ) -> None:
        from progan.metrics.inception import load_inception

        if input_size < 75:
            raise ValueError(f"input_size must be >= 75, got {input_size}")
        self.net = load_inception(weights, device, random_weights=random_weights)
        self.input_size = input_size
        self.device = torch.device(device)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Float (N, C, R, R) images in [-1, 1] (C = 1 or 3) -> per layer (N, C_l, H_l, W_l)
        activations, unit length along the channel axis at every position."""
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != self.input_size:
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size, mode="bilinear", align_corners=False)
        net = self.net
        x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        x = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(x)))
        outs.append(x)
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(x))
        outs.append(x)
        x = net.Mixed_5b(F.max_pool2d(x, kernel_size=3, stride=2))
        outs.append(x)
        return [f / f.norm(dim=1, keepdim=True).clamp_min(1e-10) for f in outs]

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N,) distances between image batches ``a`` and ``b`` (same shape, [-1, 1])."""
        return self.between_features(self.features(a), self.features(b))

    @staticmethod
    def between_features(fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """(N,) distances between two lists of :meth:`features` (``fb`` may have batch 1)."""
        total = 0
        for a, b in zip(fa, fb, strict=True):
            total = total + (a - b).square().sum(dim=1).mean(dim=(1, 2))
        return total

    @torch.no_grad()
    def flat_features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, D) float32 CPU vectors whose squared Euclidean distances equal the distance."""
        out = []
        for start in range(0, len(images), batch_size):
            feats = self.features(images[start : start + batch_size])
            parts = [f.flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5 for f in feats]
            out.append(torch.cat(parts, dim=1).cpu())
        return torch.cat(out)
