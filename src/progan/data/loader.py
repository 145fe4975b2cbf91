"""``RealImageStream``: an endless, exactly resumable stream of real training images.

The sequence is a pure function of ``(seed, dataset size)``:

* position ``p`` (0, 1, 2, ...) lies in epoch ``e = p // N`` at offset ``k = p % N``, and shows
  image ``perm_e[k]`` where ``perm_e`` is a permutation of ``range(N)`` drawn from
  ``numpy.random.default_rng([seed, e])`` (a fresh shuffle every epoch);
* with ``mirror=True`` the image at position ``p`` is flipped horizontally when bit 63 of a
  SplitMix64 hash of ``(seed, p)`` is set (half of the images on average).

So batch sizes, worker counts, chunk sizes and caching never change which images come out, and
``RealImageStream(..., start=s)`` continues exactly where a stream that had consumed ``s``
images left off.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from progan.data.dataset import ImageDataset
from progan.errors import ConfigError

_MASK64 = (1 << 64) - 1
CACHE_MODES = ("none", "cpu", "device")


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


def labels_tensor(dataset: ImageDataset) -> torch.Tensor:
    """int64 ``(N,)`` tensor of the dataset's labels (all -1 when unlabeled)."""
    if dataset.labels is None:
        return torch.full((len(dataset),), -1, dtype=torch.int64)
    return torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64).copy())


# --------------------------------------------------------------------------------------------
# Worker-side chunk reading


def read_rows(
    dataset: ImageDataset, labels: torch.Tensor, indices: np.ndarray, flips: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode dataset images ``indices`` (uint8 NCHW, mirrored where ``flips``) and their
    labels, on the CPU; the worker-side twin of :func:`gather_rows`."""
    images = np.stack([dataset.read_image(int(i)) for i in indices])
    if flips is not None:
        images[flips] = images[flips][..., ::-1]
    return torch.from_numpy(images), labels[torch.from_numpy(indices)]


class _Chunks(Dataset):
    """Chunk ``j`` = positions ``[j*C, (j+1)*C)`` of the sequence, read and mirrored.

    Returns ``(uint8 (C, ch, R, R) tensor, int64 (C,) tensor)``. Runs in DataLoader workers.
    """

    def __init__(self, dataset: ImageDataset, seed: int, chunk_size: int, mirror: bool):
        self.dataset = dataset
        self.seed = seed
        self.chunk_size = chunk_size
        self.mirror = mirror
        self.order = ShuffledOrder(seed, len(dataset))
        self.labels = labels_tensor(dataset)

    def __len__(self) -> int:
        return 2**62  # endless; only indexed through _CountFrom

    def __getitem__(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(chunk) * self.chunk_size
        positions = np.arange(start, start + self.chunk_size)
        flips = mirror_flags(self.seed, positions) if self.mirror else None
        return read_rows(
            self.dataset, self.labels, self.order.indices(start, self.chunk_size), flips
        )


class _CountFrom(Sampler):
    """Endless sampler: start, start+1, ..."""

    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class _Range(Dataset):
    """Consecutive images ``[j*C, min((j+1)*C, N))`` (for loading a cache)."""

    def __init__(self, dataset: ImageDataset, chunk_size: int):
        self.dataset, self.chunk_size = dataset, chunk_size

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.chunk_size)

    def __getitem__(self, j: int) -> torch.Tensor:
        lo = j * self.chunk_size
        hi = min(lo + self.chunk_size, len(self.dataset))
        return torch.from_numpy(np.stack([self.dataset.read_image(i) for i in range(lo, hi)]))


def load_all_images(dataset: ImageDataset, num_workers: int = 0) -> torch.Tensor:
    """The whole dataset as a uint8 ``(N, C, R, R)`` CPU tensor (in dataset order)."""
    c, r = dataset.channels, dataset.resolution
    out = torch.empty((len(dataset), c, r, r), dtype=torch.uint8)
    chunk = _default_chunk_size(dataset)
    loader = DataLoader(_Range(dataset, chunk), batch_size=None, num_workers=num_workers)
    pos = 0
    for piece in loader:
        out[pos : pos + len(piece)] = piece
        pos += len(piece)
    return out


def _default_chunk_size(dataset: ImageDataset) -> int:
    image_bytes = dataset.channels * dataset.resolution**2
    return int(min(256, max(4, (16 << 20) // image_bytes)))


# --------------------------------------------------------------------------------------------
# The stream


def load_cache(
    dataset: ImageDataset, cache: str, device: torch.device, num_workers: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """All images (uint8 NCHW) and labels on ``device`` (cache "device") or the CPU ("cpu");
    (None, None) for "none"."""
    if cache == "none":
        return None, None
    target = device if cache == "device" else torch.device("cpu")
    return load_all_images(dataset, num_workers).to(target), labels_tensor(dataset).to(target)


def gather_rows(
    images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, flips: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``indices`` of cached images/labels (on their device), mirrored where ``flips``."""
    dev = images.device
    idx = _host_to(torch.from_numpy(indices), dev)
    out = images[idx]
    if flips is not None:
        flip_t = _host_to(torch.from_numpy(flips), dev).view(-1, 1, 1, 1)
        out = torch.where(flip_t, out.flip(3), out)
    return out, labels[idx]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; CPU -> CUDA copies go through pinned memory, non-blocking."""
    if t.device == device:
        return t
    if device.type != "cuda":
        return t.to(device)
    if not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _host_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to ``device`` without making the host wait for the GPU.

    A copy from pageable memory synchronizes the stream; from pinned memory it is queued
    (the caching host allocator keeps the pinned buffer alive until the copy is done).
    """
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class RealImageStream:
    """Endless deterministic stream of ``(images, labels)`` batches from an ImageDataset.

    ``next(batch_size)`` returns ``images``: uint8 ``(batch_size, C, R, R)`` in [0, 255] and
    ``labels``: int64 ``(batch_size,)`` (-1 when unlabeled), both on ``device``.
    ``position`` is the number of images returned so far; pass it as ``start`` to resume.

    * ``cache="none"``: ``num_workers`` DataLoader processes (0 = in this process) read
      fixed-size chunks of the sequence ahead of time; batches of any size are assembled here.
    * ``cache="cpu"`` / ``"device"``: the whole dataset is decoded once into a uint8 tensor
      (N*C*R*R bytes) in CPU memory / on ``device`` and batches are gathered from it.

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
        num_workers: int = 2,
        cache: str = "none",
        chunk_size: int | None = None,
    ):
        if not isinstance(dataset, ImageDataset):
            dataset = ImageDataset(dataset)
        if cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if start < 0 or num_workers < 0:
            raise ConfigError("start and num_workers must be >= 0")
        self.dataset = dataset
        self.device = torch.device(device)
        self.seed = int(seed)
        self.mirror = bool(mirror)
        self.num_workers = int(num_workers)
        self.cache = cache
        self.chunk_size = int(chunk_size or _default_chunk_size(dataset))
        self._position = int(start)
        self._order = ShuffledOrder(self.seed, len(dataset))
        self._pin = self.device.type == "cuda"
        self._pieces: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._buffered = 0
        self._iter: Iterator | None = None
        self._images, self._labels = load_cache(dataset, cache, self.device, self.num_workers)

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
        if self._images is not None:
            images, labels = self._gather_cached(batch_size)
        else:
            images, labels = self._take_streamed(batch_size)
        self._position += batch_size
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
        chunks = _Chunks(self.dataset, self.seed, self.chunk_size, self.mirror)
        loader = DataLoader(
            chunks,
            batch_size=None,
            sampler=_CountFrom(first_chunk),
            num_workers=self.num_workers,
            pin_memory=self._pin,
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
