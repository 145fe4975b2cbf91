"""Building blocks of the paper's networks (Section 4 and Appendix A.1).

* :class:`EqualizedConv2d` / :class:`EqualizedLinear`: equalized learning rate (Section 4.1).
  Weights are drawn from N(0, 1) and multiplied at run time by He's constant
  ``gain / sqrt(fan_in)``; biases start at zero. With Adam, every weight then learns at the
  same speed whatever its layer's fan-in.
* :class:`PixelNorm`: pixelwise feature vector normalization in G (Section 4.2),
  ``b = a / sqrt(mean_j(a_j**2) + eps)`` over the channel axis, eps = 1e-8.
* :class:`MinibatchStdDev`: the minibatch standard deviation layer (Section 3), which appends
  one feature map holding the average standard deviation within each group of samples.
* Ablation layers (Table 1): :class:`MinibatchDiscrimination` (Salimans et al. 2016, row (e*)),
  :class:`LayerNorm` (per-sample normalization in D, rows (a)-(c)); batch normalization in G
  uses ``torch.nn.BatchNorm2d``.
* :func:`upsample2x` (nearest neighbour) and :func:`downsample2x` (2x2 average pooling), with
  cheap twice-differentiable backward passes (``nn/sampling.py``).

``EqualizedConv2d``/``EqualizedLinear`` take ``impl``: ``"native"`` (``F.conv2d``/``F.linear``)
or ``"explicit"`` (``nn/conv_ops.py``: same values, with a backward written as ordinary
convolutions so that the gradient penalty's second derivative avoids PyTorch's generic
convolution double backward). :func:`set_conv_impl` switches a whole network. Inside
``torch.compile`` (which never compiles the double backward: train/compiled.py) "explicit"
layers run the native calls, which give the same values.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from progan.nn import conv_ops
from progan.nn.sampling import box_downsample2x, is_channels_last, upsample_nearest2x

LEAKY_RELU_SLOPE = 0.2
HE_GAIN = math.sqrt(2.0)


def _he_scale(weight: nn.Parameter, he_std: float, equalized: bool) -> float:
    """The run-time multiplier of an N(0, 1)-initialized ``weight``: He's constant with the
    equalized learning rate; otherwise 1.0, with the constant baked into the initial weights
    (He initialization)."""
    if equalized:
        return he_std
    with torch.no_grad():
        weight.mul_(he_std)
    return 1.0


class EqualizedConv2d(nn.Module):
    """2-D convolution with the equalized learning rate, 'same' padding, stride 1.

    Input (N, in_channels, H, W) -> output (N, out_channels, H, W), any float dtype.
    ``equalized=False`` gives a conventionally initialised convolution (He-scaled weights, no
    run-time scaling), for the paper's ablation (Table 1, rows without (f)). He's constant
    multiplies the weight (O*C*k*k values) before the convolution, not the output.
    ``impl``: ``"native"`` or ``"explicit"`` (see the module docstring).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        gain: float = HE_GAIN,
        equalized: bool = True,
        impl: str = "native",
    ) -> None:
        super().__init__()
        fan_in = in_channels * kernel_size * kernel_size
        he_std = gain / math.sqrt(fan_in)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = _he_scale(self.weight, he_std, equalized)
        self.impl = conv_ops.check_conv_impl(impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale if self.scale != 1.0 else self.weight
        if self.impl == "explicit" and not torch.compiler.is_compiling():
            return conv_ops.conv2d(x, weight, self.bias, padding=self.padding)
        return F.conv2d(x, weight.to(x.dtype), self.bias.to(x.dtype), padding=self.padding)

    def extra_repr(self) -> str:
        out_c, in_c, k, _ = self.weight.shape
        return f"{in_c}, {out_c}, kernel_size={k}, scale={self.scale:.4g}"


class EqualizedLinear(nn.Module):
    """Dense layer with the equalized learning rate: (N, in_features) -> (N, out_features).

    ``bias=False`` leaves the bias out (G's first layer adds one per feature map itself).
    ``impl``: ``"native"`` (``F.linear``) or ``"explicit"`` (``conv_ops.linear``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        gain: float = HE_GAIN,
        equalized: bool = True,
        bias: bool = True,
        impl: str = "native",
    ) -> None:
        super().__init__()
        he_std = gain / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = _he_scale(self.weight, he_std, equalized)
        self.impl = conv_ops.check_conv_impl(impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale if self.scale != 1.0 else self.weight
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        if self.impl == "explicit" and x.ndim == 2 and not torch.compiler.is_compiling():
            return conv_ops.linear(x, weight, self.bias)
        return F.linear(x, weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"{in_f}, {out_f}, scale={self.scale:.4g}"


class PixelNorm(nn.Module):
    """Normalize each pixel's feature vector to unit average square: x / sqrt(mean_c x^2 + eps).

    Works on (N, C) and (N, C, H, W); the mean is over the channel axis (dim 1).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Append the minibatch standard deviation as one extra feature map.

    Input (N, C, H, W) -> output (N, C + 1, H, W). As in the official code, the batch is split
    into groups of ``group_size`` samples where sample n belongs to group ``n % (N // G)``; within
    each group the standard deviation of every feature at every pixel is computed (biased
    estimator, ``sqrt(var + 1e-8)``), averaged over features and pixels to one number per group,
    and that number is replicated over the group's samples and pixels. The group size is
    ``min(group_size, N)``, as in the official layer (so with the paper's group size 16 the
    whole minibatch of 16, 14, 6 or 3 forms one group). Where that does not divide N (the
    official code would fail there), the largest group size that does is used instead, and a
    warning says so once per (N, group_size).
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = effective_group_size(n, self.group_size)
        if g != min(self.group_size, n):
            _note_group_fallback(n, self.group_size, g)
        y = x if x.dtype == torch.float64 else x.float()  # statistics in >= fp32
        y = y.reshape(g, n // g, c, h, w)
        y = y - y.mean(dim=0, keepdim=True)
        y = torch.sqrt(y.square().mean(dim=0) + self.eps)  # (M, C, H, W)
        y = y.mean(dim=(1, 2, 3))  # (M,)
        y = y.reshape(1, n // g, 1, 1, 1)
        if is_channels_last(x):  # NHWC strides, so that the cat keeps x's layout
            y = y.expand(g, n // g, h, w, 1).reshape(n, h, w, 1).permute(0, 3, 1, 2)
        else:
            y = y.expand(g, n // g, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, Section 3.2), the paper's row (e*).

    Each sample's features f(x_i) (flattened, A = C*H*W values) are projected by a tensor T of
    shape (A, B, D) to a matrix M_i (B kernels x D dims). For kernel b,
    ``c_b(x_i, x_j) = exp(-||M_i[b] - M_j[b]||_1)`` and ``o_b(x_i) = sum_{j != i} c_b(x_i, x_j)``
    (the other samples of the minibatch; the original's j = i term is the constant 1 and is
    left out). The B values are appended as B constant feature maps:
    input (N, C, H, W) -> output (N, C + B, H, W).

    T is drawn from N(0, 1) and scaled by ``1 / sqrt(A)`` -- at run time with the equalized
    learning rate, baked into the weights otherwise -- so that M has roughly unit entries.
    """

    def __init__(self, in_features: int, kernels: int, dims: int = 5, equalized: bool = True):
        super().__init__()
        self.in_features, self.kernels, self.dims = in_features, kernels, dims
        std = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(in_features, kernels * dims))
        if equalized:
            self.scale = std
        else:
            self.scale = 1.0
            with torch.no_grad():
                self.weight.mul_(std)

    def features(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, A) features -> (N, B) closeness of each sample to the rest of its minibatch."""
        n = flat.shape[0]
        y = flat if flat.dtype == torch.float64 else flat.float()
        weight = self.weight * self.scale if self.scale != 1.0 else self.weight
        m = (y @ weight.to(y.dtype)).reshape(n, self.kernels, self.dims)  # (N, B, D)
        dist = (m[:, None] - m[None, :]).abs().sum(dim=3)  # (N, N, B) L1 distances
        closeness = torch.exp(-dist).sum(dim=1) - 1.0  # drop j == i (exp(0) = 1)
        return closeness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        o = self.features(x.flatten(1)).to(x.dtype)
        return torch.cat([x, o[:, :, None, None].expand(n, self.kernels, h, w)], dim=1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, kernels={self.kernels}, dims={self.dims}"


class LayerNorm(nn.Module):
    """Layer normalization (Ba et al. 2016) of each sample over all its features.

    ``y = (x - mean) / sqrt(var + eps) * gain[c] + bias[c]`` with the mean and (biased)
    variance of one sample over channels and pixels; gain/bias per channel start at 1/0.
    Works on (N, C) and (N, C, H, W). Used in D for the paper's WGAN-GP baseline (Table 1
    (a)-(c)), where batch normalization would break the per-sample gradient penalty.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.ndim))
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return y * self.gain.view(shape).to(x.dtype) + self.bias.view(shape).to(x.dtype)


_GROUP_FALLBACKS_NOTED: set[tuple[int, int]] = set()


def _note_group_fallback(batch: int, group_size: int, used: int) -> None:
    """Warn, once per (batch, group_size) in this process, that the stddev layer's groups are
    not the official layer's ``min(group_size, batch)``."""
    if (batch, group_size) in _GROUP_FALLBACKS_NOTED:
        return
    _GROUP_FALLBACKS_NOTED.add((batch, group_size))
    warnings.warn(
        f"minibatch stddev: a minibatch of {batch} does not split into groups of "
        f"min({group_size}, {batch}) = {min(group_size, batch)} (the official layer's group "
        f"size); using groups of {used} instead",
        UserWarning,
        stacklevel=3,
    )


def effective_group_size(batch: int, group_size: int) -> int:
    """Largest g <= min(group_size, batch) that divides ``batch`` (the group size the stddev
    layer uses): ``min(group_size, batch)`` itself whenever that divides ``batch``."""
    g = max(1, min(group_size, batch))
    while batch % g:
        g -= 1
    return g


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling: (N, C, H, W) -> (N, C, 2H, 2W), memory format kept."""
    return upsample_nearest2x(x)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling: (N, C, H, W) -> (N, C, H/2, W/2), memory format kept; the backward
    is a broadcast (``nn/sampling.py``)."""
    return box_downsample2x(x)


def set_conv_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set ``impl`` ("native" or "explicit") on every EqualizedConv2d/EqualizedLinear inside
    ``module`` (weights untouched); returns ``module``."""
    conv_ops.check_conv_impl(impl)
    for m in module.modules():
        if isinstance(m, (EqualizedConv2d, EqualizedLinear)):
            m.impl = impl
    return module


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the paper's slope 0.2."""
    return F.leaky_relu(x, LEAKY_RELU_SLOPE)
