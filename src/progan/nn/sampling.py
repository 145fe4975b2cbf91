"""2x resampling with cheap, twice-differentiable backward passes.

* :func:`upsample_nearest2x`: nearest-neighbour 2x upsampling as an indexing view plus
  ``expand`` + ``reshape`` (one copy). Equal to ``F.interpolate(x, scale_factor=2,
  mode="nearest")`` bit for bit; its backward is a sum over each 2x2 block (autograd's
  ``expand`` backward).
* :func:`box_downsample2x`: 2x2 box filter (average pooling). The forward is
  ``F.avg_pool2d(x, 2)`` itself, so values are bit-identical; the backward is a broadcast,
  ``0.25 * upsample_nearest2x(grad)``, instead of the ``avg_pool2d_backward`` kernel (8-9% of
  an H100 step in ``/work/shared/ANCHORS.md``'s profile). That backward is made of ordinary
  differentiable ops, so the gradient penalty's second derivative runs through them too.
  (A plain ``reshape(...).mean((3, 5))`` differs from ``avg_pool2d`` by one float rounding,
  because it adds the four values in another order.)

Both keep the input's memory format: a channels_last input gives a channels_last output (and
gradient), with no layout conversion in between.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_channels_last(x: torch.Tensor) -> bool:
    """True when x is laid out NHWC (and not also plain contiguous, e.g. C == 1)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _nearest_up(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W), each value repeated over a 2x2 block; NHWC storage when
    ``channels_last``, else contiguous NCHW."""
    n, c, h, w = x.shape
    if channels_last:
        y = x.permute(0, 2, 3, 1)  # (N, H, W, C), a view of NHWC storage
        y = y[:, :, None, :, None, :].expand(n, h, 2, w, 2, c).reshape(n, 2 * h, 2 * w, c)
        return y.permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def upsample_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling: (N, C, H, W) -> (N, C, 2H, 2W), any float dtype."""
    return _nearest_up(x, is_channels_last(x))


class _BoxDown2x(torch.autograd.Function):
    """y = avg_pool2d(x, 2); dy/dx as a broadcast of grad / 4 over each 2x2 block."""

    @staticmethod
    def forward(ctx, x):
        ctx.channels_last = is_channels_last(x)
        return F.avg_pool2d(x, kernel_size=2)

    @staticmethod
    def backward(ctx, gy):
        return _nearest_up(gy * 0.25, ctx.channels_last)


def box_downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling: (N, C, H, W) -> (N, C, H/2, W/2) (H, W even), any float dtype."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"box_downsample2x needs even height and width, got {tuple(x.shape)}")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return F.avg_pool2d(x, kernel_size=2)
    return _BoxDown2x.apply(x)
