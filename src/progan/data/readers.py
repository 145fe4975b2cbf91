"""Readers of the published datasets' own formats: CIFAR-10 (python version), MNIST idx, LSUN
(lmdb) and CelebA (aligned and cropped, cut like the official ProGAN dataset_tool).

Each is a :class:`~progan.data.source_base.Source`; :func:`progan.data.sources.open_source`
picks one from a path.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from progan.data.images import BadImageError, decode_image
from progan.data.source_base import Entry, ImageFolderSource, Source
from progan.errors import DatasetError

# --------------------------------------------------------------------------------------------
# CIFAR-10 (python version)


class _CifarUnpickler(pickle.Unpickler):
    """Restricted unpickler for the CIFAR-10 python batches.

    The CIFAR "python version" *is* a set of pickled dicts, so unpickling is unavoidable; this
    unpickler only resolves the globals needed to rebuild numpy arrays (and the ``_codecs``
    helper Python 3 uses for bytes in protocol 2), so a malicious file cannot run code.
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2: no deprecation
        return super().find_class(module, name)


def _unpickle_cifar(data: bytes, name: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DatasetError(f"{name}: not a readable CIFAR-10 python batch ({e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{name}: CIFAR-10 batch is not a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


class Cifar10Source(Source):
    """CIFAR-10, python version: the ``cifar-10-batches-py`` folder (or a folder holding it)
    or the ``cifar-10-python.tar.gz`` archive.

    Reads the training batches ``data_batch_1`` .. ``data_batch_5`` (50000 images) in order, or
    ``test_batch`` with ``split="test"``. Each batch dict has ``data`` (uint8 ``(n, 3072)``,
    rows holding the R, G, B planes of a 32x32 image, each row-major) and ``labels`` (n ints);
    ``batches.meta`` holds ``label_names``. Images come out as uint8 ``(32, 32, 3)`` arrays.
    """

    kind = "cifar10"

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        super().__init__(path)
        if split not in ("train", "test"):
            raise DatasetError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
        wanted = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        files = self._read_files([*wanted, "batches.meta"], optional={"batches.meta"})
        images, labels, names = [], [], []
        for fname in wanted:
            batch = _unpickle_cifar(files[fname], fname)
            data = np.asarray(batch.get("data"))
            lab = np.asarray(batch.get("labels"), dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetError(f"{fname}: CIFAR-10 'data' must be uint8 (n, 3072)")
            if lab.shape != (data.shape[0],):
                raise DatasetError(f"{fname}: CIFAR-10 'labels' length does not match 'data'")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(lab)
            names += [f"{fname}[{i}]" for i in range(len(lab))]
        self.images = np.concatenate(images)
        self.labels = np.concatenate(labels)
        self.batch_names = names
        self.class_names = None
        if "batches.meta" in files:
            meta = _unpickle_cifar(files["batches.meta"], "batches.meta")
            names = meta.get("label_names")
            if names is not None:
                self.class_names = [
                    n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names
                ]

    def _read_files(self, wanted: list[str], optional: set[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if self.path.is_file():
            try:
                with tarfile.open(self.path, "r:*") as tf:
                    for member in tf.getmembers():
                        base = Path(member.name).name
                        if member.isfile() and base in wanted:
                            f = tf.extractfile(member)
                            if f is not None:
                                out[base] = f.read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DatasetError(f"{self.path}: not a readable tar archive ({e})") from None
        else:
            folder = self.path
            if (folder / "cifar-10-batches-py").is_dir():
                folder = folder / "cifar-10-batches-py"
            for name in wanted:
                if (folder / name).is_file():
                    out[name] = (folder / name).read_bytes()
        missing = [n for n in wanted if n not in out and n not in optional]
        if missing:
            raise DatasetError(f"{self.path}: CIFAR-10 files missing: {', '.join(missing)}")
        return out

    def __len__(self) -> int:
        return len(self.images)

    def entries(self) -> Iterator[Entry]:
        for i in range(len(self.images)):
            yield Entry(self.batch_names[i], int(self.labels[i]), lambda i=i: self.images[i])


# --------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (idx files)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed) of unsigned bytes.

    Format: 2 zero bytes, a type byte (0x08 = uint8), the number of dimensions ``d``, then ``d``
    big-endian int32 sizes and the data in row-major order.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{path}: cannot read idx file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an idx file (bad magic number)")
    if raw[2] != 0x08:
        raise DatasetError(f"{path}: idx data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DatasetError(
            f"{path}: idx header promises {size} bytes of data for shape {shape}, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


class MnistSource(Source):
    """MNIST or Fashion-MNIST idx files: a folder holding ``train-images-idx3-ubyte[.gz]`` and
    ``train-labels-idx1-ubyte[.gz]`` (``split="test"``: the ``t10k-`` files), or the images file
    itself (labels read from the file beside it when present).

    The 28x28 digits are zero-padded to 32x32 (``pad=True``, as the official ProGAN
    dataset_tool does) and come out as uint8 ``(32, 32)`` arrays with their labels.
    """

    kind = "mnist"

    def __init__(self, path: str | os.PathLike, split: str = "train", pad: bool = True):
        super().__init__(path)
        prefix = {"train": "train", "test": "t10k"}.get(split)
        if prefix is None:
            raise DatasetError(f"MNIST split must be 'train' or 'test', got {split!r}")
        if self.path.is_file():
            images_path = self.path
            base = self.path.name.replace("images-idx3", "labels-idx1")
            labels_path = self.path.with_name(base) if base != self.path.name else None
            if labels_path is not None and not labels_path.is_file():
                labels_path = None
        else:
            images_path = _find_idx(self.path, f"{prefix}-images-idx3-ubyte")
            labels_path = _find_idx(self.path, f"{prefix}-labels-idx1-ubyte")
            if images_path is None:
                raise DatasetError(
                    f"{self.path}: no {prefix}-images-idx3-ubyte[.gz] found in this folder"
                )
        images = read_idx(images_path)
        if images.ndim != 3:
            raise DatasetError(f"{images_path}: expected a 3-d idx array, got {images.shape}")
        self.labels = None
        if labels_path is not None:
            labels = read_idx(labels_path)
            if labels.shape != (images.shape[0],):
                raise DatasetError(
                    f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images"
                )
            self.labels = labels.astype(np.int64)
        if pad:
            images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        self.images = images
        self.images_path = images_path

    def __len__(self) -> int:
        return len(self.images)

    def entries(self) -> Iterator[Entry]:
        stem = self.images_path.name.split(".")[0]
        for i in range(len(self.images)):
            label = None if self.labels is None else int(self.labels[i])
            yield Entry(f"{stem}[{i}]", label, lambda i=i: self.images[i])


# --------------------------------------------------------------------------------------------
# LSUN (LMDB)


def _import_lmdb():
    try:
        import lmdb
    except ImportError:
        raise DatasetError(
            "reading LSUN needs the optional 'lmdb' package: pip install lmdb "
            "(or pip install 'progan[lmdb]')"
        ) from None
    return lmdb


class LsunSource(Source):
    """One LSUN category in its LMDB folder (holding ``data.mdb``); values are encoded
    images (webp/jpeg), keys are used as names. Needs the optional ``lmdb`` package."""

    kind = "lsun"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        if self.path.is_file():
            self.path = self.path.parent
        self._lmdb = _import_lmdb()
        try:
            env = self._open()
            with env.begin(write=False) as txn:
                self._count = int(txn.stat()["entries"])
            env.close()
        except self._lmdb.Error as e:
            raise DatasetError(f"{self.path}: not a readable LMDB database ({e})") from None

    def _open(self):
        return self._lmdb.open(
            str(self.path), readonly=True, lock=False, readahead=False, max_readers=1
        )

    def __len__(self) -> int:
        return self._count

    def entries(self) -> Iterator[Entry]:
        env = self._open()
        try:
            with env.begin(write=False) as txn:
                for key, value in txn.cursor():
                    name = key.decode("utf-8", "replace")
                    data = bytes(value)
                    yield Entry(name, None, lambda d=data, n=name: decode_image(d, n))
        finally:
            env.close()


# --------------------------------------------------------------------------------------------
# CelebA (aligned and cropped)


class CelebASource(Source):
    """CelebA ``img_align_celeba`` (or ``img_align_celeba_png``), or a folder holding it.

    Each 178x218 aligned image is cropped to the 128x128 box centred at (x=89, y=121), i.e.
    rows 57..184 and columns 25..152, exactly like the official ProGAN dataset_tool. Images
    of another size are bad files. Unlabeled; images come out as uint8 ``(128, 128, 3)``.
    """

    kind = "celeba"
    SIZE = (178, 218)  # (width, height) of the aligned images
    CX, CY, HALF = 89, 121, 64

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        for sub in ("img_align_celeba", "img_align_celeba_png"):
            if (self.path / sub).is_dir():
                self.path = self.path / sub
                break
        self.folder = ImageFolderSource(self.path)

    def __len__(self) -> int:
        return len(self.folder)

    def _crop(self, entry: Entry) -> np.ndarray:
        img = entry.read()
        if getattr(img, "size", None) != self.SIZE:
            w, h = img.size
            raise BadImageError(entry.name, f"CelebA aligned images are 178x218, got {w}x{h}")
        arr = np.asarray(img.convert("RGB"))
        y0, x0 = self.CY - self.HALF, self.CX - self.HALF
        return arr[y0 : y0 + 2 * self.HALF, x0 : x0 + 2 * self.HALF].copy()

    def entries(self) -> Iterator[Entry]:
        for entry in self.folder.entries():
            yield Entry(entry.name, None, lambda e=entry: self._crop(e))
