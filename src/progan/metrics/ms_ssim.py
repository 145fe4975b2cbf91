"""Multi-scale structural similarity (MS-SSIM) among images of one set.

As used by Odena et al. (2017) and Karras et al. (2018) to measure variation: the mean MS-SSIM
over random pairs of images of the same set (lower = more varied). Matches the TensorFlow
implementation the official code uses (``metrics/ms_ssim.py``, after Wang et al. 2003):

* 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); between scales the images are
  halved by 2x2 averaging;
* 11x11 Gaussian window with sigma 1.5, "valid" filtering; where a scale is smaller than 11
  pixels the window shrinks to the image size and sigma scales with it (as the official code);
* K1 = 0.01, K2 = 0.03, dynamic range 255 (images are uint8 values as float);
* the SSIM/contrast maps are averaged over pixels *and channels* per scale; negative values
  are clipped to 0 before the weighted product;
* pairs are consecutive images of the stream (0, 1), (2, 3), ... of random images; the result
  is the mean over pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MS_SSIM_WEIGHTS", "MSSSIMAccumulator", "gaussian_window", "ms_ssim", "ssim_and_cs"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int, sigma: float, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian (float64) of ``size`` taps centred at ``(size - 1) / 2``.

    The outer product with itself is MATLAB's ``fspecial('gaussian', size, sigma)``.
    """
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of (N, C, H, W) with the 1-D window ``g``."""
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    k = g.to(x.dtype)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.view(n, c, y.shape[-2], y.shape[-1])


def ssim_and_cs(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_val: float = 255.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image pair at one scale.

    Args:
        x, y: (N, C, H, W) float tensors with values in [0, max_val].

    Returns:
        ``(ssim, cs)``, each (N,) in the input's dtype (means over channels and pixels).
    """
    _, _, h, w = x.shape
    size = min(filter_size, h, w)
    sigma = size * filter_sigma / filter_size
    g = gaussian_window(size, sigma, device=x.device)
    mu1 = _filter_valid(x, g)
    mu2 = _filter_valid(y, g)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s11 = _filter_valid(x * x, g) - mu11
    s22 = _filter_valid(y * y, g) - mu22
    s12 = _filter_valid(x * y, g) - mu12
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    v1 = 2.0 * s12 + c2
    v2 = s11 + s22 + c2
    ssim = ((2.0 * mu12 + c1) * v1) / ((mu11 + mu22 + c1) * v2)
    cs = v1 / v2
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    max_val: float = 255.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
) -> torch.Tensor:
    """MS-SSIM of each image pair.

    Args:
        x, y: (N, C, H, W) uint8 or float tensors with values in [0, max_val]; H and W must be
            divisible by ``2 ** (len(weights) - 1)`` (power-of-two images are).

    Returns:
        (N,) float tensor (float64 if the inputs are float64, else float32), values in [0, 1].
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"need two (N, C, H, W) tensors of equal shape, got {x.shape}, {y.shape}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    a, b = x.to(dtype), y.to(dtype)
    levels = len(weights)
    div = 2 ** (levels - 1)
    if a.shape[-1] % div or a.shape[-2] % div:
        raise ValueError(f"MS-SSIM with {levels} scales needs sizes divisible by {div}")
    w = torch.tensor(weights, dtype=dtype, device=a.device)
    result = torch.ones(a.shape[0], dtype=dtype, device=a.device)
    for i in range(levels):
        ssim, cs = ssim_and_cs(a, b, max_val=max_val, filter_size=filter_size,
                               filter_sigma=filter_sigma)  # fmt: skip
        term = ssim if i == levels - 1 else cs
        result = result * term.clamp_min(0) ** w[i]
        if i < levels - 1:
            a = F.avg_pool2d(a, 2)
            b = F.avg_pool2d(b, 2)
    return result


class MSSSIMAccumulator:
    """Running mean of MS-SSIM over consecutive pairs of a stream of images.

    ``feed`` batches of (N, C, H, W) uint8 images (any N; an odd image waits for its partner);
    ``value()`` is the mean over the pairs seen so far.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.total = 0.0
        self.num_pairs = 0
        self._pending: torch.Tensor | None = None

    @torch.no_grad()
    def feed(self, images: torch.Tensor) -> None:
        x = images.to(self.device)
        if self._pending is not None:
            x = torch.cat([self._pending, x])
            self._pending = None
        if x.shape[0] % 2:
            self._pending = x[-1:]
            x = x[:-1]
        if x.shape[0] == 0:
            return
        scores = ms_ssim(x[0::2], x[1::2])
        self.total += float(scores.sum(dtype=torch.float64))
        self.num_pairs += scores.shape[0]

    def value(self) -> float:
        if self.num_pairs == 0:
            raise ValueError("MS-SSIM needs at least two images")
        return self.total / self.num_pairs
