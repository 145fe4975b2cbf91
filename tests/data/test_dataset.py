"""The dataset format: round trips, validation on open, shape checks on read, atomic writes."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progan.data.dataset import DatasetWriter, ImageDataset, image_name
from progan.errors import DatasetError


def _rewrite_zip(src: Path, dst: Path, edit) -> None:
    """Copy a zip, passing every (name, bytes) through ``edit`` (return None to drop it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            out = edit(name, zin.read(name))
            if out is not None:
                zout.writestr(out[0], out[1])


def _edit_meta(fn):
    def edit(name, data):
        if name == "dataset.json":
            meta = json.loads(data)
            fn(meta)
            return name, json.dumps(meta).encode()
        return name, data

    return edit


@pytest.mark.parametrize("dest_name", ["ds.zip", "ds_folder"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_pixels_and_labels(tmp_path, dest_name, channels, make_dataset):
    images, labels = make_dataset(tmp_path / dest_name, count=12, resolution=8, channels=channels)
    ds = ImageDataset(tmp_path / dest_name)
    assert (len(ds), ds.resolution, ds.channels, ds.num_classes) == (12, 8, channels, 4)
    assert ds.name == ("ds" if dest_name == "ds.zip" else "ds_folder")
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, labels)
    for i in range(12):
        img, lab = ds[i]
        assert img.dtype == np.uint8 and img.shape == (channels, 8, 8)
        np.testing.assert_array_equal(img, images[i])
        assert lab == labels[i]
    assert ds[-1][1] == labels[-1]
    with pytest.raises(IndexError):
        ds[12]


def test_unlabeled_dataset_gives_minus_one(tmp_path, make_dataset):
    make_dataset(tmp_path / "u.zip", count=3, labels=False)
    ds = ImageDataset(tmp_path / "u.zip")
    assert ds.labels is None and ds.num_classes == 0
    assert ds[0][1] == -1


def test_layout_and_metadata(tmp_path, make_dataset):
    make_dataset(tmp_path / "d.zip", count=1001, resolution=4)
    with zipfile.ZipFile(tmp_path / "d.zip") as zf:
        names = set(zf.namelist())
        meta = json.loads(zf.read("dataset.json"))
    assert "00000/img00000000.png" in names and "00001/img00001000.png" in names
    assert image_name(1000) == "00001/img00001000.png"
    assert meta["format"] == "progan-dataset" and meta["version"] == 1
    assert meta["count"] == 1001 and meta["labels"][5][0] == "00000/img00000005.png"
    assert meta["source"] == "test" and meta["created"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit_meta(lambda m: m.update(count=11)), "count=11 but the dataset holds 10"),
        (_edit_meta(lambda m: m.update(labels=m["labels"][:9])), "labels has 9 entries"),
        (_edit_meta(lambda m: m.update(resolution=12)), "not a power of two"),
        (_edit_meta(lambda m: m.update(channels=4)), "channels must be 1 or 3"),
        (_edit_meta(lambda m: m.update(format="other")), "does not describe"),
        (_edit_meta(lambda m: m["labels"][2].__setitem__(1, 99)), "outside"),
        (lambda n, d: None if n == "dataset.json" else (n, d), "no dataset.json"),
        (
            lambda n, d: (n.replace("img00000003", "imgXXX"), d),
            "00000/img00000003.png listed in dataset.json is missing",
        ),
        (lambda n, d: None if n.endswith("0004.png") else (n, d), "holds 9 PNG images"),
    ],
)
def test_inconsistent_dataset_detected(tmp_path, edit, message, make_dataset):
    make_dataset(tmp_path / "good.zip")
    _rewrite_zip(tmp_path / "good.zip", tmp_path / "bad.zip", edit)
    with pytest.raises(DatasetError, match=message) as info:
        ImageDataset(tmp_path / "bad.zip")
    assert "bad.zip" in str(info.value)


def test_not_a_zip_and_missing(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"hello")
    with pytest.raises(DatasetError, match="not a readable zip"):
        ImageDataset(tmp_path / "x.zip")
    with pytest.raises(DatasetError, match="not found"):
        ImageDataset(tmp_path / "nope.zip")


def test_wrong_image_shape_detected_on_read(tmp_path, make_dataset):
    make_dataset(tmp_path / "ds", count=3, resolution=8)
    Image.new("RGB", (16, 16)).save(tmp_path / "ds" / image_name(1))
    Image.new("L", (8, 8)).save(tmp_path / "ds" / image_name(2))
    ds = ImageDataset(tmp_path / "ds")
    ds[0]
    with pytest.raises(DatasetError, match=r"img00000001.png is 16x16 mode RGB, expected 8x8"):
        ds[1]
    with pytest.raises(DatasetError, match=r"img00000002.png is 8x8 mode L, expected 8x8 mode RGB"):
        ds[2]


def test_pickled_dataset_reopens_zip(tmp_path, make_dataset):
    images, _ = make_dataset(tmp_path / "d.zip", count=4)
    ds = ImageDataset(tmp_path / "d.zip")
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0], images[3])
    ds.close()
    np.testing.assert_array_equal(ds[2][0], images[2])  # reopened after close


def test_writer_leaves_nothing_on_failure(tmp_path):
    for dest in (tmp_path / "a.zip", tmp_path / "folder"):
        with pytest.raises(RuntimeError), DatasetWriter(dest, 8, 3) as w:
            w.add(np.zeros((3, 8, 8), np.uint8))
            raise RuntimeError("boom")
        assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_zip_atomically_and_refuses_folder(tmp_path, make_dataset):
    make_dataset(tmp_path / "d.zip", count=3)
    with pytest.raises(DatasetError), DatasetWriter(tmp_path / "d.zip", 8, 3) as w:
        w.add(np.zeros((3, 4, 4), np.uint8))  # wrong shape
    assert len(ImageDataset(tmp_path / "d.zip")) == 3  # old dataset intact
    make_dataset(tmp_path / "d.zip", count=5)
    assert len(ImageDataset(tmp_path / "d.zip")) == 5
    make_dataset(tmp_path / "f", count=2)
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path / "f", 8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip", "f"]
