"""Tests of the sliced Wasserstein distance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from progan.metrics import swd


def _textures(n: int, res: int, seed: int) -> torch.Tensor:
    """Stationary random textures (blurred noise), uint8 (n, 3, res, res)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, res, res, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    return (128 + 80 * x).round().clamp(0, 255).to(torch.uint8)


def test_pyramid_reconstructs_input():
    x = torch.rand(3, 3, 64, 64) * 255
    levels = swd.laplacian_pyramid(x, 4)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16, 8]
    y = swd.reconstruct_laplacian_pyramid(levels)
    torch.testing.assert_close(y, x, atol=1e-3, rtol=0)


def test_pyr_down_up_match_mirror_convolution():
    """Independent check against scipy.ndimage with the 5x5 binomial kernel, mode='mirror'."""
    x = np.random.default_rng(0).random((2, 1, 16, 16)).astype(np.float64) * 255
    k1 = np.array([1, 4, 6, 4, 1], np.float64)
    k = (np.outer(k1, k1) / 256.0)[None, None]
    down = scipy.ndimage.convolve(x, k, mode="mirror")[:, :, ::2, ::2]
    ours = swd.pyr_down(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, down, atol=1e-9)
    up = np.zeros((2, 1, 16, 16))
    up[:, :, ::2, ::2] = down
    ref_up = scipy.ndimage.convolve(up, k * 4.0, mode="mirror")
    np.testing.assert_allclose(swd.pyr_up(torch.from_numpy(down)).numpy(), ref_up, atol=1e-9)


def test_resolutions_and_patch_shapes():
    assert swd.swd_resolutions(128) == [128, 64, 32, 16]
    assert swd.swd_resolutions(8) == [8]
    assert swd.swd_levels(32) == ["32", "16", "avg"]
    level = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    p = swd.sample_patches(level, 5, 7, torch.Generator().manual_seed(0))
    assert p.shape == (10, 3 * 49)
    # each row is a contiguous 7x7 window of one image, all channels
    row = p[7].view(3, 7, 7)
    img = 7 // 5
    y0, x0 = divmod(int(row[0, 0, 0].item()) - img * 3 * 256, 16)
    torch.testing.assert_close(row, level[img, :, y0 : y0 + 7, x0 : x0 + 7])


def test_same_set_same_patches_is_exactly_zero():
    imgs = _textures(8, 32, 0)
    descs = []
    for _ in range(2):
        d = swd.PatchDescriptors(32, 3, seed=5)
        d.feed(imgs[:3])
        d.feed(imgs[3:])
        descs.append(d.finalize())
    out = swd.swd_from_descriptors(descs[0], descs[1], [32, 16])
    assert out == {"32": 0.0, "16": 0.0, "avg": 0.0}


def test_fresh_patches_small_and_shrinking_with_more_images():
    def distance(n: int) -> float:
        a = swd.PatchDescriptors(32, 3, seed=1)
        b = swd.PatchDescriptors(32, 3, seed=2)
        a.feed(_textures(n, 32, 10))
        b.feed(_textures(n, 32, 20))
        return swd.swd_from_descriptors(a.finalize(), b.finalize(), [32, 16])["avg"]

    small, large = distance(8), distance(128)
    assert large < 0.6 * small
    assert large < 30.0  # ~ 1 / sqrt(n): 76 (8 images), 38 (32), 20 (128)
    # a clearly different distribution is far away
    c = swd.PatchDescriptors(32, 3, seed=3)
    c.feed(torch.nn.functional.avg_pool2d(_textures(128, 32, 30).float(), 3, 1, 1).to(torch.uint8))
    a = swd.PatchDescriptors(32, 3, seed=1)
    a.feed(_textures(128, 32, 10))
    far = swd.swd_from_descriptors(a.finalize(), c.finalize(), [32, 16])["avg"]
    assert far > 3 * large


def _directions(seed: int, dim: int, k: int, repeats: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dirs = [torch.randn(dim, k, generator=g, dtype=torch.float64) for _ in range(repeats)]
    d = torch.cat(dirs, 1)
    return d / d.norm(dim=0, keepdim=True)


def test_shifted_gaussian_gives_analytic_sliced_distance():
    dim = 6
    m1 = torch.tensor([0.0, 1.0, -2.0, 0.5, 0.0, 3.0])
    m2 = torch.tensor([1.0, -1.0, 0.0, 0.5, 2.0, 0.0])
    a = torch.randn(20000, dim) + m1
    b = a - m1 + m2  # the same cloud shifted: W1 along u is exactly |u . (m1 - m2)|
    got = swd.sliced_wasserstein(a, b, 512, 128, torch.Generator().manual_seed(7))
    u = _directions(7, dim, 128, 4)
    expected = (u.T @ (m1 - m2).double()).abs().mean().item()
    assert got == pytest.approx(expected, rel=1e-4)


def test_independent_gaussians_give_analytic_sliced_distance():
    dim = 6
    m1 = torch.tensor([0.0, 1.0, -2.0, 0.5, 0.0, 3.0])
    m2 = torch.tensor([1.0, -1.0, 0.0, 0.5, 2.0, 0.0])
    a = torch.randn(40000, dim) + m1
    b = torch.randn(40000, dim) + m2
    got = swd.sliced_wasserstein(a, b, 128, 64, torch.Generator().manual_seed(3))
    expected = (_directions(3, dim, 64, 2).T @ (m1 - m2).double()).abs().mean().item()
    assert got == pytest.approx(expected, rel=0.03)


def test_normalization_is_per_channel_over_all_descriptors():
    d = torch.randn(1000, 2 * 49) * torch.tensor([3.0, 7.0]).repeat_interleave(49) + 5
    n = swd.normalize_descriptors(d, 2).view(1000, 2, 49)
    torch.testing.assert_close(n.mean(dim=(0, 2)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.std(dim=(0, 2), unbiased=False), torch.ones(2), atol=1e-5, rtol=0)


def test_feed_checks_shape():
    d = swd.PatchDescriptors(32, 3)
    with pytest.raises(ValueError):
        d.feed(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_grayscale_is_tiled_to_three_channels_as_the_official_evaluation():
    """Official util_scripts.evaluate_metrics: np.tile(images, [1, 3, 1, 1]) for one-channel
    images before the SWD (whose descriptors assert 3 channels). Feeding one-channel images
    must give exactly what feeding their explicit 3-channel tiling gives."""
    gray = _textures(6, 32, 7)[:, :1]
    other = _textures(6, 32, 8)[:, :1]
    rgb = np.tile(gray.numpy(), [1, 3, 1, 1])  # the official operation, in numpy
    rgb_other = np.tile(other.numpy(), [1, 3, 1, 1])

    def descriptors(images, channels):
        d = swd.PatchDescriptors(32, channels, seed=11)
        d.feed(torch.as_tensor(images))
        return d.finalize()

    ours = descriptors(gray, 1)
    ref = descriptors(rgb, 3)
    assert [t.shape[1] for t in ours] == [3 * 49, 3 * 49]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    got = swd.swd_from_descriptors(ours, descriptors(other, 1), [32, 16], seed=2)
    want = swd.swd_from_descriptors(ref, descriptors(rgb_other, 3), [32, 16], seed=2)
    assert got == want and got["avg"] > 0
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        swd.PatchDescriptors(32, 1).feed(torch.as_tensor(rgb))
