"""Tests of MS-SSIM against pytorch-msssim and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from progan.metrics import ms_ssim as M


def _photo_crops(folder, size: int = 256) -> torch.Tensor:
    """uint8 (N, 3, size, size): centre crops of the shared photos."""
    crops = []
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png"):
        p = folder / "photos" / name
        if not p.is_file():
            continue
        im = np.asarray(Image.open(p).convert("RGB"))
        h, w = im.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        crops.append(im[y : y + size, x : x + size].transpose(2, 0, 1))
    if len(crops) < 2:
        pytest.skip("need at least two photos")
    return torch.from_numpy(np.stack(crops))


def test_agrees_with_pytorch_msssim_per_channel(shared_data):
    pm = pytest.importorskip("pytorch_msssim")
    imgs = _photo_crops(shared_data, 192).float()
    x, y = imgs[:-1], imgs[1:]
    for c in range(3):  # pytorch-msssim averages over channels after the product; compare C=1
        xc, yc = x[:, c : c + 1], y[:, c : c + 1]
        ours = M.ms_ssim(xc, yc)
        ref = pm.ms_ssim(xc, yc, data_range=255, size_average=False)
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-4)
    # noisy copy: high but below 1; identical images: exactly 1
    noisy = (x + torch.randn_like(x) * 20).clamp(0, 255)
    ref = pm.ms_ssim(noisy[:, :1], x[:, :1], data_range=255, size_average=False)
    np.testing.assert_allclose(M.ms_ssim(noisy[:, :1], x[:, :1]).numpy(), ref.numpy(), atol=1e-4)
    torch.testing.assert_close(M.ms_ssim(x, x), torch.ones(x.shape[0]))


def test_single_scale_agrees_with_skimage(shared_data):
    metrics = pytest.importorskip("skimage.metrics")
    imgs = _photo_crops(shared_data, 128).double()
    a, b = imgs[0, 1].numpy(), imgs[1, 1].numpy()
    ref = metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    ssim, _ = M.ssim_and_cs(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])
    assert ssim.item() == pytest.approx(ref, abs=1e-4)


def test_small_images_shrink_the_window():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    v = M.ms_ssim(x[:2], x[2:])
    assert v.shape == (2,) and torch.isfinite(v).all() and (v >= 0).all() and (v <= 1).all()
    with pytest.raises(ValueError):
        M.ms_ssim(x[:, :, :30, :30], x[:, :, :30, :30])


def test_accumulator_pairs_consecutive_images_across_batches():
    x = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    acc = M.MSSSIMAccumulator()
    acc.feed(x[:3])
    acc.feed(x[3:])
    assert acc.num_pairs == 3
    expected = M.ms_ssim(x[0::2], x[1::2]).double().mean().item()
    assert acc.value() == pytest.approx(expected, abs=1e-5)  # float32 batching
