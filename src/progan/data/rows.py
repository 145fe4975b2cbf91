"""Reading rows of a dataset for the training streams, caching them, and moving them to the
device: the parts :class:`~progan.data.loader.RealImageStream` and
:class:`~progan.data.shard.ShardedImageStream` share.

Rows are uint8 ``(n, C, R, R)`` images at the resolution of an
:class:`~progan.data.levels.ImagesAt` source (a phase's resolution, or the dataset's).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from progan.data.dataset import ImageDataset
from progan.data.levels import ImagesAt, LevelStore, usable_cores
from progan.errors import ConfigError

CACHE_MODES = ("none", "cpu", "device")


def labels_tensor(dataset: ImageDataset) -> torch.Tensor:
    """int64 ``(N,)`` tensor of the dataset's labels (all -1 when unlabeled)."""
    if dataset.labels is None:
        return torch.full((len(dataset),), -1, dtype=torch.int64)
    return torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64).copy())


def default_num_workers() -> int:
    """DataLoader workers when none are asked for: the cores this process may use (at most 16)."""
    return min(usable_cores(), 16)


def read_rows(
    source: ImagesAt, labels: torch.Tensor, indices: np.ndarray, flips: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read images ``indices`` at the source's resolution (uint8 NCHW, mirrored where
    ``flips``) and their labels, on the CPU; the worker-side twin of :func:`gather_rows`."""
    images = source.read(indices)
    if flips is not None:
        images[flips] = images[flips][..., ::-1]
    return torch.from_numpy(images), labels[torch.from_numpy(indices)]


class _Range(Dataset):
    """Consecutive images ``[j*C, min((j+1)*C, N))`` (for loading a cache)."""

    def __init__(self, source: ImagesAt, chunk_size: int):
        self.source, self.chunk_size = source, chunk_size

    def __len__(self) -> int:
        return -(-len(self.source.dataset) // self.chunk_size)

    def __getitem__(self, j: int) -> torch.Tensor:
        lo = j * self.chunk_size
        hi = min(lo + self.chunk_size, len(self.source.dataset))
        return torch.from_numpy(self.source.read(np.arange(lo, hi)))


def load_all_images(dataset: ImageDataset | ImagesAt, num_workers: int = 0) -> torch.Tensor:
    """All images (at the source's resolution) as a uint8 ``(N, C, R, R)`` CPU tensor, in
    dataset order."""
    source = dataset
    if not isinstance(source, ImagesAt):
        source = ImagesAt(dataset, dataset.resolution, None)
    if source.store is not None:
        return torch.from_numpy(source.read_all())
    n, c, r = len(source.dataset), source.dataset.channels, source.resolution
    out = torch.empty((n, c, r, r), dtype=torch.uint8)
    chunk = default_chunk_size(source)
    loader = DataLoader(_Range(source, chunk), batch_size=None, num_workers=num_workers)
    pos = 0
    for piece in loader:
        out[pos : pos + len(piece)] = piece
        pos += len(piece)
    return out


def default_chunk_size(source: ImagesAt) -> int:
    return int(min(256, max(4, (16 << 20) // source.image_bytes)))


def load_cache(
    source: ImagesAt, cache: str, device: torch.device, num_workers: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """All images (uint8 NCHW, at the source's resolution) and labels on ``device`` (cache
    "device") or the CPU ("cpu"); (None, None) for "none"."""
    if cache == "none":
        return None, None
    target = device if cache == "device" else torch.device("cpu")
    images = load_all_images(source, num_workers).to(target)
    return images, labels_tensor(source.dataset).to(target)


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


class ServesResolution:
    """``set_resolution`` of both streams: which resolution their rows hold, cached how."""

    dataset: ImageDataset
    device: torch.device
    num_workers: int
    cache: str
    levels: LevelStore | None
    resolution: int  # 0 until the first set_resolution
    source: ImagesAt
    _images: torch.Tensor | None
    _labels: torch.Tensor | None

    def close(self) -> None:
        raise NotImplementedError

    @property
    def loader_workers(self) -> int:
        """Worker processes that read the rows: none for a level held in the store (a
        memory-mapped gather is a copy, which a worker would only add a second copy and a
        hand-over to), else ``num_workers``."""
        return 0 if self.source.store is not None else self.num_workers

    def _source_changed(self) -> None:
        """Called after ``source`` changed (the stream's chunk sizes may follow it)."""

    def set_resolution(self, resolution: int, cache: str | None = None) -> None:
        """Serve images at ``resolution`` (cached as ``cache``, default unchanged) from the
        current position on; the read-ahead is dropped."""
        if cache is not None and cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if resolution == self.resolution and cache in (None, self.cache):
            return
        self.close()
        self.cache = cache or self.cache
        self.resolution = int(resolution)
        self.source = ImagesAt(self.dataset, self.resolution, self.levels)
        self._source_changed()
        self._images = self._labels = None  # free the old cache before loading the new one
        self._images, self._labels = load_cache(
            self.source, self.cache, self.device, self.num_workers
        )
