"""Source readers: MNIST idx (real files), CIFAR-10 python format, folders, zips, CelebA, LSUN."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progan.data.readers import Cifar10Source, MnistSource, read_idx
from progan.data.sources import detect_source_type, open_source
from progan.errors import DatasetError

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]  # see conftest.cifar_files


# -- MNIST ------------------------------------------------------------------------------------


def test_mnist_real_files(shared_data):
    src = open_source(shared_data / "mnist-5k")
    assert isinstance(src, MnistSource) and len(src) == 5000
    items = list(src)
    labels = np.array([lab for _, lab, _ in items])
    images = np.stack([img for img, _, _ in items])
    assert images.shape == (5000, 32, 32) and images.dtype == np.uint8
    # 500 per class, sorted by label
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 500))
    # zero padding of 2 pixels around the 28x28 digits, as the official dataset_tool
    assert images[:, :2].max() == 0 and images[:, :, -2:].max() == 0
    raw = read_idx(shared_data / "mnist-5k" / "train-images-idx3-ubyte.gz")
    assert raw.shape == (5000, 28, 28)
    np.testing.assert_array_equal(images[:, 2:30, 2:30], raw)
    # a pixel statistic of real MNIST digits: mean ~33.5 over the 28x28 digits, full range
    assert abs(raw.mean() - 33.49) < 0.05 and raw.max() == 255 and raw.min() == 0
    assert items[0][2] == "train-images-idx3-ubyte[0]"


def test_mnist_uncompressed_file_path_and_bad_header(tmp_path, shared_data):
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        data = gzip.decompress((shared_data / "mnist-5k" / f"{stem}.gz").read_bytes())
        (tmp_path / stem).write_bytes(data[: 16 + 784 * 3] if "images" in stem else data)
    with pytest.raises(DatasetError, match="idx header promises"):
        MnistSource(tmp_path / "train-images-idx3-ubyte")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(20))
    with pytest.raises(DatasetError, match="not unsigned byte"):
        MnistSource(tmp_path)


# -- CIFAR-10 -----------------------------------------------------------------------------------


@pytest.fixture
def cifar_tar(tmp_path, cifar_files) -> Path:
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in cifar_files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_cifar_archive_and_folder_give_same_images(tmp_path, cifar_tar, cifar_files):
    files = cifar_files
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    assert detect_source_type(str(cifar_tar)) == "cifar10"
    assert detect_source_type(str(folder)) == "cifar10"
    assert detect_source_type(str(tmp_path)) == "cifar10"  # the folder holding it
    a, b = open_source(cifar_tar), open_source(folder)
    assert len(a) == len(b) == 20 and a.class_names == CIFAR_NAMES
    items = list(a)
    for (ia, la, _), (ib, lb, _) in zip(items, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        assert la == lb
    # layout: each row is the R plane, then G, then B, each row-major
    raw = pickle.loads(files["data_batch_2"], encoding="bytes")
    img, label, name = items[5]  # 2nd image of data_batch_2
    assert img.shape == (32, 32, 3) and name == "data_batch_2[1]"
    assert label == raw[b"labels"][1]
    row = raw[b"data"][1]
    assert img[0, 1, 0] == row[1] and img[1, 0, 1] == row[1024 + 32] and img[31, 31, 2] == row[-1]


def test_cifar_restricted_unpickler_rejects_code(tmp_path, cifar_files):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in cifar_files.items():
        (folder / name).write_bytes(data)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3: .*forbidden global"):
        Cifar10Source(folder)


def test_cifar_missing_batch(tmp_path, cifar_files):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(cifar_files["data_batch_1"])
    with pytest.raises(DatasetError, match="data_batch_2"):
        Cifar10Source(folder)


# -- folders and zips -----------------------------------------------------------------------------


def test_folder_recursive_sorted_and_extensions(rgb_folder):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(rgb_folder / "z.jpg")
    Image.new("RGB", (8, 8)).save(rgb_folder / "b.webp")
    Image.new("RGB", (8, 8)).save(rgb_folder / "c.BMP", format="BMP")
    (rgb_folder / "notes.txt").write_text("not an image")
    (rgb_folder / ".hidden.png").write_bytes(b"")
    src = open_source(rgb_folder)
    assert src.kind == "folder"
    names = [e.name for e in src.entries()]
    assert names == sorted(names)
    assert set(names) == {
        "img0.png", "img1.png", "img2.png", "img3.png", "sub/more0.png", "sub/more1.png",
        "z.jpg", "b.webp", "c.BMP",
    }  # fmt: skip


def test_zip_of_images(tmp_path, rgb_folder):
    path = tmp_path / "imgs.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(rgb_folder.rglob("*.png")):
            zf.write(p, p.relative_to(rgb_folder).as_posix())
        zf.writestr("__MACOSX/._img0.png", b"junk")
        zf.writestr("readme.txt", b"hi")
    src = open_source(path)
    assert src.kind == "zip" and len(src) == 6
    for img, label, name in src:
        assert label is None
        np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(rgb_folder / name)))


def test_celeba_official_crop(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    arr = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    Image.fromarray(arr).save(folder / "000001.png")
    Image.new("RGB", (100, 100)).save(folder / "000002.png")
    src = open_source(tmp_path / "celeba")
    assert src.kind == "celeba" and len(src) == 2
    entries = list(src.entries())
    crop = entries[0].read()
    assert crop.shape == (128, 128, 3)
    np.testing.assert_array_equal(crop, arr[121 - 64 : 121 + 64, 89 - 64 : 89 + 64])
    with pytest.raises(DatasetError, match=r"000002\.png: CelebA aligned images are 178x218"):
        entries[1].read()


def test_lsun_lmdb(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    db = tmp_path / "church_outdoor_train_lmdb"
    env = lmdb.open(str(db), map_size=1 << 24)
    arrays = []
    with env.begin(write=True) as txn:
        for i in range(3):
            arr = np.full((20, 30, 3), 40 * i, np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="WEBP", lossless=True)
            txn.put(f"key{i:03d}".encode(), buf.getvalue())
            arrays.append(arr)
    env.close()
    src = open_source(db)
    assert src.kind == "lsun" and len(src) == 3
    got = list(src)
    assert [n for _, _, n in got] == ["key000", "key001", "key002"]
    for (img, _, _), arr in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(np.asarray(img), arr)


def test_lsun_without_lmdb_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "lmdb":
            raise ImportError("no lmdb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"")
    with pytest.raises(DatasetError, match="pip install lmdb"):
        open_source(tmp_path / "db")


def test_detection_and_override(tmp_path, rgb_folder, shared_data):
    assert detect_source_type("synthetic:shapes") == "synthetic"
    assert detect_source_type(str(shared_data / "mnist-5k")) == "mnist"
    assert detect_source_type(str(shared_data / "mnist-5k" / "train-images-idx3-ubyte.gz")) == (
        "mnist"
    )
    assert detect_source_type(str(rgb_folder)) == "folder"
    with pytest.raises(DatasetError, match="source not found"):
        open_source(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown source type"):
        open_source(rgb_folder, "imagenet")
    # an explicit type wins over detection: this folder is read as CelebA
    assert open_source(rgb_folder, "celeba").kind == "celeba"
