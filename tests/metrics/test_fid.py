"""Tests of the Frechet distance, feature statistics and the FID Inception-v3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from progan.errors import ProganError
from progan.metrics import fid, inception
from progan.metrics.inception import FID_WEIGHTS_FILE, FIDInceptionV3, load_inception

WEIGHTS = Path(__file__).resolve().parents[2].parent / "shared/data/weights" / FID_WEIGHTS_FILE


def _cov(rng, d):
    a = rng.normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_matches_independent_scipy(method):
    rng = np.random.default_rng(1)
    d = 48
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _cov(rng, d), _cov(rng, d)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(ref, rel=1e-8)
    assert fid.frechet_distance(mu1, s1, mu1, s1, method=method) == pytest.approx(0, abs=1e-8)


def test_frechet_distance_singular_covariances_agree():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.3  # rank 19 < 64
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    a = fid.frechet_distance(*args, method="eigh")
    b = fid.frechet_distance(*args, method="sqrtm")
    assert a == pytest.approx(b, rel=1e-5)


def test_feature_stats_match_numpy():
    x = torch.randn(301, 16, dtype=torch.float64) * 3 + 100
    st = fid.FeatureStats()
    for chunk in (x[:7], x[7:200], x[200:]):
        st.feed(chunk.float())
    xf = x.float().double().numpy()
    np.testing.assert_allclose(st.mean(), xf.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov(), np.cov(xf, rowvar=False), rtol=1e-9, atol=1e-9)


def test_stats_roundtrip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    p = fid.save_stats(tmp_path / "s.npz", mu, sigma, {"num": 5})
    m2, s2, meta = fid.load_stats(p)
    np.testing.assert_array_equal(m2, mu)
    np.testing.assert_array_equal(s2, sigma)
    assert meta == {"num": 5}


def _expected_keys() -> dict[str, tuple[int, ...]]:
    """pytorch-fid's state dict layout (torchvision Inception3 names), written out here."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
             ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
             ("Conv2d_4a_3x3", 80, 192, 3, 3)]  # fmt: skip
    for name, cin, pf in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs += [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
                  (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
                  (f"{name}.branch3x3dbl_2", 64, 96, 3, 3),
                  (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
                  (f"{name}.branch_pool", cin, pf, 1, 1)]  # fmt: skip
    convs += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3),
              ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]  # fmt: skip
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += [(f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
                  (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
                  (f"{name}.branch7x7dbl_1", 768, c7, 1, 1),
                  (f"{name}.branch7x7dbl_2", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_3", c7, c7, 1, 7),
                  (f"{name}.branch7x7dbl_4", c7, c7, 7, 1),
                  (f"{name}.branch7x7dbl_5", c7, 192, 1, 7),
                  (f"{name}.branch_pool", 768, 192, 1, 1)]  # fmt: skip
    convs += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
              ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1),
              ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
              ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
              ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]  # fmt: skip
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs += [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
                  (f"{name}.branch3x3_2a", 384, 384, 1, 3),
                  (f"{name}.branch3x3_2b", 384, 384, 3, 1),
                  (f"{name}.branch3x3dbl_1", cin, 448, 1, 1),
                  (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
                  (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3),
                  (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
                  (f"{name}.branch_pool", cin, 192, 1, 1)]  # fmt: skip
    keys: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, kh, kw in convs:
        keys[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{p}"] = (cout,)
    keys["fc.weight"] = (1008, 2048)
    keys["fc.bias"] = (1008,)
    return keys


def test_architecture_matches_reference_state_dict_layout():
    net = FIDInceptionV3()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: v for k, v in got.items() if not k.endswith("num_batches_tracked")}
    assert got == _expected_keys()
    assert sum(p.numel() for p in net.parameters()) == 23_850_960


def test_forward_shapes_and_state_dict_loading(tmp_path):
    net = load_inception(random_weights=True)
    out = net(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    torch.testing.assert_close(out["logits"], out["pool"] @ net.fc.weight.T)
    # a file with exactly the reference keys (no num_batches_tracked) loads; others do not
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.pth")
    loaded = load_inception(tmp_path / "w.pth")
    torch.testing.assert_close(loaded.fc.weight, net.fc.weight)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ProganError, match="not the FID Inception"):
        load_inception(tmp_path / "bad.pth")


def test_missing_weights_give_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("PROGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ProganError, match="not found"):
        inception.find_inception_weights(tmp_path / "nope.pth")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    target = str(tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILE)
    with pytest.raises(ProganError, match="place it at") as info:
        inception.find_inception_weights()
    assert target in str(info.value)


@pytest.fixture
def real_weights() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} is not present")
    return WEIGHTS


def _crops(folder: Path, name: str, n: int, size: int = 64) -> torch.Tensor:
    from PIL import Image

    im = np.asarray(Image.open(folder / "photos" / name).convert("RGB"))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        out.append(im[y : y + size, x : x + size].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def test_real_weights_features_and_fid(real_weights, shared_data):
    net = load_inception(real_weights)
    a = _crops(shared_data, "astronaut.png", 6)
    b = _crops(shared_data, "coffee.png", 6)
    fa = net(a)["pool"].double()
    torch.testing.assert_close(net(a)["pool"].double(), fa)
    assert (fa >= 0).all()
    p = torch.softmax(net(a)["logits"], 1)
    assert p.shape == (6, 1008)
    fb = net(b)["pool"].double()

    def stats(f):
        return f.mean(0).numpy(), np.cov(f.numpy(), rowvar=False)

    same = fid.frechet_distance(*stats(fa), *stats(fa))
    diff = fid.frechet_distance(*stats(fa), *stats(fb))
    assert abs(same) < 1e-3
    assert diff > 10.0
