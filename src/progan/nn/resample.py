"""Real images at the current phase's resolution, faded exactly like G's output.

The dataset holds images at the target resolution. At depth d the networks work at
R = 4 * 2**d; :func:`real_images_for_phase` box-downscales the reals to R and, while a block
fades in, blends them with their own 2x-lower-resolution version upsampled back:
``(1 - alpha) * upsample(downsample(x_R)) + alpha * x_R`` — the same mixture G outputs.
Runs on whatever device the batch is on (the GPU during training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from progan.nn.layers import downsample2x, upsample2x


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (same shape)."""
    return images.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


def downscale_to(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Box-filter (average) downscale of square images (N, C, S, S) to (N, C, R, R), R | S."""
    size = images.shape[-1]
    if size == resolution:
        return images
    if size % resolution:
        raise ValueError(f"cannot downscale {size}x{size} images to {resolution}x{resolution}")
    return F.avg_pool2d(images, kernel_size=size // resolution)


def real_images_for_phase(
    images: torch.Tensor, resolution: int, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Dataset images (uint8 or float, N C S S) -> float [-1, 1] (N, C, R, R) for this phase."""
    x = uint8_to_float(images) if images.dtype == torch.uint8 else images
    x = downscale_to(x, resolution)
    if resolution > 4 and (isinstance(alpha, torch.Tensor) or alpha < 1.0):
        x = torch.lerp(upsample2x(downsample2x(x)), x, alpha)
    return x
