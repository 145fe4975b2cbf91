"""Layers against independent numpy formulas."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from progan.nn.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    downsample2x,
    effective_group_size,
    upsample2x,
)


def test_pixel_norm_matches_numpy():
    x = torch.randn(3, 7, 5, 4, dtype=torch.float64) * 3
    got = PixelNorm()(x).numpy()
    a = x.numpy()
    want = a / np.sqrt((a**2).mean(axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Each pixel's feature vector has unit mean square afterwards.
    np.testing.assert_allclose((got**2).mean(axis=1), 1.0, rtol=1e-6)


def test_pixel_norm_on_vectors():
    z = torch.randn(4, 512, dtype=torch.float64)
    out = PixelNorm()(z).numpy()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), math.sqrt(512), rtol=1e-7)


def numpy_minibatch_stddev(x: np.ndarray, group_size: int) -> np.ndarray:
    """Reference: sample n is in group n % M (M = N / G), as in the official code."""
    n, _c, h, w = x.shape
    g = group_size
    m = n // g
    out = np.zeros((n, 1, h, w))
    for group in range(m):
        members = x[[group + k * m for k in range(g)]]  # (G, C, H, W)
        std = np.sqrt(members.var(axis=0) + 1e-8)  # biased variance
        value = std.mean()
        for k in range(g):
            out[group + k * m] = value
    return np.concatenate([x, out], axis=1)


@pytest.mark.parametrize("n, group", [(8, 4), (12, 4), (6, 4), (3, 4), (5, 2)])
def test_minibatch_stddev_matches_numpy(n, group):
    x = torch.randn(n, 6, 4, 4, dtype=torch.float64)
    got = MinibatchStdDev(group)(x).numpy()
    want = numpy_minibatch_stddev(x.numpy(), effective_group_size(n, group))
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_effective_group_size():
    assert effective_group_size(16, 4) == 4
    assert effective_group_size(6, 4) == 3
    assert effective_group_size(3, 4) == 3
    assert effective_group_size(7, 4) == 1


@pytest.mark.parametrize("n", [16, 14, 6, 3])
def test_paper_group_size_16_makes_the_whole_minibatch_one_group(n):
    """Official v1 (D.mbstd_group_size = 16): group = min(16, N), so the paper's minibatches of
    16, 14, 6 and 3 each form one group, with no fallback and no warning."""
    import warnings

    assert effective_group_size(n, 16) == n
    x = torch.randn(n, 5, 4, 4, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = MinibatchStdDev(16)(x).numpy()
    want = numpy_minibatch_stddev(x.numpy(), n)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.unique(got[:, -1]).size == 1  # one statistic for the whole minibatch


def test_group_fallback_is_noted_once():
    from progan.nn import layers

    layers._GROUP_FALLBACKS_NOTED.discard((20, 16))
    x = torch.randn(20, 2, 4, 4)
    with pytest.warns(UserWarning, match=r"minibatch of 20 .* groups of 10 instead"):
        MinibatchStdDev(16)(x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MinibatchStdDev(16)(x)  # said once only


def test_minibatch_stddev_groups_are_independent():
    # Changing one sample changes the statistic of its own group only.
    x = torch.randn(8, 3, 4, 4)
    base = MinibatchStdDev(4)(x)[:, -1, 0, 0]
    x2 = x.clone()
    x2[0] += 5.0  # sample 0 is in group 0 (with samples 2, 4, 6)
    moved = MinibatchStdDev(4)(x2)[:, -1, 0, 0]
    changed = (moved - base).abs() > 1e-6
    assert changed.tolist() == [True, False, True, False, True, False, True, False]


def test_equalized_conv_applies_he_constant_at_runtime():
    conv = EqualizedConv2d(16, 8, 3)
    # Stored weights are N(0, 1), biases zero.
    assert abs(conv.weight.std().item() - 1.0) < 0.1
    assert torch.count_nonzero(conv.bias) == 0
    x = torch.randn(2, 16, 6, 6)
    he = math.sqrt(2) / math.sqrt(16 * 3 * 3)
    want = F.conv2d(x, conv.weight * he, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), want)


def test_equalized_linear_and_gain():
    lin = EqualizedLinear(100, 10, gain=1.0)
    x = torch.randn(3, 100)
    torch.testing.assert_close(lin(x), x @ (lin.weight * 0.1).T + lin.bias)


def test_equalized_lr_gradient_scale():
    """Under equalized LR the stored weights' gradient is the effective one times c: the
    dynamic range of all layers' updates is the same under Adam (Section 4.1)."""
    conv = EqualizedConv2d(4, 4, 3)
    x = torch.randn(2, 4, 5, 5)
    conv(x).square().sum().backward()
    w_eff = (conv.weight.detach() * conv.scale).requires_grad_(True)
    F.conv2d(x, w_eff, conv.bias.detach(), padding=1).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, w_eff.grad * conv.scale)


def test_conventional_init_when_not_equalized():
    conv = EqualizedConv2d(64, 64, 3, equalized=False)
    assert conv.scale == 1.0
    assert abs(conv.weight.std().item() - math.sqrt(2 / (64 * 9))) < 0.01


def test_upsample_and_downsample_match_numpy():
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    up = upsample2x(x).numpy()
    np.testing.assert_array_equal(up, x.numpy().repeat(2, axis=2).repeat(2, axis=3))
    down = downsample2x(x).numpy()
    want = x.numpy().reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(down, want, rtol=1e-12)
    np.testing.assert_allclose(downsample2x(upsample2x(x)).numpy(), x.numpy(), rtol=1e-12)
