"""The interface of a raw image collection (a source), and the readers of plain image files
(:class:`ImageFolderSource`, :class:`ZipImagesSource`).

Every source has ``entries()``, an iterator of :class:`Entry` (``name``, ``label``, ``read``)
where ``read()`` returns the decoded image (a PIL image or a uint8 HW / HWC ndarray) or raises
:class:`~progan.data.images.BadImageError` naming the file; this lets ``create`` skip a bad
file and go on. Iterating a source directly yields ``(image, label, name)`` tuples and stops
at the first bad file. ``label`` is an int or None; ``class_names`` a list or None.

The other readers (:mod:`progan.data.readers`, :mod:`progan.data.synthetic`) and
:func:`progan.data.sources.open_source` build on this module; it imports none of them.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from progan.data.images import BadImageError, ImageLike, decode_image, has_image_extension
from progan.errors import DatasetError


class Entry(NamedTuple):
    """One source item: ``read()`` decodes it (raises BadImageError for a bad file)."""

    name: str
    label: int | None
    read: Callable[[], ImageLike]


class Source:
    """Base class. Subclasses set ``kind``, ``path`` and implement ``entries``/``__len__``."""

    kind = "source"
    class_names: list[str] | None = None

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def entries(self) -> Iterator[Entry]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[ImageLike, int | None, str]]:
        for entry in self.entries():
            yield entry.read(), entry.label, entry.name

    def describe(self) -> str:
        return f"{self.kind}:{self.path}"


# --------------------------------------------------------------------------------------------
# Image files


class ImageFolderSource(Source):
    """Every image file (png, jpg, jpeg, webp, bmp) under a folder, recursively, in sorted
    order of their relative paths. Hidden files and folders (starting with '.') are skipped.
    Unlabeled."""

    kind = "folder"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        if not self.path.is_dir():
            raise DatasetError(f"{self.path} is not a folder")
        self.files = self._scan()

    def _scan(self) -> list[str]:
        found = []
        for root, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel_root = Path(root).relative_to(self.path)
            for f in files:
                if not f.startswith(".") and has_image_extension(f):
                    found.append((rel_root / f).as_posix())
        return sorted(found)

    def __len__(self) -> int:
        return len(self.files)

    def entries(self) -> Iterator[Entry]:
        for rel in self.files:
            path = self.path / rel
            yield Entry(rel, None, lambda path=path, rel=rel: decode_image(path, rel))


class ZipImagesSource(Source):
    """Every image file inside a zip archive (sorted by member name; no labels)."""

    kind = "zip"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{self.path}: not a readable zip file ({e})") from None
        self.members = sorted(
            n
            for n in names
            if has_image_extension(n)
            and not n.startswith("__MACOSX/")
            and not Path(n).name.startswith(".")
        )

    def __len__(self) -> int:
        return len(self.members)

    def entries(self) -> Iterator[Entry]:
        with zipfile.ZipFile(self.path) as zf:
            for name in self.members:

                def read(name: str = name) -> ImageLike:
                    try:
                        data = zf.read(name)
                    except (zipfile.BadZipFile, OSError, ValueError) as e:
                        raise BadImageError(name, f"cannot extract from the zip ({e})") from None
                    return decode_image(data, name)

                yield Entry(name, None, read)


class FolderLabelledSource(Source):
    """Labels from class folders: each image's label is the index, in sorted order, of the
    name of the folder that holds it (``<class>/<file>`` anywhere under the root of a folder
    or zip source, e.g. CIFAR-10 as ``train/airplane/0001.png``). ``class_names`` lists the
    folder names. An image directly at the root has no class folder: a :class:`DatasetError`
    that names it."""

    def __init__(self, inner: Source):
        super().__init__(inner.path)
        self.inner = inner
        self.kind = inner.kind
        names = [entry.name for entry in inner.entries()]
        folders = {}
        for name in names:
            parent = PurePosixPath(name).parent.name
            if not parent:
                raise DatasetError(
                    f"{inner.describe()}: {name} is not inside a class folder "
                    "(--labels-from-folders needs <class>/<image> files)"
                )
            folders[name] = parent
        self.class_names = sorted(set(folders.values()))
        index = {c: i for i, c in enumerate(self.class_names)}
        self._labels = {name: index[c] for name, c in folders.items()}

    def __len__(self) -> int:
        return len(self.inner)

    def entries(self) -> Iterator[Entry]:
        for entry in self.inner.entries():
            yield Entry(entry.name, self._labels[entry.name], entry.read)

    def describe(self) -> str:
        return f"{self.inner.describe()} (labels from folders)"


def with_folder_labels(source: Source) -> Source:
    """``source`` labelled by its class folders (folder and zip sources only)."""
    if not isinstance(source, (ImageFolderSource, ZipImagesSource)):
        raise DatasetError(
            f"--labels-from-folders applies to a folder or zip of images, not to a "
            f"{source.kind} source ({source.describe()})"
        )
    return FolderLabelledSource(source)
