"""``create_dataset``: convert a source (folder, zip, CIFAR-10, MNIST, LSUN, CelebA, synthetic)
into a progan dataset; ``make_synthetic_dataset``: the built-in shapes as a dataset;
``dataset_info``: describe a prepared dataset."""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from progan.data.dataset import DatasetWriter, ImageDataset, is_power_of_two
from progan.data.images import (
    BadImageError,
    check_transform,
    encode_png,
    fit_to_square,
    natural_channels,
    required_side,
    to_uint8_hwc,
)
from progan.data.levels import usable_cores
from progan.data.source_base import with_folder_labels
from progan.data.sources import Source, open_source
from progan.data.synthetic import DEFAULT_RESOLUTION, SyntheticShapesSource
from progan.errors import DatasetError


@dataclass
class CreateSummary:
    """What :func:`create_dataset` wrote. ``skipped`` lists ``(name, reason)`` of bad images."""

    dest: Path
    source: str
    count: int
    resolution: int
    channels: int
    num_classes: int
    transform: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dest": str(self.dest),
            "source": self.source,
            "count": self.count,
            "resolution": self.resolution,
            "channels": self.channels,
            "num_classes": self.num_classes,
            "transform": self.transform,
            "skipped": [list(s) for s in self.skipped],
        }

    def __str__(self) -> str:
        lines = [
            f"Wrote {self.count} images of {self.resolution}x{self.resolution}x{self.channels} "
            f"to {self.dest} ({self.num_classes} classes)"
            if self.num_classes
            else f"Wrote {self.count} images of {self.resolution}x{self.resolution}"
            f"x{self.channels} to {self.dest} (unlabeled)"
        ]
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} bad image(s):")
            lines += [f"  {name}: {reason}" for name, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _image_size(img: Any) -> tuple[int, int]:
    """(width, height) of a PIL image or an HW/HWC array."""
    if isinstance(img, np.ndarray):
        return int(img.shape[1]), int(img.shape[0])
    return img.size


def default_resolution(width: int, height: int, transform: str, name: str) -> int:
    """The largest power of two <= the side the transform needs (the short side; long for pad)."""
    side = required_side(width, height, transform)
    if side < 4:
        raise BadImageError(name, f"image is {width}x{height}; progan needs at least 4x4")
    return 1 << (side.bit_length() - 1)


# Smaller datasets are converted in this process: starting the workers would cost more.
MIN_IMAGES_FOR_WORKERS = 32


def _square_png(arr: np.ndarray, resolution: int, transform: str, name: str) -> tuple:
    """Worker: HWC uint8 -> ``("ok", PNG bytes of the (C, R, R) square)`` or
    ``("bad", name, reason)``; the same bytes in any process."""
    try:
        square = fit_to_square(arr, resolution, transform, name)
    except BadImageError as e:
        return ("bad", e.name, e.reason)
    return ("ok", encode_png(np.ascontiguousarray(square.transpose(2, 0, 1))))


class _Inline:
    """``apply_async`` run at once in this process (``workers=0``)."""

    class _Done:
        def __init__(self, value: tuple):
            self.value = value

        def get(self) -> tuple:
            return self.value

    def apply_async(self, fn, args):
        return self._Done(fn(*args))


def create_dataset(
    source: str | os.PathLike | Source,
    dest: str | os.PathLike,
    resolution: int | None = None,
    *,
    transform: str = "center-crop",
    max_images: int | None = None,
    skip_bad: bool = False,
    source_type: str | None = None,
    channels: int | None = None,
    progress: bool = True,
    seed: int = 0,
    labels_from_folders: bool = False,
    workers: int | None = None,
) -> CreateSummary:
    """Convert ``source`` into a progan dataset at ``dest`` (``.zip`` or a new folder).

    * ``resolution``: output side (a power of two >= 4); default: the largest power of two
      <= the shorter side of the first image (longer side for ``pad``).
    * ``transform``: ``center-crop`` (central square), ``resize`` (stretch) or ``pad``
      (centre on black); then Lanczos down-scaling. Images too small are bad images.
    * ``channels``: 1 or 3 to convert every image; default: those of the first image, and an
      image with a different channel count is an error.
    * ``skip_bad``: skip (and list in the summary) unreadable, truncated, non-image and too
      small files instead of failing on the first one.
    * ``seed``: only used by ``synthetic:`` sources.
    * ``labels_from_folders``: label each image of a folder or zip source by the folder that
      holds it (``<class>/<image>``; classes in sorted order of their names).
    * ``workers``: processes that resize and PNG-encode (default: all usable cores; 0 = this
      process); this process reads the source. The output bytes do not depend on it.

    Nothing is left at ``dest`` if this fails. Raises :class:`DatasetError`.
    """
    check_transform(transform)
    if resolution is not None and (not is_power_of_two(resolution) or resolution < 4):
        raise DatasetError(f"--resolution must be a power of two >= 4, got {resolution}")
    if channels not in (None, 1, 3):
        raise DatasetError(f"--channels must be 1 or 3, got {channels}")
    if max_images is not None and max_images < 1:
        raise DatasetError(f"--max-images must be >= 1, got {max_images}")
    src = open_source(source, source_type, count=max_images, resolution=resolution, seed=seed)
    if labels_from_folders:
        src = with_folder_labels(src)
    total = len(src) if max_images is None else min(len(src), max_images)
    skipped: list[tuple[str, str]] = []
    writer: DatasetWriter | None = None
    first_channels: tuple[str, int] | None = None
    workers = usable_cores() if workers is None else workers
    pending: collections.deque = collections.deque()  # (async result, label), source order

    def bad(name: str, reason: str, bar: tqdm) -> None:
        if not skip_bad:
            raise DatasetError(f"bad image in {src.describe()}: {name}: {reason}")
        skipped.append((name, reason))
        bar.set_postfix(skipped=len(skipped))

    def write_oldest(bar: tqdm) -> None:
        nonlocal writer
        result, label = pending.popleft()
        out = result.get()
        if out[0] == "bad":
            bad(out[1], out[2], bar)
            return
        if writer is None:
            writer = DatasetWriter(
                dest, resolution, out_ch, source=src.describe(), source_kind=src.kind,
                class_names=src.class_names,
            )  # fmt: skip
        writer.add_png(out[1], label)
        bar.update(1)

    try:
        with contextlib.ExitStack() as stack:
            pool = _Inline()
            if workers > 0 and total >= MIN_IMAGES_FOR_WORKERS:
                pool = stack.enter_context(multiprocessing.get_context().Pool(workers))
            bar = stack.enter_context(
                tqdm(total=total, disable=not progress, unit="img", desc="dataset")
            )
            for entry in src.entries():
                # As one process would: stop once `total` images are written (an image still
                # in flight may yet turn out bad and need a successor).
                written = writer.count if writer is not None else 0
                while pending and (len(pending) >= 4 * max(workers, 1) or
                                   written + len(pending) >= total):  # fmt: skip
                    write_oldest(bar)
                    written = writer.count if writer is not None else 0
                if written >= total:
                    break
                try:
                    img = entry.read()
                    nat = natural_channels(img)
                    if first_channels is None:
                        first_channels = (entry.name, nat)
                    elif channels is None and nat != first_channels[1]:
                        raise DatasetError(
                            f"{entry.name} has {nat} channel(s) but {first_channels[0]} has "
                            f"{first_channels[1]}; pass --channels 1 or --channels 3 to "
                            "convert every image"
                        )
                    if resolution is None:
                        resolution = default_resolution(*_image_size(img), transform, entry.name)
                    out_ch = channels or first_channels[1]
                    arr = to_uint8_hwc(img, out_ch, entry.name)
                except BadImageError as e:
                    bad(e.name, e.reason, bar)
                    continue
                task = (arr, resolution, transform, entry.name)
                pending.append((pool.apply_async(_square_png, task), entry.label))
            while pending:
                write_oldest(bar)
        if writer is None:
            if skipped:
                raise DatasetError(
                    f"all {len(skipped)} image(s) in {src.describe()} were bad; first: "
                    f"{skipped[0][0]}: {skipped[0][1]}"
                )
            raise DatasetError(f"no images found in {src.describe()}")
        writer.finish({"transform": transform})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    meta = ImageDataset(writer.dest)
    return CreateSummary(
        dest=writer.dest,
        source=src.describe(),
        count=len(meta),
        resolution=meta.resolution,
        channels=meta.channels,
        num_classes=meta.num_classes,
        transform=transform,
        skipped=skipped,
    )


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a prepared dataset (validating it): path, count, resolution, channels,
    num_classes, class_names, class_counts (name or index -> count), source, created,
    transform, size_bytes and levels (the levels store, or None)."""
    ds = ImageDataset(path)
    class_counts: dict[str, int] | None = None
    if ds.labels is not None:
        counts = np.bincount(ds.labels, minlength=ds.num_classes)
        names = ds.class_names or [str(i) for i in range(ds.num_classes)]
        class_counts = {names[i]: int(c) for i, c in enumerate(counts)}
    return {
        "path": str(ds.path),
        "count": len(ds),
        "resolution": ds.resolution,
        "channels": ds.channels,
        "labeled": ds.labels is not None,
        "num_classes": ds.num_classes,
        "class_names": ds.class_names,
        "class_counts": class_counts,
        "source": ds.meta.get("source"),
        "created": ds.meta.get("created"),
        "transform": ds.meta.get("transform"),
        "size_bytes": _size_on_disk(ds.path),
        "levels": _levels_info(ds),
    }


def _levels_info(ds: ImageDataset) -> dict[str, Any] | None:
    """The levels store's path, resolutions and bytes as its manifest says (not verified), or
    None when there is none."""
    import json

    from progan.data.levels import MANIFEST, levels_path

    path = levels_path(ds)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        levels = manifest["levels"]
        return {
            "path": str(path),
            "resolutions": [int(lv["resolution"]) for lv in levels],
            "bytes": sum(int(lv["bytes"]) for lv in levels),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_synthetic_dataset(
    dest: str | os.PathLike,
    count: int = 2000,
    resolution: int = DEFAULT_RESOLUTION,
    seed: int = 0,
    *,
    progress: bool = False,
) -> CreateSummary:
    """Write the shapes dataset as a normal progan dataset at ``dest`` (zip or folder)."""
    source = SyntheticShapesSource(count=count, resolution=resolution, seed=seed)
    return create_dataset(source, dest, resolution, progress=progress)
