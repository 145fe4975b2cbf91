"""Tests for progan.tools.commands (argument parsing and the commands end to end)."""

from __future__ import annotations

import argparse
import sys
import types

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageDraw

from progan.tools.commands import add_commands, parse_grid_size
from progan.tools.grid import conditional_grid_labels, dataset_grid


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="progan")
    sub = parser.add_subparsers(dest="command", required=True)
    dataset = sub.add_parser("dataset").add_subparsers(dest="dataset_command", required=True)
    add_commands(sub, dataset)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture
def labelled_dataset(tmp_path):
    from progan.data.dataset import DatasetWriter

    path = tmp_path / "ds.zip"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, resolution=8, channels=3) as w:
        for i in range(30):
            w.add(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), label=i % 3)
    return path


def test_parse_grid_size():
    assert parse_grid_size("4x3") == (4, 3)
    assert parse_grid_size("2") == (2, 2)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_grid_size("0x3")


def test_conditional_grid_labels():
    np.testing.assert_array_equal(conditional_grid_labels(3, 2), [0, 0, 1, 1, 2, 2])


def test_grid_command_rows_per_label(tmp_path, labelled_dataset):
    from progan.data.dataset import ImageDataset

    out = tmp_path / "reals.png"
    assert (
        _run(
            ["grid", str(labelled_dataset), "--out", str(out), "--rows-per-label", "--per-row", "4"]
        )
        == 0
    )
    with Image.open(out) as im:
        assert im.size == (32, 24)
    ds = ImageDataset(labelled_dataset)
    images, cols = dataset_grid(ds, rows_per_label=True, per_row=4, seed=1)
    assert cols == 4 and images.shape == (12, 3, 8, 8)
    # row c holds images of class c: each must equal some dataset image of that class
    for cell, image in enumerate(images):
        matches = [i for i in range(len(ds)) if np.array_equal(ds[i][0], image)]
        assert matches and ds[matches[0]][1] == cell // 4
    assert _run(["grid", str(labelled_dataset), "--out", str(out), "--num", "9"]) == 0
    with Image.open(out) as im:
        assert im.size == (24, 24)


def _fake_generate_module(tiny_generator):
    module = types.ModuleType("progan.generate")
    module.load_generator = lambda path, device="cpu": tiny_generator
    return module


def test_video_command(tmp_path, monkeypatch, tiny_generator):
    monkeypatch.setitem(sys.modules, "progan.generate", _fake_generate_module(tiny_generator))
    out = tmp_path / "v.mp4"
    argv = [
        "video",
        "ckpt.safetensors",
        "--out",
        str(out),
        "--seconds",
        "0.5",
        "--fps",
        "8",
        "--grid",
        "2x1",
        "--resolution",
        "16",
        "--device",
        "cpu",
    ]
    assert _run(argv) == 0
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert frames == 4


def test_neighbors_command_pixels(tmp_path, monkeypatch, tiny_generator, labelled_dataset):
    module = _fake_generate_module(tiny_generator)
    from progan.data.dataset import ImageDataset

    first = ImageDataset(labelled_dataset)[7][0]
    # a "generator" that reproduces dataset image 7 exactly
    module.generate_images = lambda G, seeds, labels=None, device=None, batch_size=32: __import__(
        "torch"
    ).from_numpy(np.stack([first] * len(seeds)))
    monkeypatch.setitem(sys.modules, "progan.generate", module)
    out = tmp_path / "nn.png"
    argv = [
        "neighbors",
        "ckpt",
        str(labelled_dataset),
        "--out",
        str(out),
        "--num",
        "2",
        "--k",
        "3",
        "--features",
        "pixels",
        "--pad",
        "0",
        "--device",
        "cpu",
    ]
    assert _run(argv) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (16, 32, 3)
    np.testing.assert_array_equal(grid[:8, 8:16], first.transpose(1, 2, 0))  # 1st neighbour


def test_align_faces_command(tmp_path):
    from progan.data.dataset import ImageDataset

    images = tmp_path / "img_celeba"
    images.mkdir()
    rows = []
    for i in range(3):
        im = Image.new("RGB", (178, 218), (120, 110, 100))
        d = ImageDraw.Draw(im)
        lm = [(69 + i, 109), (106 + i, 111), (88, 135), (73, 152), (106, 153)]
        for x, y in lm:
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(20, 20, 20))
        im.save(images / f"{i + 1:06d}.jpg", quality=95)
        rows.append(f"{i + 1:06d}.jpg " + " ".join(f"{x} {y}" for x, y in lm))
    rows.append("000009.jpg 69 109 106 113 77 142 73 152 108 154")  # missing image
    header = (
        "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
        "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    )
    landmarks = tmp_path / "list_landmarks_celeba.txt"
    landmarks.write_text(f"{len(rows)}\n{header}\n" + "\n".join(rows) + "\n")
    dest = tmp_path / "faces.zip"
    argv = [
        "dataset",
        "align-faces",
        str(images),
        str(landmarks),
        str(dest),
        "--resolution",
        "32",
        "--quiet",
    ]
    assert _run(argv) == 0
    ds = ImageDataset(dest)
    assert len(ds) == 3 and ds.resolution == 32 and ds.channels == 3
    assert ds.source_kind == "celeba-hq"  # mirrored by default, as official CelebA-HQ runs
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and label == -1


def test_align_faces_rejects_bad_resolution(tmp_path):
    from progan.errors import ConfigError

    with pytest.raises(ConfigError):
        _run(
            [
                "dataset",
                "align-faces",
                "imgs",
                "lm.txt",
                str(tmp_path / "x.zip"),
                "--resolution",
                "30",
            ]
        )
