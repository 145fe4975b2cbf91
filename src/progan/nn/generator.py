"""The progressive generator (paper Appendix A.1, Table 2 left).

The module always holds every block up to the target resolution; ``forward`` takes the current
``depth`` (0 = 4x4, ``max_depth`` = target) and fade ``alpha`` and runs only the active blocks,
so optimizers, EMA, DDP and compilation always see one fixed set of parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from progan.config import NetworkConfig
from progan.nn.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    PixelNorm,
    leaky_relu,
    upsample2x,
)
from progan.nn.sampling import is_channels_last

LEGACY_DENSE_BIAS_MESSAGE = (
    "these generator weights come from an older progan whose first dense layer had one bias "
    "per output unit ({n} values, blocks.0.dense.bias); G now has one bias per 4x4 feature "
    "map, as the official code (blocks.0.bias). The old biases cannot be converted exactly "
    "(they differ between the 16 pixels of a feature map), so a network of the current form "
    "cannot take them; generator snapshots of that form still load through "
    "progan.generate.load_generator, and training states resume with the version that wrote them"
)


class GeneratorBlock(nn.Module):
    """Two 3x3 convolutions, each followed by leaky ReLU and pixel norm.

    The first block (``first=True``) maps the (latent, label) vector to 4x4 with a dense layer
    (the paper's 4x4 "convolution" of a 1x1 input) followed by one 3x3 convolution; later blocks
    upsample 2x (nearest) first. Input (N, in_ch[, H, W]) -> output (N, out_ch, H', W').
    As in the official code (``networks.py``, ``G_paper``: ``dense`` then reshape then
    ``apply_bias``), the dense layer has no bias of its own: ``bias`` holds one bias per feature
    map (``out_ch``), added after the reshape to 4x4 (not one per output unit, 16 * out_ch).

    Ablation options: ``cfg.pixelnorm=False`` drops the pixel norm; ``cfg.batchnorm_g`` puts a
    ``BatchNorm2d`` between each convolution and its activation (the WGAN-GP baseline's
    generator, Table 1 (a)-(c)): batch statistics in train mode, running averages in eval mode.
    """

    def __init__(self, in_ch: int, out_ch: int, first: bool, cfg: NetworkConfig) -> None:
        super().__init__()
        self.first = first
        self.out_ch = out_ch
        eq = cfg.equalized_lr
        if first:
            # The official code uses gain sqrt(2)/4 here: the dense layer's 16 outputs per
            # feature map play the role of a 4x4 kernel over a 1x1 input.
            per_map = cfg.g_first_bias == "per-map"
            self.dense = EqualizedLinear(
                in_ch, out_ch * 16, gain=math.sqrt(2) / 4, equalized=eq, bias=not per_map
            )
            self.bias = nn.Parameter(torch.zeros(out_ch)) if per_map else None
            self.conv0 = None
        else:
            self.dense = None
            self.bias = None
            self.conv0 = EqualizedConv2d(in_ch, out_ch, 3, equalized=eq)
        self.conv1 = EqualizedConv2d(out_ch, out_ch, 3, equalized=eq)
        self.norm = PixelNorm() if cfg.pixelnorm else nn.Identity()
        self.bn0 = nn.BatchNorm2d(out_ch) if cfg.batchnorm_g else nn.Identity()
        self.bn1 = nn.BatchNorm2d(out_ch) if cfg.batchnorm_g else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            x = self.dense(x).reshape(x.shape[0], self.out_ch, 4, 4)
            if self.bias is not None:
                x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
            if is_channels_last(self.conv1.weight):  # the network runs NHWC (channels_last):
                x = x.contiguous(memory_format=torch.channels_last)  # the dense output too
        else:
            x = self.conv0(upsample2x(x))
        x = self.norm(leaky_relu(self.bn0(x)))
        return self.norm(leaky_relu(self.bn1(self.conv1(x))))


class Generator(nn.Module):
    """Progressive generator: latent (and label) -> image.

    ``forward(z, labels, depth, alpha)``: z is (N, latent_size) float; labels are (N,) int64
    class indices or (N, label_size) float one-hot (None when unconditional); the output is
    (N, channels, R, R) float, R = 4 * 2**depth (``depth=None``: ``default_depth`` and
    ``default_alpha``, the full network unless loaded from an early snapshot), with no output
    activation (values are roughly in [-1, 1], the range of the training images).
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.latent_size = cfg.latent_size
        self.label_size = cfg.label_size
        self.resolution = cfg.resolution
        self.channels = cfg.channels
        self.max_depth = cfg.max_depth
        # Depth and fade used when forward() gets depth=None: the full network, unless the
        # weights come from a snapshot taken before the network was fully grown.
        self.default_depth = cfg.max_depth
        self.default_alpha = 1.0
        self.input_norm = PixelNorm() if cfg.normalize_latents else nn.Identity()
        blocks, to_rgb = [], []
        in_ch = cfg.latent_size + cfg.label_size
        for depth in range(self.max_depth + 1):
            out_ch = cfg.num_features(depth)
            blocks.append(GeneratorBlock(in_ch, out_ch, first=depth == 0, cfg=cfg))
            to_rgb.append(
                EqualizedConv2d(out_ch, cfg.channels, 1, gain=1.0, equalized=cfg.equalized_lr)
            )
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(to_rgb)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None = None,
        depth: int | None = None,
        alpha: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        if depth is None:
            depth, alpha = self.default_depth, self.default_alpha
        if not 0 <= depth <= self.max_depth:
            raise ValueError(f"depth must be in [0, {self.max_depth}], got {depth}")
        x = self.input_norm(self._join_labels(z, labels))
        for d in range(depth):
            x = self.blocks[d](x)
        if depth == 0:
            return self.to_rgb[0](self.blocks[0](x))
        previous = x
        x = self.to_rgb[depth](self.blocks[depth](previous))
        if isinstance(alpha, torch.Tensor) or alpha < 1.0:
            skip = upsample2x(self.to_rgb[depth - 1](previous))
            if isinstance(alpha, torch.Tensor):  # 0-d (a compiled step): in x's dtype
                alpha = alpha.to(x.dtype)
            x = torch.lerp(skip, x, alpha)
        return x

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """As ``nn.Module.load_state_dict``; weights saved before G's first dense layer took
        the official form (one bias per output unit, ``blocks.0.dense.bias``) are refused with
        a RuntimeError that says why (the callers add the file's name)."""
        legacy = state_dict.get("blocks.0.dense.bias")
        per_map = self.cfg.g_first_bias == "per-map"
        if legacy is not None and "blocks.0.bias" not in state_dict and per_map:
            raise RuntimeError(LEGACY_DENSE_BIAS_MESSAGE.format(n=legacy.numel()))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _join_labels(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must have shape (N, {self.latent_size}), got {tuple(z.shape)}")
        if self.label_size == 0:
            return z
        if labels is None:
            raise ValueError("this generator is conditional: pass labels")
        return torch.cat([z, one_hot(labels, self.label_size, z.dtype)], dim=1)


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N,) int class indices -> (N, num_classes) one-hot; (N, K) float passes through."""
    if labels.ndim == 2:
        return labels.to(dtype)
    return F.one_hot(labels.long(), num_classes).to(dtype)
