"""create_dataset / dataset_info on real photos, MNIST, broken files and edge cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progan.data.commands import add_commands
from progan.data.create import create_dataset, dataset_info
from progan.data.dataset import ImageDataset
from progan.errors import DatasetError


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_real_photos_center_crop(tmp_path, shared_data):
    dest = tmp_path / "photos.zip"
    summary = create_dataset(shared_data / "photos", dest, 64, progress=False)
    assert summary.count == 5 and summary.resolution == 64 and summary.channels == 3
    ds = ImageDataset(dest)
    assert len(ds) == 5 and ds.labels is None
    # chelsea.png (451x300) is 2nd in sorted order: its central 300x300 square, Lanczos to 64
    src = np.asarray(Image.open(shared_data / "photos" / "chelsea.png").convert("RGB"))
    left = (451 - 300) // 2
    expect = Image.fromarray(src[:, left : left + 300]).resize((64, 64), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(ds[1][0], np.asarray(expect).transpose(2, 0, 1))


def test_default_resolution_from_first_image_and_too_small(tmp_path, shared_data):
    dest = tmp_path / "p.zip"
    # astronaut.png (512x512) comes first: resolution 512, so chelsea (451x300) is too small
    with pytest.raises(DatasetError, match=r"chelsea\.png: image is 451x300.*512") as info:
        create_dataset(shared_data / "photos", dest, progress=False)
    assert "--skip-bad" in str(info.value)
    assert not dest.exists() and _leftovers(tmp_path) == []
    summary = create_dataset(shared_data / "photos", dest, skip_bad=True, progress=False)
    assert summary.count == 1 and summary.resolution == 512 and len(summary.skipped) == 4
    # pad uses the long side: every photo is >= 512 on its long side except chelsea (451)
    summary = create_dataset(
        shared_data / "photos", tmp_path / "pad.zip", 512, transform="pad", skip_bad=True,
        progress=False,
    )  # fmt: skip
    assert summary.count == 4 and [s[0] for s in summary.skipped] == ["chelsea.png"]


@pytest.fixture
def broken_folder(rgb_folder: Path) -> Path:
    (rgb_folder / "a_empty.png").write_bytes(b"")
    (rgb_folder / "b_text.png").write_text("hello, I am not a PNG")
    good = (rgb_folder / "img0.png").read_bytes()
    (rgb_folder / "sub" / "c_truncated.png").write_bytes(good[: len(good) // 2])
    return rgb_folder


@pytest.mark.parametrize(
    ("name", "reason"),
    [("a_empty.png", "empty file"), ("b_text.png", "not a readable image")],
)
def test_bad_files_named_in_error(tmp_path, broken_folder, name, reason):
    for other in ("a_empty.png", "b_text.png"):
        if other != name:
            (broken_folder / other).unlink()
    with pytest.raises(DatasetError, match=rf"{name}: {reason}"):
        create_dataset(broken_folder, tmp_path / "out.zip", 32, progress=False)
    assert not (tmp_path / "out.zip").exists()


def test_truncated_file_named_in_error(tmp_path, broken_folder):
    (broken_folder / "a_empty.png").unlink()
    (broken_folder / "b_text.png").unlink()
    with pytest.raises(DatasetError, match=r"sub/c_truncated\.png: truncated or corrupt"):
        create_dataset(broken_folder, tmp_path / "out", 32, progress=False)
    assert _leftovers(tmp_path) == ["rgb"]  # no half-written folder or temp file


def test_skip_bad_counts_and_lists(tmp_path, broken_folder):
    summary = create_dataset(broken_folder, tmp_path / "out.zip", 32, skip_bad=True, progress=False)
    assert summary.count == 6
    assert sorted(n for n, _ in summary.skipped) == [
        "a_empty.png", "b_text.png", "sub/c_truncated.png",
    ]  # fmt: skip
    assert "Skipped 3 bad image(s)" in str(summary)
    assert len(ImageDataset(tmp_path / "out.zip")) == 6


def test_empty_and_all_bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        create_dataset(tmp_path / "empty", tmp_path / "out.zip", progress=False)
    (tmp_path / "empty" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"all 1 image\(s\).*were bad"):
        create_dataset(tmp_path / "empty", tmp_path / "out.zip", skip_bad=True, progress=False)
    assert _leftovers(tmp_path) == ["empty"]


def test_mixed_channels_error_or_convert(tmp_path, rgb_folder):
    gray = np.arange(40 * 48, dtype=np.uint32).reshape(40, 48) % 256
    Image.fromarray(gray.astype(np.uint8), "L").save(rgb_folder / "sub" / "gray.png")
    with pytest.raises(DatasetError, match=r"sub/gray\.png has 1 channel\(s\).*--channels"):
        create_dataset(rgb_folder, tmp_path / "o.zip", 32, progress=False)
    summary = create_dataset(rgb_folder, tmp_path / "o.zip", 32, channels=3, progress=False)
    assert summary.count == 7 and summary.channels == 3
    summary = create_dataset(rgb_folder, tmp_path / "g.zip", 32, channels=1, progress=False)
    ds = ImageDataset(tmp_path / "g.zip")
    assert ds.channels == 1 and ds[0][0].shape == (1, 32, 32)


def test_grayscale_source_stays_grayscale_and_max_images(tmp_path, shared_data):
    summary = create_dataset(shared_data / "mnist-5k", tmp_path / "m.zip", max_images=30,
                             progress=False)  # fmt: skip
    assert (summary.count, summary.resolution, summary.channels) == (30, 32, 1)
    info = dataset_info(tmp_path / "m.zip")
    assert info["count"] == 30 and info["num_classes"] == 1  # the first 30 are all zeros
    assert info["class_counts"] == {"0": 30}


def test_mnist_dataset_and_info(tmp_path, shared_data):
    dest = tmp_path / "mnist"
    summary = create_dataset(shared_data / "mnist-5k", dest, progress=False)
    assert summary.count == 5000 and summary.num_classes == 10
    ds = ImageDataset(dest)
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(10), 500))
    mean = np.mean([ds[i][0].mean() for i in range(0, 5000, 50)])
    assert 20 < mean < 32  # ~25.6: MNIST's 33.5 over 28x28, diluted by the zero padding
    info = dataset_info(dest)
    assert info["resolution"] == 32 and info["channels"] == 1 and info["labeled"]
    assert info["class_counts"] == {str(i): 500 for i in range(10)}
    assert info["size_bytes"] > 100_000 and info["source"].startswith("mnist:")
    assert ds.source_kind == "mnist"


def test_source_kind_recorded_and_absent_in_older_datasets(tmp_path, rgb_folder):
    from progan.data.dataset import DatasetWriter
    from progan.presets import default_mirror

    create_dataset(rgb_folder, tmp_path / "f.zip", 16, progress=False)
    assert ImageDataset(tmp_path / "f.zip").source_kind == "folder"
    create_dataset("synthetic:shapes", tmp_path / "s.zip", 16, max_images=4, progress=False)
    assert ImageDataset(tmp_path / "s.zip").source_kind == "synthetic"
    with DatasetWriter(tmp_path / "old", 8, 3, source="x") as w:  # as before the field
        w.add(np.zeros((3, 8, 8), np.uint8))
    old = ImageDataset(tmp_path / "old")
    assert old.source_kind is None and "source_kind" not in old.meta
    assert not default_mirror(old.source_kind)


def test_cifar_class_names_recorded(tmp_path, cifar_files):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in cifar_files.items():
        (folder / name).write_bytes(data)
    create_dataset(folder, tmp_path / "c.zip", progress=False)
    ds = ImageDataset(tmp_path / "c.zip")
    assert (len(ds), ds.resolution, ds.channels, ds.num_classes) == (20, 32, 3, 5)
    assert ds.class_names == ["airplane", "automobile", "bird", "cat", "deer"]
    assert ds.source_kind == "cifar10" and ds.meta["source_kind"] == "cifar10"
    assert set(dataset_info(tmp_path / "c.zip")["class_counts"]) == set(ds.class_names)


def test_bad_options(tmp_path, rgb_folder):
    with pytest.raises(DatasetError, match="power of two"):
        create_dataset(rgb_folder, tmp_path / "o.zip", 24, progress=False)
    with pytest.raises(DatasetError, match="unknown transform"):
        create_dataset(rgb_folder, tmp_path / "o.zip", transform="zoom", progress=False)
    assert _leftovers(tmp_path) == ["rgb"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="progan")
    sub = parser.add_subparsers(dest="command", required=True)
    dataset = sub.add_parser("dataset")
    add_commands(dataset.add_subparsers(dest="dataset_command", required=True))
    return parser


def test_commands_create_and_info(tmp_path, rgb_folder, capsys):
    parser = _parser()
    dest = tmp_path / "cli.zip"
    args = parser.parse_args(
        ["dataset", "create", str(rgb_folder), str(dest), "--resolution", "16",
         "--transform", "resize", "--max-images", "4", "--no-progress"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "Wrote 4 images of 16x16x3" in capsys.readouterr().out
    args = parser.parse_args(["dataset", "info", str(dest), "--json"])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 4 and info["resolution"] == 16 and info["transform"] == "resize"
    args = parser.parse_args(["dataset", "info", str(dest)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "images:      4" in out and "labels:      none" in out
    assert "levels:      not prepared" in out
    args = parser.parse_args(["dataset", "prepare", str(dest), "--workers", "0", "--no-progress"])
    assert args.func(args) == 0
    assert "4x4, 8x8, 0.0 MiB" in capsys.readouterr().out
    args = parser.parse_args(["dataset", "info", str(dest), "--json"])
    assert args.func(args) == 0
    levels = json.loads(capsys.readouterr().out)["levels"]
    assert levels["resolutions"] == [4, 8] and levels["bytes"] == 4 * 3 * (16 + 64)
    assert levels["path"] == str(dest) + ".levels"
    args = parser.parse_args(["dataset", "info", str(tmp_path / "missing.zip")])
    with pytest.raises(DatasetError, match="not found"):
        args.func(args)


def _png(path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_labels_from_class_folders_of_a_folder_and_a_zip(tmp_path):
    import zipfile

    from progan.data.dataset import ImageDataset

    root = tmp_path / "src" / "train"
    for cls, value in (("cat", 10), ("airplane", 20), ("cat", 30), ("dog", 40)):
        _png(root / cls / f"{value}.png", value)
    create_dataset(root, tmp_path / "a.zip", 8, progress=False, labels_from_folders=True)
    ds = ImageDataset(tmp_path / "a.zip")
    assert ds.class_names == ["airplane", "cat", "dog"]
    got = sorted((int(ds[i][0][0, 0, 0]), int(ds[i][1])) for i in range(len(ds)))
    assert got == [(10, 1), (20, 0), (30, 1), (40, 2)]
    # the same files inside a zip (CIFAR-10's PNG layout train/<class>/<file>)
    archive = tmp_path / "cifar-like.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, f.relative_to(root.parent).as_posix())
    create_dataset(archive, tmp_path / "b.zip", 8, progress=False, labels_from_folders=True)
    ds_b = ImageDataset(tmp_path / "b.zip")
    assert ds_b.class_names == ds.class_names
    assert sorted((int(ds_b[i][0][0, 0, 0]), int(ds_b[i][1])) for i in range(len(ds_b))) == got


def test_labels_from_folders_refuses_images_outside_a_class_folder(tmp_path):
    _png(tmp_path / "src" / "cat" / "1.png", 1)
    _png(tmp_path / "src" / "loose.png", 2)
    with pytest.raises(DatasetError, match=r"loose\.png is not inside a class folder"):
        create_dataset(tmp_path / "src", tmp_path / "a.zip", 8, labels_from_folders=True)
    assert not (tmp_path / "a.zip").exists()
    with pytest.raises(DatasetError, match="folder or zip of images"):
        create_dataset("synthetic:shapes", tmp_path / "b.zip", 8, labels_from_folders=True)


def test_parallel_create_writes_the_same_images_as_one_process(tmp_path):
    """Resize + PNG encode in worker processes (all cores by default): every image's bytes,
    the order, the labels and the skipped list equal those of one process, including a bad
    (too small) image in flight when the requested count is reached (img029, the 40th)."""
    import zipfile

    from PIL import Image

    rng = np.random.default_rng(3)
    folder = tmp_path / "src"
    for i in range(45):
        (folder / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        w, h = (6, 6) if i in (7, 29) else (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"c{i % 3}" / f"img{i:03d}.png")
    kw = {"skip_bad": True, "max_images": 39, "labels_from_folders": True, "progress": False}
    one = create_dataset(folder, tmp_path / "one.zip", 32, workers=0, **kw)
    two = create_dataset(folder, tmp_path / "two.zip", 32, workers=2, **kw)
    assert one.count == two.count == 39 and one.skipped == two.skipped and len(one.skipped) == 2
    with zipfile.ZipFile(one.dest) as a, zipfile.ZipFile(two.dest) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():
            if name != "dataset.json":
                assert a.read(name) == b.read(name), name
        meta_a, meta_b = (json.loads(z.read("dataset.json")) for z in (a, b))
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b
