"""Conditional generators without a class given use balanced classes, seed mod number of
classes, in `progan generate`, `video` and `metrics` alike (issue 23, part 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from progan.cli import build_parser, main
from progan.config import NetworkConfig
from progan.generate import balanced_labels, generate_images, latents_for_seeds, load_generator
from progan.metrics.sources import GeneratorSource
from progan.nn import Generator
from progan.train.checkpoint import save_generator_snapshot

CLASSES = 3


@pytest.fixture
def cond_snapshot(tmp_path):
    torch.manual_seed(0)
    net = NetworkConfig(
        resolution=8, channels=3, latent_size=8, fmap_base=32, fmap_max=8, label_size=CLASSES
    )
    path = tmp_path / "snapshot-000001.000.safetensors"
    save_generator_snapshot(path, Generator(net).state_dict(), net, depth=1, alpha=1.0)
    return path


def _reference(G: Generator, seed: int, label: int) -> np.ndarray:
    """HWC uint8 image of one seed and class, computed directly from G's forward pass."""
    z = latents_for_seeds([seed], G.latent_size)
    image = G(z, torch.tensor([label]))[0]
    return (image * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _generate(snapshot, out, *options: str) -> int:
    return main(["generate", str(snapshot), "--outdir", str(out), "--device", "cpu", *options])


def test_balanced_labels_is_seed_mod_classes():
    assert balanced_labels([0, 1, 2, 3, 7, 10], 3) == [0, 1, 2, 0, 1, 1]
    with pytest.raises(ValueError):
        balanced_labels([0], 0)


def test_generate_without_label_gives_seed_mod_classes(cond_snapshot, tmp_path):
    out = tmp_path / "out"
    assert _generate(cond_snapshot, out, "--seeds", "3-8") == 0
    G = load_generator(cond_snapshot)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"seed{s:06d}-class{s % CLASSES}.png" for s in range(3, 9)]
    for seed in range(3, 9):
        image = np.asarray(Image.open(out / f"seed{seed:06d}-class{seed % CLASSES}.png"))
        np.testing.assert_array_equal(image, _reference(G, seed, seed % CLASSES))
    # not all one class: the images of class 0 differ from those of the balanced classes
    assert not np.array_equal(_reference(G, 4, 0), _reference(G, 4, 1))


def test_generate_with_label_uses_that_class(cond_snapshot, tmp_path):
    out = tmp_path / "out"
    assert _generate(cond_snapshot, out, "--seeds", "0-2", "--label", "2") == 0
    G = load_generator(cond_snapshot)
    for seed in range(3):
        image = np.asarray(Image.open(out / f"seed{seed:06d}-class2.png"))
        np.testing.assert_array_equal(image, _reference(G, seed, 2))
    assert _generate(cond_snapshot, out, "--seeds", "0", "--label", "5") == 2  # not in [0, 2]


def test_api_and_metrics_source_agree_on_the_default_classes(cond_snapshot):
    G = load_generator(cond_snapshot)
    seeds = list(range(7))
    by_default = generate_images(G, seeds)
    explicit = generate_images(G, seeds, [s % CLASSES for s in seeds])
    np.testing.assert_array_equal(by_default.numpy(), explicit.numpy())
    (from_metrics,) = list(GeneratorSource(G).batches(7, 7))
    np.testing.assert_array_equal(from_metrics.numpy(), by_default.numpy())


@pytest.mark.parametrize("command", ["generate", "video", "neighbors"])
def test_help_states_the_default_class_rule(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "mod number of classes" in " ".join(capsys.readouterr().out.split())
