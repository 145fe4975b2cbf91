"""Tests of evaluate(), the registry, sources and the command line."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from progan.errors import ConfigError
from progan.metrics import api, commands, registry
from progan.metrics.sources import ArraySource, CallableSource, DatasetSource


def _images(n, res=32, seed=0, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (n, channels, res, res), dtype=np.uint8)


def test_evaluate_real_vs_itself_and_keys():
    a = _images(16)
    out = api.evaluate("swd,ms-ssim", a, a, 16, seed=3)
    assert out["swd"] == {"32": 0.0, "16": 0.0, "avg": 0.0}
    assert 0.0 <= out["ms-ssim"] < 0.2
    assert out["num_images"] == {"swd": 16, "ms-ssim": 16}
    assert out["seconds"] > 0 and out["device"] == "cpu"
    b = _images(16, seed=1)
    assert api.evaluate(["swd"], b, a, 16)["swd"]["avg"] > 0


def test_evaluate_inception_metrics_with_random_weights():
    a, b = _images(4, seed=0), _images(4, seed=1)
    out = api.evaluate(["fid", "is"], b, a, 4, random_inception=True, is_splits=2)
    assert np.isfinite(out["fid"]) and set(out["is"]) == {"mean", "std"}
    assert out["is"]["mean"] >= 1.0 - 1e-9


def test_num_real_sets_the_fid_reference_size_only():
    fake = _images(4, seed=0)
    real = np.concatenate([fake, _images(8, seed=1)])  # its first 4 images are the fake ones
    same = api.evaluate(["fid", "swd"], fake, real, 4, random_inception=True)
    assert same["num_real_images"] == {"fid": 4, "swd": 4}
    assert same["swd"]["avg"] == 0.0
    more = api.evaluate(["fid", "swd"], fake, real, 4, random_inception=True, num_real=12)
    assert more["num_real_images"] == {"fid": 12, "swd": 4}  # SWD keeps equal counts
    assert more["num_images"] == {"fid": 4, "swd": 4}
    # random Inception weights give tiny FID values, so compare them by ratio
    assert more["fid"] > 1e3 * abs(same["fid"]) and more["swd"]["avg"] == 0.0
    capped = api.evaluate(["fid"], fake, real, 4, random_inception=True, num_real=1000)
    assert capped["num_real_images"] == {"fid": 12} and capped["fid"] == pytest.approx(more["fid"])
    with pytest.raises(ConfigError, match="num-real"):
        api.evaluate(["fid"], fake, real, 4, random_inception=True, num_real=0)


def test_registry_functions_and_names():
    assert set(api.METRICS) == {"swd", "ms-ssim", "fid", "is"}
    assert registry.resolve_names("MS_SSIM, swd,swd") == ["ms-ssim", "swd"]
    with pytest.raises(ConfigError):
        registry.resolve_names("nope")
    a = _images(8)
    assert api.METRICS["swd"](a, a, 8)["avg"] == 0.0
    with pytest.raises(ConfigError, match="need real images"):
        api.evaluate("swd", a)


def test_real_side_is_cached_in_memory(monkeypatch):
    api.clear_memory_cache()
    real = ArraySource(_images(8), cache_key="tiny")
    api.evaluate("swd", _images(8, seed=1), real, 8)
    calls = []
    monkeypatch.setattr(real, "batches", lambda *a, **k: calls.append(1) or iter(()))
    out = api.evaluate("swd", _images(8, seed=1), real, 8)
    assert not calls and out["swd"]["avg"] > 0


def test_fid_stats_cached_on_disk(tmp_path, monkeypatch):
    """The disk cache path: random weights stand in for the real file."""
    from progan.metrics import inception

    api.clear_memory_cache()
    weights = tmp_path / inception.FID_WEIGHTS_FILE
    torch.save(inception.load_inception(random_weights=True).state_dict(), weights)
    real = ArraySource(_images(3), cache_key="disk")
    kw = {"inception_path": weights, "cache_dir": tmp_path / "cache"}
    first = api.evaluate("fid", _images(3, seed=2), real, 3, **kw)["fid"]
    files = list((tmp_path / "cache").glob("fid-stats-*.npz"))
    assert len(files) == 1
    api.clear_memory_cache()
    monkeypatch.setattr(real, "batches", lambda *a, **k: iter(()))
    assert api.evaluate("fid", _images(3, seed=2), real, 3, **kw)["fid"] == pytest.approx(first)


def test_real_images_are_downscaled_to_the_fake_resolution():
    x = torch.tensor([[[[0, 2], [4, 7]]]], dtype=torch.uint8)
    assert api._downscale(x, 1).item() == 3  # 13 / 4 = 3.25 -> 3
    real = _images(8, res=64)
    fake = api._downscale(torch.from_numpy(real), 32)
    assert api.evaluate("swd", fake, real, 8)["swd"]["avg"] == 0.0


class _TinyDataset:
    resolution, channels, path, name = 16, 1, None, "tiny"

    def __init__(self, n):
        self.images = _images(n, res=16, channels=1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], -1


def test_dataset_and_callable_sources():
    ds = DatasetSource(_TinyDataset(10), seed=0)
    got = torch.cat(list(ds.batches(100, 4)))
    assert got.shape == (10, 1, 16, 16)
    order = np.random.default_rng(0).permutation(10)
    np.testing.assert_array_equal(got.numpy(), ds.dataset.images[order])
    src = CallableSource(lambda seeds: np.stack([_images(1, 16, s, 1)[0] for s in seeds]), 16, 1)
    a = torch.cat(list(src.batches(5, 2)))
    b = torch.cat(list(src.batches(5, 5)))
    assert torch.equal(a, b)


def test_command_registration_and_argument_checks():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    commands.add_command(sub)
    args = parser.parse_args(["metrics", "--data", "a.zip", "--metrics", "swd", "--num", "5"])
    assert args.func is commands.run and args.num == 5 and args.checkpoint is None
    with pytest.raises(ConfigError):
        commands.run(args)
    text = commands.format_table(
        {"swd": {"16": 1.0, "avg": 1.0}, "num_images": {"swd": 5}, "seconds": 1, "device": "cpu"}
    )
    assert "swd avg" in text
