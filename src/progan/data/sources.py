"""Opening the raw image collections that ``progan dataset create`` converts: the detection of
a path's source type and :func:`open_source`.

Every source is a :class:`~progan.data.source_base.Source` (``entries()`` of
:class:`~progan.data.source_base.Entry`; see that module). The readers are in
:mod:`progan.data.readers`.

Source types (``--source-type``): ``folder``, ``zip``, ``cifar10``, ``mnist``, ``lsun``,
``celeba`` and ``synthetic`` (``synthetic:shapes``, see :mod:`progan.data.synthetic`).
:func:`open_source` detects the type from the path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from progan.data.readers import (
    CelebASource,
    Cifar10Source,
    LsunSource,
    MnistSource,
    _find_idx,
)
from progan.data.source_base import Entry, ImageFolderSource, Source, ZipImagesSource
from progan.data.synthetic import open_synthetic
from progan.errors import DatasetError

# Re-exported: the names that lived here before the readers were split out.
__all__ = [
    "SOURCE_TYPES", "CelebASource", "Cifar10Source", "Entry", "ImageFolderSource", "LsunSource",
    "MnistSource", "Source", "ZipImagesSource", "detect_source_type", "open_source",
]  # fmt: skip

SOURCE_TYPES = ("folder", "zip", "cifar10", "mnist", "lsun", "celeba", "synthetic")


# --------------------------------------------------------------------------------------------
# Detection


def detect_source_type(spec: str) -> str:
    """Guess the source type of ``spec`` (a path, or ``synthetic:NAME``)."""
    if spec.startswith("synthetic:"):
        return "synthetic"
    path = Path(spec)
    if not path.exists():
        raise DatasetError(f"source not found: {spec}")
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".tar.gz", ".tgz", ".tar")) and "cifar" in name:
            return "cifar10"
        if name.endswith(".zip"):
            return "zip"
        if "idx3-ubyte" in name:
            return "mnist"
        if name.endswith(".mdb"):
            return "lsun"
        raise DatasetError(
            f"cannot tell what kind of source {spec} is; pass --source-type "
            f"({', '.join(SOURCE_TYPES)})"
        )
    if (path / "data.mdb").is_file():
        return "lsun"
    if (
        name == "cifar-10-batches-py"
        or (path / "data_batch_1").is_file()
        or (path / "cifar-10-batches-py").is_dir()
    ):
        return "cifar10"
    if _find_idx(path, "train-images-idx3-ubyte") or _find_idx(path, "t10k-images-idx3-ubyte"):
        return "mnist"
    if name in ("img_align_celeba", "img_align_celeba_png") or any(
        (path / d).is_dir() for d in ("img_align_celeba", "img_align_celeba_png")
    ):
        return "celeba"
    return "folder"


def open_source(
    spec: str | os.PathLike | Source,
    source_type: str | None = None,
    *,
    count: int | None = None,
    resolution: int | None = None,
    seed: int = 0,
) -> Source:
    """Open a source from a path or ``synthetic:NAME`` (``source_type`` overrides detection).

    ``count``/``resolution``/``seed`` are used by the synthetic source only.
    """
    if isinstance(spec, Source):
        return spec
    spec = str(spec)
    kind = source_type or detect_source_type(spec)
    if kind not in SOURCE_TYPES:
        raise DatasetError(f"unknown source type {kind!r}; choose one of {', '.join(SOURCE_TYPES)}")
    if kind == "synthetic":
        return open_synthetic(spec, count=count, resolution=resolution, seed=seed)
    if not Path(spec).exists():
        raise DatasetError(f"source not found: {spec}")
    classes: dict[str, Callable[[str], Source]] = {
        "folder": ImageFolderSource,
        "zip": ZipImagesSource,
        "cifar10": Cifar10Source,
        "mnist": MnistSource,
        "lsun": LsunSource,
        "celeba": CelebASource,
    }
    return classes[kind](spec)
