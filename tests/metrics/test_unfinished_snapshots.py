"""Snapshots taken before the network is fully grown are measured at the full resolution,
their images upscaled by nearest neighbour (as the official code evaluates them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from progan.cli import main
from progan.config import NetworkConfig
from progan.data.create import make_synthetic_dataset
from progan.generate import latents_for_seeds, load_generator, upscale_nearest
from progan.metrics.api import evaluate
from progan.metrics.sources import ArraySource, GeneratorSource
from progan.nn import Generator
from progan.train.checkpoint import save_generator_snapshot


def _generator(depth: int) -> Generator:
    torch.manual_seed(0)
    G = Generator(NetworkConfig(resolution=16, channels=3, latent_size=8, fmap_base=64, fmap_max=8))
    G.default_depth = depth
    return G.eval().requires_grad_(False)


def _by_index(images: np.ndarray, resolution: int) -> np.ndarray:
    """Nearest-neighbour upscaling written as indexing: output pixel (y, x) is input pixel
    (y // f, x // f)."""
    idx = np.arange(resolution) // (resolution // images.shape[-1])
    return images[:, :, idx][:, :, :, idx]


def _raw_uint8(G: Generator, seeds: list[int], depth: int) -> np.ndarray:
    z = latents_for_seeds(seeds, G.latent_size)
    return (G(z, None, depth, 1.0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def test_upscale_nearest_repeats_pixels_and_checks_the_factor():
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.uint8).reshape(2, 1, 2, 2)
    up = upscale_nearest(x, 8)
    assert up.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(up.numpy(), _by_index(x.numpy(), 8))
    assert upscale_nearest(x, 2) is x
    with pytest.raises(ValueError, match="upscale"):
        upscale_nearest(x, 5)


@pytest.mark.parametrize("depth", [0, 1])
def test_generator_source_of_an_early_snapshot_is_upscaled_to_full_size(depth):
    G = _generator(depth)
    source = GeneratorSource(G)
    assert source.resolution == 16 and source.upscaled_from == 4 * 2**depth
    (batch,) = list(source.batches(5, 8))
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == torch.uint8
    np.testing.assert_array_equal(
        batch.numpy(), _by_index(_raw_uint8(G, list(range(5)), depth), 16)
    )
    assert GeneratorSource(_generator(2)).upscaled_from is None  # fully grown: as it is


def test_metrics_command_on_an_early_snapshot_gives_every_full_resolution_level(tmp_path, capsys):
    data = tmp_path / "d.zip"
    make_synthetic_dataset(data, count=64, resolution=32, seed=2)
    torch.manual_seed(0)
    net = NetworkConfig(resolution=32, channels=3, latent_size=8, fmap_base=64, fmap_max=8)
    G = Generator(net)
    snap = tmp_path / "snapshot-000001.000.safetensors"
    save_generator_snapshot(snap, G.state_dict(), net, depth=1, alpha=1.0)  # 8x8 of 32x32
    out = tmp_path / "m.json"
    argv = ["metrics", str(snap), "--data", str(data), "--metrics", "swd", "--num-images", "64"]
    assert main([*argv, "--device", "cpu", "--json", str(out), "--quiet"]) == 0
    assert "upscaled by nearest neighbour to 32x32" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["upscaled_from"] == 8
    assert set(result["swd"]) == {"32", "16", "avg"}  # the levels of a 32x32 model
    # The same numbers as SWD of the 8x8 images upscaled here, independently.
    fakes = _by_index(_raw_uint8(load_generator(snap), list(range(64)), 1), 32)
    ref = evaluate("swd", ArraySource(fakes), data, num=64, device="cpu", use_cache=False)
    assert result["swd"] == pytest.approx(ref["swd"], rel=1e-6)
