"""Official pickles -> progan networks compute what networks.py computes (NumPy reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from official_fixtures import (
    conv2d,
    conv2d_downscale2d,
    d_paper,
    downscale2d,
    g_paper,
    official_kwargs,
    upscale2d,
    upscale2d_conv2d,
    write_official,
)

from progan.errors import CheckpointError
from progan.generate import upscale_nearest
from progan.official import load_official_networks, read_official
from progan.official.load import build_discriminator, build_generator


def _compare(actual: torch.Tensor, reference: np.ndarray, what: str, tol: float) -> None:
    """float64: max error <= tol * scale. float32 (tol >= 1e-6): 99.9% of the values within
    tol * scale, and all within 100 * tol * scale (pixel norm over a few channels that are
    all near zero at some pixel amplifies float32 rounding there)."""
    ref = torch.from_numpy(np.asarray(reference))
    scale = ref.abs().max().item() + 1e-6
    err = (actual.double() - ref).abs().flatten()
    worst = err.max().item()
    if tol < 1e-6:
        assert worst <= tol * scale, f"{what}: max error {worst:.3g} (scale {scale:.3g})"
        return
    typical = torch.quantile(err[:1_000_000], 0.999).item() if err.numel() > 1 else worst
    assert typical <= tol * scale, f"{what}: 99.9% error {typical:.3g} (scale {scale:.3g})"
    assert worst <= 100 * tol * scale, f"{what}: max error {worst:.3g} (scale {scale:.3g})"


def _run_both(module, compare, *inputs):
    """The converted network in float64 equals the float64 reference to 1e-10 (so any
    difference is rounding), and in float32 to float32 rounding (1e-4 of the output's range
    after up to 20 layers)."""
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        net = module.to(dtype)
        with torch.no_grad():
            out = net(*[x if x is None or not torch.is_tensor(x) else x.to(dtype) for x in inputs])
        compare(out, tol, str(dtype))


def _check_file(path, arrays, gk, dk, n=4, labels=None, early_gain=False, seed=0):
    official = read_official(path)
    rng = np.random.default_rng(seed + 100)
    latent = official.network.latent_size
    z = rng.standard_normal((n, latent)).astype(np.float32)
    res = gk["resolution"]
    images = rng.standard_normal((n, gk["num_channels"], res, res)).astype(np.float32)
    lab = None if labels is None else labels.astype(np.float32)
    for role in ("G", "Gs"):
        ref = g_paper(arrays[role], gk, z, lab, early_gain=early_gain)
        _run_both(
            build_generator(official, role),
            lambda out, tol, dt, ref=ref, role=role: _compare(
                upscale_nearest(out, res), ref, f"{role} {dt}", tol
            ),
            torch.from_numpy(z),
            None if lab is None else torch.from_numpy(lab),
        )
    depth, alpha = official.depth["D"], official.alpha["D"]
    x = torch.from_numpy(images).double()
    for _ in range(official.network.max_depth - depth):
        x = F.avg_pool2d(x, 2)
    ref_scores, ref_logits = d_paper(arrays["D"], dk, images)

    def check_d(out, tol, dt):
        _compare(out[0], ref_scores[:, 0], f"D scores {dt}", tol)
        if dk.get("label_size", 0):
            _compare(out[1], ref_logits, f"D label logits {dt}", tol)

    _run_both(build_discriminator(official), check_d, x, depth, alpha)
    return official


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("lod", [0.0, 0.3, 1.0, 1.75, 3.0])
def test_networks_equal_the_reference_at_lod(tmp_path, fused, lod):
    gk, dk = official_kwargs(32, fmap_base=64, fmap_max=16, fused=fused)
    path, arrays, _ = write_official(tmp_path / "net.pkl", gk, dk, seed=int(lod * 4), lod=lod)
    official = _check_file(path, arrays, gk, dk)
    expected_depth = 3 - int(np.floor(lod))
    assert official.depth["Gs"] == expected_depth
    assert official.alpha["Gs"] == pytest.approx(1 - (lod - np.floor(lod)))


@pytest.mark.parametrize(
    "fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["unfused", "fused"]
)
def test_1024_layout_with_tiny_widths(tmp_path, fused):
    """The CelebA-HQ layout (ten blocks, ToRGB_lod0..8, 1024x1024 output) at widths 8 and 4
    (width 1 would make pixel norm a sign function, which amplifies float32 rounding)."""
    gk, dk = official_kwargs(1024, fmap_base=2048, fmap_max=8, fused=fused)
    path, arrays, _ = write_official(tmp_path / "hq.pkl", gk, dk, seed=5)
    assert path.stat().st_size < 300_000
    official = _check_file(path, arrays, gk, dk, n=1)
    assert official.network.resolution == 1024 and official.depth["Gs"] == 8


def test_protocols_and_numpy_module_names_load_the_same(tmp_path):
    gk, dk = official_kwargs(16, fmap_base=32, fmap_max=8)
    weights = []
    for protocol, numpy1 in ((2, True), (2, False), (4, False), (5, False)):
        path, arrays, _ = write_official(
            tmp_path / f"p{protocol}{numpy1}.pkl", gk, dk, seed=3, protocol=protocol,
            numpy1_names=numpy1,
        )  # fmt: skip
        if numpy1:
            assert b"numpy.core.multiarray" in path.read_bytes()
        official = read_official(path)
        weights.append(official.state_dicts)
        _check_file(path, arrays, gk, dk)
    for other in weights[1:]:
        for role in ("G", "D", "Gs"):
            for key, tensor in weights[0][role].items():
                assert torch.equal(other[role][key], tensor), (role, key)


def test_legacy_order_lod_last_and_mbstd_group_of_the_whole_batch(tmp_path):
    gk, dk = official_kwargs(16, fmap_base=32, fmap_max=8)
    path, arrays, _ = write_official(tmp_path / "legacy.pkl", gk, dk, seed=4, lod_last=True)
    official = _check_file(path, arrays, gk, dk, n=6)  # group min(16, 6) = 6
    assert official.network.mbstd_group_size == 16


def test_early_code_dense_gain_sqrt2_is_read_from_the_files_source(tmp_path):
    gk, dk = official_kwargs(16, fmap_base=32, fmap_max=8)
    path, arrays, _ = write_official(tmp_path / "feb.pkl", gk, dk, seed=6, early_gain=True)
    official = _check_file(path, arrays, gk, dk, early_gain=True)
    assert official.dense_gain_factor == 4.0
    path2, _arrays2, _ = write_official(tmp_path / "apr.pkl", gk, dk, seed=6)
    assert read_official(path2).dense_gain_factor == 1.0
    path3, _, _ = write_official(tmp_path / "x.pkl", gk, dk, early_gain="gain=np.sqrt(2), ")
    assert read_official(path3).dense_gain_factor == 4.0
    path4, _, _ = write_official(tmp_path / "y.pkl", gk, dk, early_gain="gain=0.5, ")
    with pytest.raises(CheckpointError, match="unknown gain"):
        read_official(path4)


def test_conditional_networks_and_explicit_settings(tmp_path):
    """label_size 3, latent 12, no latent normalization: labels reach G and D's logits."""
    gk, dk = official_kwargs(8, fmap_base=32, fmap_max=8, label_size=3, latent_size=12,
                             normalize_latents=False, mbstd_group_size=2)  # fmt: skip
    path, _arrays, _ = write_official(tmp_path / "cond.pkl", gk, dk, seed=7)
    labels = np.eye(3)[[0, 2, 1, 2]]
    official = read_official(path)
    assert official.network.normalize_latents is False
    # the NumPy reference always normalizes; compare against it only with normalization on
    gk2, dk2 = official_kwargs(8, fmap_base=32, fmap_max=8, label_size=3, latent_size=12,
                               mbstd_group_size=2)  # fmt: skip
    path2, arrays2, _ = write_official(tmp_path / "cond2.pkl", gk2, dk2, seed=7)
    _check_file(path2, arrays2, gk2, dk2, labels=labels)


def test_load_official_networks_returns_G_D_Gs(tmp_path):
    gk, dk = official_kwargs(16, fmap_base=32, fmap_max=8)
    path, _arrays, _ = write_official(tmp_path / "net.pkl", gk, dk, seed=8, lod=0.5)
    G, D, Gs = load_official_networks(path)
    assert not G.training and not D.training and not Gs.training
    assert (Gs.default_depth, Gs.default_alpha) == (2, 0.5)
    assert not torch.equal(G.to_rgb[0].weight, Gs.to_rgb[0].weight)  # two different nets


# --------------------------------------------------------------------------------------------
# The fused layers are ordinary layers (the equality the mapping relies on)


def test_fused_upscale_conv_equals_nearest_upsample_then_flipped_transposed_3x3():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    w = rng.standard_normal((3, 3, 6, 3))  # [kh, kw, out, in] as Conv0_up stores it
    fused = upscale2d_conv2d(x, w)
    plain = conv2d(upscale2d(x), w.transpose(0, 1, 3, 2)[::-1, ::-1])
    np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-12)
    wrong = conv2d(upscale2d(x), w.transpose(0, 1, 3, 2))  # without the flip it differs
    assert np.abs(fused - wrong).max() > 0.1
    # a one-pixel impulse shows the kernel's orientation
    imp = np.zeros((1, 1, 3, 3))
    imp[0, 0, 1, 1] = 1.0
    k = np.arange(9.0).reshape(3, 3, 1, 1)
    out = upscale2d_conv2d(imp, k)[0, 0]
    np.testing.assert_allclose(out, conv2d(upscale2d(imp), k[::-1, ::-1])[0, 0], atol=1e-12)


def test_fused_conv_downscale_equals_3x3_conv_then_average_pool():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 6))
    w = rng.standard_normal((3, 3, 3, 5))
    np.testing.assert_allclose(
        conv2d_downscale2d(x, w), downscale2d(conv2d(x, w)), rtol=0, atol=1e-12
    )
