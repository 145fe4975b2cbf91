"""``ShardedImageStream``: one rank's share of the global real-image sequence.

Data-parallel training splits every global minibatch of ``B`` images (positions
``p .. p+B-1`` of the sequence defined in :mod:`progan.data.loader`) over the ranks. Each rank
reads only its own images: ``offsets(B)`` gives the rank's positions within the global batch,
in the order in which they form the rank's local batch (see
:func:`progan.train.distributed.shard_offsets`). So the shards of all ranks are disjoint,
together they are exactly the images one process would see, and the stream's ``position`` is
the *global* position, which does not depend on the number of ranks: a run resumed with a
different number of ranks continues the same sequence.

* ``cache="none"``: ``num_workers`` DataLoader processes read ahead, one item per step (the
  rank's images of that step). To know the global batch sizes ahead of time the stream takes
  ``batch_size_at(position)``; if the trainer asks for another size, the read-ahead is
  discarded and restarted at the current position (always correct, merely slower).
* ``cache="cpu"`` / ``"device"``: the whole dataset is decoded once and the rank's images are
  gathered from it.

``resolution``, ``levels`` and ``set_resolution`` serve the images at a phase's resolution, as
in :class:`~progan.data.loader.RealImageStream`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from progan.data.dataset import ImageDataset
from progan.data.levels import ImagesAt, LevelStore
from progan.data.loader import (
    CACHE_MODES,
    PREFETCH_CHUNKS,
    ShuffledOrder,
    default_num_workers,
    gather_rows,
    labels_tensor,
    mirror_flags,
    read_rows,
    to_device,
)
from progan.data.rows import ServesResolution
from progan.errors import ConfigError

OffsetsFn = Callable[[int], np.ndarray]


def dataset_indices(order: ShuffledOrder, positions: np.ndarray) -> np.ndarray:
    """int64 dataset indices shown at arbitrary global ``positions`` (int64 array)."""
    pos = np.asarray(positions, dtype=np.int64)
    epochs = pos // order.size
    out = np.empty(len(pos), dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = order.permutation(int(e))[pos[sel] - int(e) * order.size]
    return out


class _PositionReader(Dataset):
    """Item = ``(start, batch, positions)`` -> ``(start, batch, images, labels)``; runs in
    DataLoader workers."""

    def __init__(self, source: ImagesAt, seed: int, mirror: bool):
        self.source = source
        self.seed = seed
        self.mirror = mirror
        self.order = ShuffledOrder(seed, len(source.dataset))
        self.labels = labels_tensor(source.dataset)

    def __len__(self) -> int:
        return 2**62  # endless; only indexed through _Steps

    def __getitem__(self, item: tuple[int, int, np.ndarray]):
        start, batch, positions = item
        flips = mirror_flags(self.seed, positions) if self.mirror else None
        images, labels = read_rows(
            self.source, self.labels, dataset_indices(self.order, positions), flips
        )
        return start, batch, images, labels


class _Steps(Sampler):
    """Endless: ``(start, B, start + offsets(B))`` for consecutive steps from ``start``."""

    def __init__(self, start: int, batch_size_at: Callable[[int], int], offsets: OffsetsFn):
        self.start = start
        self.batch_size_at = batch_size_at
        self.offsets = offsets

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        pos = self.start
        while True:
            batch = int(self.batch_size_at(pos))
            yield pos, batch, pos + np.asarray(self.offsets(batch), dtype=np.int64)
            pos += batch


class ShardedImageStream(ServesResolution):
    """This rank's images of each global minibatch (see the module docstring).

    ``next(B)`` returns ``images``: uint8 ``(len(offsets(B)), C, R, R)`` and ``labels``: int64,
    both on ``device``, and advances ``position`` by the global batch size ``B``.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        device: torch.device | str,
        *,
        offsets: OffsetsFn,
        batch_size_at: Callable[[int], int] | None = None,
        seed: int = 0,
        start: int = 0,
        mirror: bool = False,
        num_workers: int | None = None,
        cache: str = "none",
        resolution: int | None = None,
        levels: LevelStore | None = None,
    ):
        if cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        num_workers = default_num_workers() if num_workers is None else num_workers
        if start < 0 or num_workers < 0:
            raise ConfigError("start and num_workers must be >= 0")
        self.dataset = dataset
        self.device = torch.device(device)
        self.offsets = offsets
        self.batch_size_at = batch_size_at
        self.seed = int(seed)
        self.mirror = bool(mirror)
        self.num_workers = int(num_workers)
        self.cache = cache
        self._position = int(start)
        self._order = ShuffledOrder(self.seed, len(dataset))
        self._pin = self.device.type == "cuda"
        self._iter: Iterator | None = None
        self.levels = levels
        self.wait_seconds = 0.0
        self.resolution = 0
        self.set_resolution(resolution or dataset.resolution)

    @property
    def position(self) -> int:
        """Global images consumed (by all ranks together): the ``start`` that resumes."""
        return self._position

    def next(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        t0 = time.perf_counter()
        if self._images is not None:
            out = self._gather_cached(batch_size)
        else:
            out = self._take_streamed(batch_size)
        self._position += batch_size
        self.wait_seconds += time.perf_counter() - t0
        return out

    def _positions(self, batch_size: int) -> np.ndarray:
        return self._position + np.asarray(self.offsets(batch_size), dtype=np.int64)

    def _gather_cached(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._images is not None and self._labels is not None
        pos = self._positions(batch_size)
        flips = mirror_flags(self.seed, pos) if self.mirror else None
        images, labels = gather_rows(
            self._images, self._labels, dataset_indices(self._order, pos), flips
        )
        return self._to_device(images), self._to_device(labels)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return to_device(t, self.device)

    def _start_workers(self, batch_size: int) -> None:
        sizes = self.batch_size_at or (lambda _pos: batch_size)
        loader = DataLoader(
            _PositionReader(self.source, self.seed, self.mirror),
            batch_size=None,
            sampler=_Steps(self._position, sizes, self.offsets),
            num_workers=self.loader_workers,
            pin_memory=self._pin,
            prefetch_factor=PREFETCH_CHUNKS if self.loader_workers else None,
        )
        self._iter = iter(loader)

    def _take_streamed(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iter is None:
            self._start_workers(batch_size)
        assert self._iter is not None
        start, batch, images, labels = next(self._iter)
        if int(start) != self._position or int(batch) != batch_size:
            # The read-ahead assumed other batch sizes than the caller's: restart exactly
            # here, from now on assuming that the batch size stays the same.
            self.close()
            self.batch_size_at = None
            self._start_workers(batch_size)
            start, batch, images, labels = next(self._iter)
        return self._to_device(images), self._to_device(labels)

    def close(self) -> None:
        """Stop the worker processes (a later ``next`` restarts them at ``position``)."""
        it, self._iter = self._iter, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
