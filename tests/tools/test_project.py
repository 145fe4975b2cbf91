"""`progan project`: latents found by optimisation reproduce images; inputs and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from progan.cli import main
from progan.config import NetworkConfig
from progan.data.create import make_synthetic_dataset
from progan.data.images import fit_to_square
from progan.errors import DatasetError
from progan.generate import generate_images, latents_for_seeds, load_generator
from progan.nn import Generator
from progan.tools.perceptual import PerceptualDistance
from progan.tools.project import project_images, psnr, sphere
from progan.tools.project_io import load_latent, load_targets, write_projection
from progan.train.checkpoint import save_generator_snapshot


def _generator(label_size: int = 0) -> Generator:
    torch.manual_seed(0)
    net = NetworkConfig(
        resolution=16, channels=3, latent_size=8, fmap_base=32, fmap_max=8, label_size=label_size
    )
    G = Generator(net).eval().requires_grad_(False)
    with torch.no_grad():  # a random init reaches +-3.5: scale its output into [-1, 1] as
        for p in G.to_rgb.parameters():  # a trained G's, so that the targets are not clipped
            p.mul_(0.3)
    return G


@pytest.fixture
def snapshot(tmp_path):
    G = _generator()
    path = tmp_path / "snapshot-000001.000.safetensors"
    save_generator_snapshot(path, G.state_dict(), G.cfg, depth=G.max_depth, alpha=1.0)
    return path


def test_projection_recovers_an_image_the_generator_made():
    G = _generator()
    targets = generate_images(G, [11, 12])
    start = generate_images(G, [100, 101])  # unrelated samples: where a random start begins
    # a random tiny generator has local minima: one start of the 8 finds each image
    result = project_images(G, targets, None, steps=200, starts=8, select_step=20, seed=1)
    gain = psnr(result.images, targets) - psnr(start, targets)
    assert float(psnr(result.images, targets).min()) > 30.0 and float(gain.min()) > 10.0
    # the latents are on the sphere and reproduce the returned images
    assert torch.allclose(result.latents.norm(dim=1), torch.full((2,), 8**0.5))
    np.testing.assert_array_equal(generate_images_from(G, result.latents), result.images.numpy())
    assert result.loss.shape == (2, 200) and max(result.start.tolist()) < 8
    assert bool((result.loss[:, -1] < result.loss[:, 0]).all())  # the loss went down


def generate_images_from(G, latents):
    return (G(latents) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def test_conditional_projection_uses_the_class():
    G = _generator(label_size=3)
    labels = torch.tensor([2, 0])
    # G normalises (latent, one-hot class) together, so a conditional G's output depends on
    # the latent's length too; the projection searches the sphere, so the targets lie on it
    z = sphere(latents_for_seeds([5, 6], 8))
    targets = (G(z, labels) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    result = project_images(G, targets, None, labels, steps=200, starts=8, select_step=20)
    assert float(psnr(result.images, targets).max()) > 40.0  # found (one may be a local min)
    wrong = project_images(G, targets, None, labels.flip(0), steps=200, starts=8, select_step=20)
    assert float(psnr(wrong.images, targets).max()) < 30.0  # the other class cannot match


def test_perceptual_distance_flat_features_match_and_gradients_flow():
    perc = PerceptualDistance(random_weights=True, input_size=80)
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 16, 16, generator=gen) * 2 - 1
    b = torch.rand(3, 3, 16, 16, generator=gen) * 2 - 1
    direct = perc(a, b)
    flat = (perc.flat_features(a) - perc.flat_features(b)).square().sum(1)
    torch.testing.assert_close(direct, flat, rtol=1e-4, atol=1e-5)
    assert torch.allclose(perc(a, a), torch.zeros(3), atol=1e-6) and bool((direct > 0).all())
    assert bool((direct <= 12.0).all())  # three layers, each term in [0, 4]
    x = a.clone().requires_grad_(True)
    perc(x, b).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        PerceptualDistance(random_weights=True, input_size=64)


def test_perceptual_term_is_optimised():
    G = _generator()
    perc = PerceptualDistance(random_weights=True, input_size=80)
    targets = generate_images(G, [3])
    result = project_images(G, targets, perc, steps=30, starts=1, pixel_weight=0.0)
    assert float(result.perceptual[0, -1]) < float(result.perceptual[0, 0])
    assert float(result.pixel[0, -1]) > 0  # recorded even when not weighted


def test_targets_from_files_folders_and_datasets(tmp_path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(wide).save(folder / "wide.png")
    Image.fromarray(wide[:, :, 0]).save(tmp_path / "gray.png")
    names, images = load_targets([folder, tmp_path / "gray.png"], 16, 3)
    assert names == ["wide", "gray"] and images.shape == (2, 3, 16, 16)
    # exactly the `progan dataset create` path: centre crop, Lanczos
    expected = fit_to_square(wide, 16, "center-crop", "wide").transpose(2, 0, 1)
    np.testing.assert_array_equal(images[0].numpy(), expected)
    data = tmp_path / "d.zip"
    make_synthetic_dataset(data, count=5, resolution=16, seed=0)
    names, images = load_targets([data], 16, 3, max_images=3)
    assert names == ["d-000000", "d-000001", "d-000002"] and images.shape == (3, 3, 16, 16)
    with pytest.raises(DatasetError, match="not found"):
        load_targets([tmp_path / "missing.png"], 16, 3)


def test_written_latent_reproduces_the_reconstruction(tmp_path):
    G = _generator()
    targets = generate_images(G, [1, 2])
    result = project_images(G, targets, None, steps=12, starts=2, select_step=4, frame_every=3)
    records = write_projection(tmp_path, ["a", "b"], targets, result, "net", video_fps=5)
    assert [r["name"] for r in records] == ["a", "b"]
    z, label = load_latent(tmp_path / "b-latent.safetensors")
    assert label is None and z.shape == (8,)
    np.testing.assert_array_equal(generate_images_from(G, z[None])[0], result.images[1].numpy())
    curve = json.loads((tmp_path / "a-loss.json").read_text())
    assert len(curve["loss"]) == 12 and curve["start"] in (0, 1)
    compare = np.asarray(Image.open(tmp_path / "a-compare.png"))
    assert compare.shape == (128, 2 * 128 + 2, 3)  # target | reconstruction, enlarged 8x
    np.testing.assert_array_equal(compare[:128:8, :128:8], targets[0].permute(1, 2, 0).numpy())
    assert (tmp_path / "a-optimisation.mp4").stat().st_size > 0
    assert records[1]["psnr_db"] == pytest.approx(float(psnr(result.images, targets)[1]))


def test_project_command(snapshot, tmp_path, capsys):
    G = load_generator(snapshot)
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in (4, 5, 6):
        img = generate_images(G, [seed])[0].permute(1, 2, 0).numpy()
        Image.fromarray(img).save(folder / f"face{seed}.png")
    out = tmp_path / "out"
    argv = ["project", str(folder), "--network", str(snapshot), "--outdir", str(out)]
    argv += ["--steps", "150", "--starts", "8", "--select-step", "20", "--batch-size", "2"]
    assert main([*argv, "--perceptual-weight", "0", "--quiet", "--device", "cpu"]) == 0
    assert "Projected 3 images" in capsys.readouterr().out
    records = json.loads((out / "projection.json").read_text())
    assert [r["name"] for r in records] == ["face4", "face5", "face6"]
    assert min(r["psnr_db"] for r in records) > 20.0
    for name in ("face4", "face5", "face6"):
        assert (out / f"{name}-latent.safetensors").is_file()
        assert (out / f"{name}-compare.png").is_file() and (out / f"{name}-loss.json").is_file()
    assert main(["project", str(folder), "--network", str(snapshot), "--label", "1"]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_sphere_normalisation():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(sphere(w), torch.tensor([[0.6, 0.8], [0.0, 1.0]]) * 2**0.5)


CELEBA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "celeba-6k"


@pytest.mark.skipif(not CELEBA.is_dir(), reason="needs ../shared/data/celeba-6k")
def test_celeba_targets_are_cut_like_dataset_create(tmp_path):
    """Real CelebA photos go through the official CelebA crop, as `progan dataset create`."""
    import zipfile

    from progan.data.create import create_dataset
    from progan.data.dataset import ImageDataset

    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(CELEBA / "img_align_celeba-6k.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[:3]
        for name in names:
            (folder / Path(name).name).write_bytes(zf.read(name))
    names_out, images = load_targets([tmp_path / "celeba"], 32, 3)
    create_dataset(tmp_path / "celeba", tmp_path / "d.zip", 32, progress=False)
    ds = ImageDataset(tmp_path / "d.zip")
    assert names_out == [Path(n).stem for n in names] and ds.source_kind == "celeba"
    for i in range(3):
        np.testing.assert_array_equal(images[i].numpy(), ds.read_image(i))
