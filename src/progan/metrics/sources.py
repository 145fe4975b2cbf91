"""Image sources for the metrics: where uint8 NCHW batches come from.

A source has ``name``, ``resolution``, ``channels``, ``size`` (number of distinct images, or
None for an unlimited generator), ``cache_key`` (a string identifying its content for caching
real-data statistics, or None for "do not cache") and ``batches(num, batch_size, device,
start=0)`` yielding (n, C, R, R) uint8 tensors on ``device``: the images with index ``start``
to ``num - 1`` (fewer if the source is smaller), in batches of ``batch_size`` counted from
``start``. A rank of a parallel evaluation reads its block of the set with ``start``.

* ``ArraySource`` -- images already in memory (tests, callers with their own data).
* ``DatasetSource`` -- a progan dataset (zip or folder; ``progan.data.dataset.ImageDataset``),
  read in a seeded random order (datasets may be sorted by class).
* ``GeneratorSource`` -- a generator network, or a checkpoint loaded with
  ``progan.generate.load_generator``; image ``i`` comes from seed ``seed_offset + i`` through
  ``progan.generate.generate_images`` (quantized to uint8 like real data).
* ``CallableSource`` -- any ``fn(seeds: list[int]) -> uint8 NCHW`` (e.g. the training loop's
  generator at its current depth).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ArraySource",
    "CallableSource",
    "DatasetSource",
    "GeneratorSource",
    "ImageSource",
    "as_source",
    "dataset_fingerprint",
]


class ImageSource:
    """Base class (see the module docstring)."""

    name: str = "images"
    resolution: int
    channels: int
    size: int | None = None
    cache_key: str | None = None

    def batches(
        self, num: int, batch_size: int, device: str | torch.device = "cpu", start: int = 0
    ) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def available(self, num: int) -> int:
        """How many images ``batches(num, ...)`` yields."""
        return num if self.size is None else min(num, self.size)


def _as_uint8_tensor(images: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if t.dtype != torch.uint8 or t.ndim != 4:
        raise ValueError(f"expected uint8 NCHW images, got {t.dtype} {tuple(t.shape)}")
    return t


class ArraySource(ImageSource):
    """In-memory uint8 images (N, C, R, R) (numpy array or tensor), used in order."""

    def __init__(self, images: Any, name: str = "array", cache_key: str | None = None) -> None:
        self.images = _as_uint8_tensor(images)
        self.name = name
        self.channels = int(self.images.shape[1])
        self.resolution = int(self.images.shape[-1])
        self.size = int(self.images.shape[0])
        self.cache_key = cache_key

    def batches(self, num, batch_size, device="cpu", start=0):
        n = self.available(num)
        for i in range(start, n, batch_size):
            yield self.images[i : min(i + batch_size, n)].to(device)


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """Content key of a progan dataset without reading every image.

    Zip file: sha256 of (file size, modification time in ns, sha256 of its dataset.json).
    Folder: sha256 of (dataset.json's sha256, number of files, total size, newest mtime).
    Any rewrite of the dataset changes the key; a renamed/moved zip keeps it.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_file():
        st = p.stat()
        with zipfile.ZipFile(p) as zf:
            meta = zf.read("dataset.json")
        h.update(f"zip:{st.st_size}:{st.st_mtime_ns}:".encode())
        h.update(hashlib.sha256(meta).digest())
    else:
        h.update(b"dir:")
        h.update(hashlib.sha256((p / "dataset.json").read_bytes()).digest())
        count = total = newest = 0
        for root, _, files in os.walk(p):
            for f in files:
                st = os.stat(os.path.join(root, f))
                count += 1
                total += st.st_size
                newest = max(newest, st.st_mtime_ns)
        h.update(f"{count}:{total}:{newest}".encode())
    return h.hexdigest()[:32]


class DatasetSource(ImageSource):
    """A progan dataset read in a seeded random order (``seed``) with decoding threads.

    Args:
        dataset: path of the dataset (zip or folder) or an ``ImageDataset``-like object
            (``len``, ``ds[i] -> (uint8 CHW, label)``, ``resolution``, ``channels``).
        seed: order of the images (``seed=0`` and ``seed=1`` give different subsets).
        num_workers: PNG decoding threads.
    """

    def __init__(self, dataset: Any, *, seed: int = 0, num_workers: int = 4) -> None:
        if isinstance(dataset, (str, os.PathLike)):
            from progan.data.dataset import ImageDataset

            dataset = ImageDataset(dataset)
        self.dataset = dataset
        self.seed = int(seed)
        self.num_workers = max(1, int(num_workers))
        self.size = len(dataset)
        self.resolution = int(dataset.resolution)
        self.channels = int(dataset.channels)
        path = getattr(dataset, "path", None)
        self.name = str(getattr(dataset, "name", None) or path or "dataset")
        try:
            self.cache_key = f"{dataset_fingerprint(path)}-s{self.seed}" if path else None
        except (OSError, KeyError, zipfile.BadZipFile):
            self.cache_key = None
        self._order = np.random.default_rng(self.seed).permutation(self.size)

    def batches(self, num, batch_size, device="cpu", start=0):
        n = self.available(num)
        idx = self._order[start:n]

        def load(i: int) -> np.ndarray:
            return np.asarray(self.dataset[int(i)][0])

        with ThreadPoolExecutor(self.num_workers) as pool:
            for lo in range(0, len(idx), batch_size):
                imgs = list(pool.map(load, idx[lo : lo + batch_size]))
                yield torch.from_numpy(np.stack(imgs)).to(device)


class CallableSource(ImageSource):
    """Unlimited source from ``fn(seeds: list[int]) -> uint8 NCHW`` (ndarray or tensor)."""

    def __init__(
        self,
        fn: Callable[[list[int]], Any],
        resolution: int,
        channels: int,
        *,
        seed_offset: int = 0,
        name: str = "generator",
    ) -> None:
        self.fn = fn
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.seed_offset = int(seed_offset)
        self.name = name

    def batches(self, num, batch_size, device="cpu", start=0):
        for lo in range(start, num, batch_size):
            seeds = list(range(self.seed_offset + lo, self.seed_offset + min(lo + batch_size, num)))
            yield _as_uint8_tensor(self.fn(seeds)).to(device)


class GeneratorSource(CallableSource):
    """Images of a generator (or a checkpoint / run folder path) at full resolution.

    Image ``i`` uses seed ``seed_offset + i``; a conditional generator gets label
    ``seed % label_size`` (balanced classes). A generator loaded from a snapshot taken before
    the network was fully grown (``default_depth`` below its ``max_depth``) makes smaller
    images; they are upscaled by nearest neighbour to the full ``resolution``, as the official
    code evaluates such snapshots, and ``upscaled_from`` is their size (None otherwise).
    """

    def __init__(
        self,
        generator: Any,
        *,
        device: str | torch.device = "cpu",
        seed_offset: int = 0,
        gen_batch_size: int = 32,
    ) -> None:
        from progan import generate

        name = "generator"
        if isinstance(generator, (str, os.PathLike)):
            name = str(generator)
            generator = generate.load_generator(generator, device=device)
        self.generator = generator
        label_size = int(getattr(generator, "label_size", 0) or 0)
        resolution = int(generator.resolution)
        depth = getattr(generator, "default_depth", None)
        native = 4 * 2 ** int(depth) if depth is not None else resolution
        self.upscaled_from: int | None = native if native < resolution else None

        def fn(seeds: list[int]) -> Any:
            labels = None
            if label_size > 0:
                labels = torch.tensor(
                    generate.balanced_labels(seeds, label_size), dtype=torch.int64
                )
            images = generate.generate_images(
                generator, seeds, labels=labels, batch_size=gen_batch_size, device=device
            )
            return generate.upscale_nearest(images, resolution)

        super().__init__(
            fn,
            resolution,
            int(generator.channels),
            seed_offset=seed_offset,
            name=name,
        )


def as_source(obj: Any, *, seed: int = 0) -> ImageSource:
    """Wrap ``obj``: an ImageSource (unchanged), uint8 array/tensor, or dataset path/object."""
    if isinstance(obj, ImageSource):
        return obj
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return ArraySource(obj)
    return DatasetSource(obj, seed=seed)
