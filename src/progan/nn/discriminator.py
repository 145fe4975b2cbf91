"""The progressive discriminator (paper Appendix A.1, Table 2 right): G's mirror image.

Like :class:`~progan.nn.generator.Generator`, it holds every block and runs only the active ones:
``forward(images, depth, alpha)`` with images of resolution R = 4 * 2**depth.
"""

from __future__ import annotations

import torch
from torch import nn

from progan.config import NetworkConfig
from progan.nn.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    LayerNorm,
    MinibatchDiscrimination,
    MinibatchStdDev,
    downsample2x,
    leaky_relu,
    set_conv_impl,
)


def _norm(channels: int, cfg: NetworkConfig) -> nn.Module:
    """Layer norm when ``cfg.layernorm_d`` (Table 1 (a)-(c)), else nothing."""
    return LayerNorm(channels) if cfg.layernorm_d else nn.Identity()


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions with leaky ReLU, then 2x2 average pooling.

    (N, ch, H, W) -> (N, out_ch, H/2, W/2). With ``cfg.layernorm_d`` each convolution is
    followed by layer normalization before its activation. With
    ``cfg.d_pool_before_activation`` the pooling comes right after the second convolution
    (before its activation), as in the official code's fused ``Conv1_down``.
    """

    def __init__(self, ch: int, out_ch: int, cfg: NetworkConfig) -> None:
        super().__init__()
        equalized = cfg.equalized_lr
        self.conv0 = EqualizedConv2d(ch, ch, 3, equalized=equalized)
        self.conv1 = EqualizedConv2d(ch, out_ch, 3, equalized=equalized)
        self.norm0 = _norm(ch, cfg)
        self.norm1 = _norm(out_ch, cfg)
        self.pool_first = cfg.d_pool_before_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = leaky_relu(self.norm0(self.conv0(x)))
        if self.pool_first:  # the bias commutes with the pooling; the activation does not
            return leaky_relu(self.norm1(downsample2x(self.conv1(x))))
        return downsample2x(leaky_relu(self.norm1(self.conv1(x))))


class DiscriminatorHead(nn.Module):
    """The 4x4 block: minibatch stddev, 3x3 conv, dense 4x4 -> ch, dense -> 1 + label_size.

    (N, ch, 4, 4) -> (N, 1 + label_size): column 0 is the score, the rest are label logits.
    Ablation options: minibatch discrimination (``cfg.mbdisc_kernels`` > 0) appends its B
    feature maps where the stddev map goes (after it when both are on); ``cfg.layernorm_d``
    normalizes the outputs of the 3x3 convolution and of the 4x4 (dense) layer.
    """

    def __init__(self, ch: int, cfg: NetworkConfig) -> None:
        super().__init__()
        eq = cfg.equalized_lr
        self.mbstd = MinibatchStdDev(cfg.mbstd_group_size) if cfg.mbstd_group_size > 0 else None
        in_ch = ch + (1 if self.mbstd else 0)
        self.mbdisc = None
        if cfg.mbdisc_kernels > 0:
            self.mbdisc = MinibatchDiscrimination(
                in_ch * 16, cfg.mbdisc_kernels, cfg.mbdisc_dims, equalized=eq
            )
            in_ch += cfg.mbdisc_kernels
        self.conv = EqualizedConv2d(in_ch, ch, 3, equalized=eq)
        self.dense0 = EqualizedLinear(ch * 16, ch, equalized=eq)
        self.dense1 = EqualizedLinear(ch, 1 + cfg.label_size, gain=1.0, equalized=eq)
        self.norm0 = _norm(ch, cfg)
        self.norm1 = _norm(ch, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        if self.mbdisc is not None:
            x = self.mbdisc(x)
        x = leaky_relu(self.norm0(self.conv(x)))
        x = leaky_relu(self.norm1(self.dense0(x.flatten(1))))
        return self.dense1(x)


class Discriminator(nn.Module):
    """Progressive discriminator: image -> (score, label logits).

    ``forward(images, depth, alpha)``: images are (N, channels, R, R) float in [-1, 1] with
    R = 4 * 2**depth; returns ``(scores (N,), label_logits (N, label_size) or None)``. While a
    block fades in (alpha < 1), the input also takes the old path,
    ``fromRGB[depth-1](downsample(images))``, blended with the new block's output by alpha.
    Its convolutions and dense layers use ``cfg.conv_impl`` (``set_conv_impl`` changes it).
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.label_size = cfg.label_size
        self.resolution = cfg.resolution
        self.channels = cfg.channels
        self.max_depth = cfg.max_depth
        eq = cfg.equalized_lr
        from_rgb, blocks = [], []
        for depth in range(self.max_depth + 1):
            ch = cfg.num_features(depth)
            from_rgb.append(EqualizedConv2d(cfg.channels, ch, 1, equalized=eq))
            if depth == 0:
                blocks.append(DiscriminatorHead(ch, cfg))
            else:
                blocks.append(DiscriminatorBlock(ch, cfg.num_features(depth - 1), cfg))
        self.from_rgb = nn.ModuleList(from_rgb)
        self.blocks = nn.ModuleList(blocks)
        set_conv_impl(self, cfg.conv_impl)

    def forward(
        self,
        images: torch.Tensor,
        depth: int | None = None,
        alpha: float | torch.Tensor = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        depth = self.max_depth if depth is None else depth
        if not 0 <= depth <= self.max_depth:
            raise ValueError(f"depth must be in [0, {self.max_depth}], got {depth}")
        size = 4 * 2**depth
        if images.ndim != 4 or images.shape[1:] != (self.channels, size, size):
            raise ValueError(
                f"images must have shape (N, {self.channels}, {size}, {size}) at depth {depth}, "
                f"got {tuple(images.shape)}"
            )
        x = leaky_relu(self.from_rgb[depth](images))
        if depth > 0:
            x = self.blocks[depth](x)
            if isinstance(alpha, torch.Tensor) or alpha < 1.0:
                skip = leaky_relu(self.from_rgb[depth - 1](downsample2x(images)))
                if isinstance(alpha, torch.Tensor):  # 0-d (a compiled step): in x's dtype
                    alpha = alpha.to(x.dtype)
                x = torch.lerp(skip, x, alpha)
            for d in range(depth - 1, 0, -1):
                x = self.blocks[d](x)
        out = self.blocks[0](x)
        scores = out[:, 0]
        return scores, (out[:, 1:] if self.label_size else None)
