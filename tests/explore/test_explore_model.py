"""The explorer's computations (no web framework): seeds, classes, depths, slerp, latents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from progan.errors import ProganError
from progan.explore.model import Explorer, slerp
from progan.generate import generate_images, latents_for_seeds, load_generator


def test_slerp_endpoints_are_exact_and_the_path_is_a_great_circle():
    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(16, generator=gen, dtype=torch.float64),
        torch.randn(16, generator=gen, dtype=torch.float64),
    )
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    ua, ub = a / a.norm(), b / b.norm()
    omega = math.acos(float(ua @ ub))
    for t in (0.25, 0.5, 0.8):
        p = slerp(a, b, t)
        assert float(p.norm()) == pytest.approx((1 - t) * float(a.norm()) + t * float(b.norm()))
        u = p / p.norm()  # the direction: at angle t * omega from a and (1 - t) * omega from b
        assert math.acos(min(1.0, float(u @ ua))) == pytest.approx(t * omega, abs=1e-9)
        assert math.acos(min(1.0, float(u @ ub))) == pytest.approx((1 - t) * omega, abs=1e-9)
    # a linear mix would shrink toward the origin; slerp keeps the norm of N(0, I) latents
    z = latents_for_seeds([1, 2], 512).double()
    assert float(slerp(z[0], z[1], 0.5).norm()) > 0.98 * math.sqrt(512)
    assert float(((z[0] + z[1]) / 2).norm()) < 0.8 * math.sqrt(512)


def test_sample_and_page_equal_progan_generate(snapshot):
    G = load_generator(snapshot)
    ex = Explorer(G)
    seeds, images = ex.page(5, 6)
    assert seeds == [5, 6, 7, 8, 9, 10]
    np.testing.assert_array_equal(images.numpy(), generate_images(G, seeds).numpy())
    np.testing.assert_array_equal(ex.sample(7).numpy(), generate_images(G, [7])[0].numpy())


def test_classes_default_to_seed_mod_classes(cond_snapshot):
    G = load_generator(cond_snapshot)
    ex = Explorer(G)
    _, images = ex.page(0, 6)
    np.testing.assert_array_equal(
        images.numpy(), generate_images(G, range(6), [0, 1, 2] * 2).numpy()
    )
    _, chosen = ex.page(0, 3, label=2)
    np.testing.assert_array_equal(chosen.numpy(), generate_images(G, range(3), [2] * 3).numpy())
    with pytest.raises(ValueError, match="class"):
        ex.sample(0, label=3)
    # between seeds of two classes the class moves along: the ends are the two samples
    a, b = ex.latent(4), ex.latent(5)  # classes 1 and 2
    at0, at1 = ex.interpolate(a, b, 0.0, 1, label_b=2), ex.interpolate(a, b, 1.0, 1, label_b=2)
    np.testing.assert_array_equal(at0.numpy(), ex.sample(4).numpy())
    np.testing.assert_array_equal(at1.numpy(), ex.sample(5).numpy())
    torch.testing.assert_close(ex.mixed_labels(1, 2, [0.25]), torch.tensor([[0.0, 0.75, 0.25]]))


def test_depths_of_an_early_snapshot(early_snapshot):
    G = load_generator(early_snapshot)
    ex = Explorer(G)
    assert ex.depths == [0, 1] and ex.resolution() == 8
    assert ex.sample(3).shape == (3, 8, 8)
    np.testing.assert_array_equal(ex.sample(3).numpy(), generate_images(G, [3])[0].numpy())
    low = ex.sample(3, depth=0)
    z = latents_for_seeds([3], 8)
    ref = (G(z, None, 0, 1.0) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0]
    np.testing.assert_array_equal(low.numpy(), ref.numpy())
    with pytest.raises(ValueError, match="depth"):
        ex.sample(3, depth=2)  # deeper than the snapshot was trained


def test_interpolation_and_animation(snapshot):
    G = load_generator(snapshot)
    ex = Explorer(G)
    a, b = ex.latent(3), ex.latent(4)
    np.testing.assert_array_equal(ex.interpolate(a, b, 0.0, None).numpy(), ex.sample(3).numpy())
    np.testing.assert_array_equal(ex.interpolate(a, b, 1.0, None).numpy(), ex.sample(4).numpy())
    mid = ex.interpolate(a, b, 0.5, None)
    assert not torch.equal(mid, ex.sample(3)) and not torch.equal(mid, ex.sample(4))
    frames = list(ex.animation(a, b, None, frames=8, batch_size=3))
    assert len(frames) == 8
    np.testing.assert_array_equal(frames[0].numpy(), ex.sample(3).numpy())  # the loop's start
    np.testing.assert_array_equal(frames[4].numpy(), ex.sample(4).numpy())  # half way: B


def test_projected_latent_loads_and_is_checked(snapshot, tmp_path):
    from safetensors.torch import save_file

    from progan.tools.project_io import LATENT_FORMAT

    ex = Explorer(load_generator(snapshot))
    z = torch.randn(1, 8)
    save_file({"z": z}, str(tmp_path / "ok.safetensors"), {"format": LATENT_FORMAT})
    loaded, label = ex.load_projected(tmp_path / "ok.safetensors")
    assert torch.equal(loaded, z[0]) and label is None
    save_file(
        {"z": torch.randn(1, 5)}, str(tmp_path / "small.safetensors"), {"format": LATENT_FORMAT}
    )
    with pytest.raises(ProganError, match="size 5"):
        ex.load_projected(tmp_path / "small.safetensors")
    save_file({"w": z}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ProganError, match="not a latent"):
        ex.load_projected(tmp_path / "other.safetensors")
