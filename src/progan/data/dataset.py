"""The progan dataset format: a zip file (or a folder) of square PNGs plus ``dataset.json``.

Layout (see docs/INTERFACES.md)::

    dataset.json
    00000/img00000000.png ... 00000/img00000999.png
    00001/img00001000.png ...

``dataset.json`` holds ``{"format": "progan-dataset", "version": 1, "resolution": R,
"channels": 1|3, "count": N, "labels": [[name, label], ...] | null, "num_classes": K,
"class_names": [...] | null, "source": "...", "source_kind": "...", "created": "..."}``;
``source_kind`` (absent in datasets made before it existed) is the source type the images came
from: "celeba", "celeba-hq" (align-faces), "lsun", "cifar10", "mnist", "folder", "zip" or
"synthetic".

:class:`ImageDataset` reads it (validating everything on open) and :class:`DatasetWriter`
writes it crash-safely.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from progan.data.images import configure_pil, encode_png
from progan.errors import DatasetError

FORMAT = "progan-dataset"
VERSION = 1
META_NAME = "dataset.json"
IMAGES_PER_FOLDER = 1000


def image_name(index: int) -> str:
    """The archive name of image ``index``: ``"00000/img00000000.png"`` (1000 per folder)."""
    return f"{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png"


def is_power_of_two(n: int) -> bool:
    return isinstance(n, int) and n >= 1 and (n & (n - 1)) == 0


# --------------------------------------------------------------------------------------------
# Reading


class ImageDataset:
    """Read-only access to a progan dataset (a ``.zip`` file or a folder).

    ``ds[i] -> (image, label)``: ``image`` is a uint8 ndarray of shape
    ``(channels, resolution, resolution)`` with values in [0, 255]; ``label`` an int in
    ``[0, num_classes)``, or -1 when the dataset is unlabeled.

    Attributes: ``path`` (Path), ``name`` (file/folder name without ``.zip``), ``resolution``,
    ``channels``, ``num_classes`` (0 = unlabeled), ``labels`` (int64 ndarray ``(N,)`` or
    None), ``class_names`` (list or None), ``meta`` (the parsed dataset.json).

    Zip handles are opened lazily, one per process and thread: a dataset pickled to (or forked
    into) a DataLoader worker, or read from several threads, opens its own handle on first use.
    """

    def __init__(self, path: str | os.PathLike):
        configure_pil()
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"dataset not found: {self.path}")
        self.is_zip = self.path.is_file()
        self.name = self.path.name[:-4] if self.path.name.endswith(".zip") else self.path.name
        self._local = threading.local()
        members = self._list_members()
        self.meta = self._read_meta(members)
        self.resolution: int = self.meta["resolution"]
        self.channels: int = self.meta["channels"]
        self.count: int = self.meta["count"]
        self.num_classes: int = self.meta["num_classes"]
        self.class_names: list[str] | None = self.meta.get("class_names")
        # What the images were made from ("celeba", "lsun", "cifar10", ...; None for datasets
        # written before the field existed): the official configs' mirror default follows it.
        self.source_kind: str | None = self.meta.get("source_kind")
        self.labels: np.ndarray | None = self._validate(members)

    # -- opening and validation ---------------------------------------------------------------

    def _list_members(self) -> set[str]:
        if self.is_zip:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    return {n for n in zf.namelist() if not n.endswith("/")}
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"{self.path}: not a readable zip file ({e})") from None
        names = set()
        for root, _dirs, files in os.walk(self.path):
            rel_root = Path(root).relative_to(self.path)
            for f in files:
                names.add((rel_root / f).as_posix())
        return names

    def _read_meta(self, members: set[str]) -> dict[str, Any]:
        where = f"{self.path}"
        if META_NAME not in members:
            raise DatasetError(
                f"{where}: no {META_NAME} inside; this is not a progan dataset "
                "(create one with `progan dataset create SOURCE DEST`)"
            )
        try:
            meta = json.loads(self._read_bytes(META_NAME).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(f"{where}: {META_NAME} is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DatasetError(f"{where}: {META_NAME} does not describe a {FORMAT}")
        if meta.get("version") != VERSION:
            raise DatasetError(
                f"{where}: {META_NAME} has version {meta.get('version')!r}; "
                f"this progan reads version {VERSION}"
            )
        for key in ("resolution", "channels", "count", "num_classes"):
            if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
                raise DatasetError(f"{where}: {META_NAME} field {key!r} must be an integer")
        if not is_power_of_two(meta["resolution"]) or meta["resolution"] < 4:
            raise DatasetError(
                f"{where}: {META_NAME} resolution {meta['resolution']} is not a power of two >= 4"
            )
        if meta["channels"] not in (1, 3):
            raise DatasetError(f"{where}: {META_NAME} channels must be 1 or 3")
        if meta["count"] < 1:
            raise DatasetError(f"{where}: the dataset is empty (count {meta['count']})")
        if meta["num_classes"] < 0:
            raise DatasetError(f"{where}: {META_NAME} num_classes must be >= 0")
        return meta

    def _validate(self, members: set[str]) -> np.ndarray | None:
        where = f"{self.path}"
        pngs = {n for n in members if n.lower().endswith(".png")}
        if len(pngs) != self.count:
            raise DatasetError(
                f"{where}: {META_NAME} says count={self.count} but the dataset holds "
                f"{len(pngs)} PNG images"
            )
        for i in range(self.count):
            name = image_name(i)
            if name not in pngs:
                raise DatasetError(f"{where}: image {name} listed in {META_NAME} is missing")
        labels = self.meta.get("labels")
        if labels is None:
            if self.num_classes != 0:
                raise DatasetError(f"{where}: {META_NAME} has num_classes>0 but no labels")
            return None
        if not isinstance(labels, list) or len(labels) != self.count:
            n = len(labels) if isinstance(labels, list) else "not a list"
            raise DatasetError(
                f"{where}: {META_NAME} labels has {n} entries but count is {self.count}"
            )
        out = np.empty(self.count, dtype=np.int64)
        for i, entry in enumerate(labels):
            ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int)
            if not ok or entry[0] != image_name(i):
                raise DatasetError(
                    f"{where}: {META_NAME} labels entry {i} should be "
                    f"[{image_name(i)!r}, label], got {entry!r}"
                )
            if not 0 <= entry[1] < self.num_classes:
                raise DatasetError(
                    f"{where}: label {entry[1]} of {entry[0]} is outside "
                    f"[0, num_classes={self.num_classes})"
                )
            out[i] = entry[1]
        names = self.class_names
        if names is not None and (not isinstance(names, list) or len(names) != self.num_classes):
            raise DatasetError(f"{where}: {META_NAME} class_names must list num_classes names")
        return out

    # -- raw access ---------------------------------------------------------------------------

    def _zipfile(self) -> zipfile.ZipFile:
        local = self._local
        pid = os.getpid()
        if getattr(local, "zip", None) is None or local.pid != pid:
            # After fork the parent's handle shares a file offset: never reuse it.
            local.zip = zipfile.ZipFile(self.path)
            local.pid = pid
        return local.zip

    def _read_bytes(self, name: str) -> bytes:
        try:
            if self.is_zip:
                return self._zipfile().read(name)
            return (self.path / name).read_bytes()
        except (KeyError, OSError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{self.path}: cannot read {name} ({e})") from None

    # -- public API ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """``(uint8 (C, R, R) array, label)``; label is -1 for unlabeled datasets."""
        index = int(index)
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"image index {index} out of range for {self.count} images")
        label = -1 if self.labels is None else int(self.labels[index])
        return self.read_image(index), label

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as uint8 ``(channels, resolution, resolution)``; checks shape."""
        name = image_name(index)
        data = self._read_bytes(name)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                mode, size = img.mode, img.size
                arr = np.asarray(img)
        except (OSError, SyntaxError, ValueError) as e:
            raise DatasetError(f"{self.path}: {name} is not a readable PNG ({e})") from None
        want_mode = "L" if self.channels == 1 else "RGB"
        r = self.resolution
        if mode != want_mode or size != (r, r):
            raise DatasetError(
                f"{self.path}: {name} is {size[0]}x{size[1]} mode {mode}, expected "
                f"{r}x{r} mode {want_mode} ({self.channels} channel(s)) as in {META_NAME}"
            )
        if arr.ndim == 2:
            return arr[None].copy()
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def close(self) -> None:
        """Close this thread's zip handle (it is reopened on the next read)."""
        local = self._local
        if getattr(local, "zip", None) is not None and local.pid == os.getpid():
            local.zip.close()
        local.zip = None

    def __enter__(self) -> ImageDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_local"]  # handles are per process and thread
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (
            f"ImageDataset({str(self.path)!r}, count={self.count}, resolution={self.resolution}, "
            f"channels={self.channels}, num_classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------------
# Writing


class DatasetWriter:
    """Write a progan dataset crash-safely.

    Images go into a temporary zip (or folder) beside ``dest``; :meth:`finish` writes
    ``dataset.json`` and renames the result to ``dest``. If anything fails (or the ``with``
    block raises), the temporary output is removed and ``dest`` is untouched. A ``dest``
    ending in ``.zip`` is replaced atomically if it exists; a folder ``dest`` must not exist
    yet (or be empty).

    ``add(image, label)`` takes a uint8 ``(channels, resolution, resolution)`` array.
    """

    def __init__(
        self,
        dest: str | os.PathLike,
        resolution: int,
        channels: int,
        *,
        source: str = "",
        source_kind: str | None = None,
        class_names: list[str] | None = None,
    ):
        self.dest = Path(dest)
        if not is_power_of_two(resolution) or resolution < 4:
            raise DatasetError(f"resolution must be a power of two >= 4, got {resolution}")
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, got {channels}")
        self.resolution = resolution
        self.channels = channels
        self.source = source
        self.source_kind = source_kind
        self.class_names = class_names
        self.is_zip = self.dest.suffix.lower() == ".zip"
        if (
            not self.is_zip
            and self.dest.exists()
            and (not self.dest.is_dir() or any(self.dest.iterdir()))
        ):
            raise DatasetError(
                f"{self.dest} already exists; remove it or choose another destination "
                "(a destination ending in .zip is replaced safely)"
            )
        if self.is_zip and self.dest.is_dir():
            raise DatasetError(f"{self.dest} is a folder; cannot write a zip file there")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._labels: list[int | None] = []
        self._zip: zipfile.ZipFile | None = None
        if self.is_zip:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.dest.name}.", suffix=".tmp", dir=self.dest.parent
            )
            os.close(fd)
            self._tmp = Path(tmp)
            self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED)
        else:
            self._tmp = Path(
                tempfile.mkdtemp(prefix=f".{self.dest.name}.", suffix=".tmp", dir=self.dest.parent)
            )
        self._done = False

    @property
    def count(self) -> int:
        return len(self._labels)

    def add(self, image: np.ndarray, label: int | None = None) -> str:
        """Append one uint8 ``(C, R, R)`` image; returns its archive name."""
        shape = (self.channels, self.resolution, self.resolution)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != shape:
            got = (image.dtype, image.shape) if isinstance(image, np.ndarray) else type(image)
            raise DatasetError(f"DatasetWriter.add expects uint8 {shape}, got {got}")
        return self.add_png(encode_png(image), label)

    def add_png(self, data: bytes, label: int | None = None) -> str:
        """Append one image already encoded by :func:`progan.data.images.encode_png` (from
        a ``(C, R, R)`` array as :meth:`add` takes); returns its archive name."""
        name = image_name(self.count)
        if self._zip is not None:
            self._zip.writestr(name, data)
        else:
            path = self._tmp / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        self._labels.append(None if label is None else int(label))
        return name

    def _meta(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        labeled = [x is not None for x in self._labels]
        if any(labeled) and not all(labeled):
            raise DatasetError("some images have labels and others do not")
        labels = None
        num_classes = 0
        if self._labels and all(labeled):
            values = [int(x) for x in self._labels]  # type: ignore[arg-type]
            if min(values) < 0:
                raise DatasetError(f"labels must be >= 0, got {min(values)}")
            num_classes = max(values) + 1
            if self.class_names is not None:
                if num_classes > len(self.class_names):
                    raise DatasetError("a label is larger than the number of class names")
                num_classes = len(self.class_names)
            labels = [[image_name(i), v] for i, v in enumerate(values)]
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "resolution": self.resolution,
            "channels": self.channels,
            "count": self.count,
            "labels": labels,
            "num_classes": num_classes,
            "class_names": list(self.class_names)
            if labels is not None and self.class_names
            else None,
            "source": self.source,
            **({"source_kind": self.source_kind} if self.source_kind else {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        meta.update(extra or {})
        return meta

    def finish(self, extra_meta: dict[str, Any] | None = None) -> Path:
        """Write ``dataset.json`` and move the dataset to ``dest``; returns ``dest``."""
        if self._done:
            raise DatasetError("DatasetWriter.finish called twice")
        try:
            if self.count == 0:
                raise DatasetError(f"no images were written to {self.dest}")
            meta_bytes = (json.dumps(self._meta(extra_meta), indent=1) + "\n").encode("utf-8")
            if self._zip is not None:
                self._zip.writestr(META_NAME, meta_bytes)
                self._zip.close()
                self._zip = None
                with open(self._tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self._tmp, self.dest)
            else:
                (self._tmp / META_NAME).write_bytes(meta_bytes)
                if self.dest.exists():
                    self.dest.rmdir()  # checked empty in __init__
                os.replace(self._tmp, self.dest)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.dest

    def abort(self) -> None:
        """Remove the temporary output; ``dest`` is left as it was."""
        self._done = True
        if self._zip is not None:
            with contextlib.suppress(Exception):
                self._zip.close()
            self._zip = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()
