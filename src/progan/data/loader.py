"""``RealImageStream``: an endless, exactly resumable stream of real training images.

The sequence is a pure function of ``(seed, dataset size)``:

* position ``p`` (0, 1, 2, ...) lies in epoch ``e = p // N`` at offset ``k = p % N``, and shows
  image ``perm_e[k]`` where ``perm_e`` is a permutation of ``range(N)`` drawn from
  ``numpy.random.default_rng([seed, e])`` (a fresh shuffle every epoch);
* with ``mirror=True`` the image at position ``p`` is flipped horizontally when bit 63 of a
  SplitMix64 hash of ``(seed, p)`` is set (half of the images on average).

So batch sizes, worker counts, chunk sizes, caching and the resolution served never change
which images come out, and ``RealImageStream(..., start=s)`` continues exactly where a stream
that had consumed ``s`` images left off.

``resolution`` (default: the dataset's) serves the images box-downscaled to a phase's
resolution, from the dataset's levels store (:mod:`progan.data.levels`) where it holds that
resolution, else decoded and reduced in the workers; ``set_resolution`` switches at a phase
change, at the current position.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from progan.data.dataset import ImageDataset
from progan.data.levels import ImagesAt, LevelStore
from progan.data.rows import (
    CACHE_MODES,
    ServesResolution,
    default_chunk_size,
    default_num_workers,
    gather_rows,
    labels_tensor,
    load_all_images,
    load_cache,
    read_rows,
    to_device,
)
from progan.errors import ConfigError

__all__ = [  # what other modules import from here
    "CACHE_MODES",
    "PREFETCH_CHUNKS",
    "RealImageStream",
    "ShuffledOrder",
    "default_num_workers",
    "gather_rows",
    "labels_tensor",
    "load_all_images",
    "load_cache",
    "mirror_flags",
    "read_rows",
    "to_device",
]

_MASK64 = (1 << 64) - 1
# Chunks each loader worker keeps ready: with chunks of up to 256 images, 4 per worker cover
# several minibatches of the fastest (smallest) phases.
PREFETCH_CHUNKS = 4


# --------------------------------------------------------------------------------------------
# The sequence


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def mirror_flags(seed: int, positions: np.ndarray) -> np.ndarray:
    """bool array: whether the image at each global position (int64 array) is mirrored."""
    key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))
    h = _splitmix64(np.asarray(positions, dtype=np.int64).astype(np.uint64) ^ key)
    return (h >> np.uint64(63)).astype(bool)


class ShuffledOrder:
    """Maps global positions to dataset indices: a fresh permutation per epoch."""

    def __init__(self, seed: int, size: int):
        if size < 1:
            raise ConfigError("cannot stream an empty dataset")
        self.seed = seed & _MASK64
        self.size = size
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """int64 ``(size,)`` permutation for ``epoch`` (the two latest are kept)."""
        perm = self._perms.get(epoch)
        if perm is None:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(self.size).astype(np.int64)
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def indices(self, start: int, count: int) -> np.ndarray:
        """int64 ``(count,)``: dataset indices shown at positions ``start .. start+count-1``."""
        pos = np.arange(start, start + count, dtype=np.int64)
        epochs = pos // self.size
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self.permutation(int(e))[pos[sel] - int(e) * self.size]
        return out


# --------------------------------------------------------------------------------------------
# Worker-side chunk reading


class _Chunks(Dataset):
    """Chunk ``j`` = positions ``[j*C, (j+1)*C)`` of the sequence, read and mirrored.

    Returns ``(uint8 (C, ch, R, R) tensor, int64 (C,) tensor)``. Runs in DataLoader workers.
    """

    def __init__(self, source: ImagesAt, seed: int, chunk_size: int, mirror: bool):
        self.source = source
        self.seed = seed
        self.chunk_size = chunk_size
        self.mirror = mirror
        self.order = ShuffledOrder(seed, len(source.dataset))
        self.labels = labels_tensor(source.dataset)

    def __len__(self) -> int:
        return 2**62  # endless; only indexed through _CountFrom

    def __getitem__(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(chunk) * self.chunk_size
        positions = np.arange(start, start + self.chunk_size)
        flips = mirror_flags(self.seed, positions) if self.mirror else None
        return read_rows(
            self.source, self.labels, self.order.indices(start, self.chunk_size), flips
        )


class _CountFrom(Sampler):
    """Endless sampler: start, start+1, ..."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


# --------------------------------------------------------------------------------------------
# The stream


class RealImageStream(ServesResolution):
    """Endless deterministic stream of ``(images, labels)`` batches from an ImageDataset.

    ``next(batch_size)`` returns ``images``: uint8 ``(batch_size, C, R, R)`` in [0, 255] and
    ``labels``: int64 ``(batch_size,)`` (-1 when unlabeled), both on ``device``.
    ``position`` is the number of images returned so far; pass it as ``start`` to resume.

    * ``cache="none"``: ``num_workers`` DataLoader processes (0 = in this process) read
      fixed-size chunks of the sequence ahead of time; batches of any size are assembled here.
    * ``cache="cpu"`` / ``"device"``: the whole dataset is decoded once into a uint8 tensor
      (N*C*R*R bytes) in CPU memory / on ``device`` and batches are gathered from it.

    ``resolution`` (R, default the dataset's S) and ``levels`` (the dataset's
    :class:`~progan.data.levels.LevelStore`, or None) choose what a row holds: the image
    box-downscaled to R (module docstring); with a cache, only R is cached.
    ``num_workers=None``: :func:`default_num_workers`. ``wait_seconds`` accumulates the time
    ``next`` spent waiting for images (the trainer's data-bound warning reads it).

    On CUDA, chunks are pinned and copied with ``non_blocking=True``.
    """

    def __init__(
        self,
        dataset: ImageDataset | str | os.PathLike,
        device: torch.device | str = "cpu",
        *,
        seed: int = 0,
        start: int = 0,
        mirror: bool = False,
        num_workers: int | None = None,
        cache: str = "none",
        chunk_size: int | None = None,
        resolution: int | None = None,
        levels: LevelStore | None = None,
    ):
        if not isinstance(dataset, ImageDataset):
            dataset = ImageDataset(dataset)
        if cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        num_workers = default_num_workers() if num_workers is None else num_workers
        if start < 0 or num_workers < 0:
            raise ConfigError("start and num_workers must be >= 0")
        self.dataset = dataset
        self.device = torch.device(device)
        self.seed = int(seed)
        self.mirror = bool(mirror)
        self.num_workers = int(num_workers)
        self.cache = cache
        self.levels = levels
        self._chunk_size = chunk_size
        self._position = int(start)
        self._order = ShuffledOrder(self.seed, len(dataset))
        self._pin = self.device.type == "cuda"
        self._pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._buffered = 0
        self._iter: Iterator | None = None
        self.wait_seconds = 0.0
        self.resolution = 0
        self.set_resolution(resolution or dataset.resolution)

    def _source_changed(self) -> None:
        self.chunk_size = int(self._chunk_size or default_chunk_size(self.source))

    @property
    def position(self) -> int:
        """Number of images returned so far (the ``start`` that resumes this stream)."""
        return self._position

    @property
    def epoch(self) -> float:
        """Fractional number of passes over the dataset so far."""
        return self._position / len(self.dataset)

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` images (uint8 NCHW) and labels (int64), on ``device``."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        t0 = time.perf_counter()
        if self._images is not None:
            images, labels = self._gather_cached(batch_size)
        else:
            images, labels = self._take_streamed(batch_size)
        self._position += batch_size
        self.wait_seconds += time.perf_counter() - t0
        return images, labels

    def _gather_cached(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._images is not None and self._labels is not None
        positions = np.arange(self._position, self._position + n)
        flips = mirror_flags(self.seed, positions) if self.mirror else None
        images, labels = gather_rows(
            self._images, self._labels, self._order.indices(self._position, n), flips
        )
        return self._to_device(images), self._to_device(labels)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return to_device(t, self.device)

    def _start_workers(self) -> None:
        first_chunk = self._position // self.chunk_size
        chunks = _Chunks(self.source, self.seed, self.chunk_size, self.mirror)
        loader = DataLoader(
            chunks,
            batch_size=None,
            sampler=_CountFrom(first_chunk),
            num_workers=self.loader_workers,
            pin_memory=self._pin,
            prefetch_factor=PREFETCH_CHUNKS if self.loader_workers else None,
        )
        self._iter = iter(loader)
        skip = self._position - first_chunk * self.chunk_size
        if skip:
            images, labels = self._fetch()
            self._pieces = [(images[skip:], labels[skip:])]
            self._buffered = len(labels) - skip

    def _fetch(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._iter is not None
        images, labels = next(self._iter)
        return self._to_device(images), self._to_device(labels)

    def _take_streamed(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iter is None:
            self._start_workers()
        while self._buffered < n:
            piece = self._fetch()
            self._pieces.append(piece)
            self._buffered += len(piece[1])
        out_i, out_l, need = [], [], n
        while need:
            images, labels = self._pieces[0]
            take = min(need, len(labels))
            out_i.append(images[:take])
            out_l.append(labels[:take])
            if take == len(labels):
                self._pieces.pop(0)
            else:
                self._pieces[0] = (images[take:], labels[take:])
            need -= take
        self._buffered -= n
        if len(out_i) == 1:
            return out_i[0], out_l[0]
        return torch.cat(out_i), torch.cat(out_l)

    def close(self) -> None:
        """Stop the worker processes (a later ``next`` restarts them at ``position``)."""
        it, self._iter = self._iter, None
        self._pieces, self._buffered = [], 0
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> RealImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
