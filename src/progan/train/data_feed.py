"""The Trainer's real-image stream: which stream, at which resolution, cached where.

* a dataset that fits the cache budget (``data_cache="auto"``: 2 GiB on a GPU, 1 GiB in CPU
  memory) is cached whole at its own resolution and downscaled on the device each step;
* otherwise (or with ``data_cache="none"``) the stream serves each phase's resolution from the
  dataset's levels store (:mod:`progan.data.levels`, made on first use) and caches a phase's
  level under the same budget; ``_enter_phase`` switches it at each phase change;
* data-parallel, each rank reads its shard (:mod:`progan.data.shard`).

It also times how long each step waits for the stream: :meth:`DataFeedMixin.data_wait_share`
feeds the data-bound warning of the run loop.

:class:`DataFeedMixin` is one part of :class:`progan.train.trainer.Trainer`.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from progan.config import TrainConfig
from progan.schedule import Schedule
from progan.train.distributed import Dist, shard_offsets

# A tick whose stream waits take at least this share of its time, and this many seconds (so
# that the start of a stream in a short tick is no alarm), is reported as data-bound.
DATA_BOUND_SHARE = 0.1
DATA_BOUND_MIN_SECONDS = 0.5
# data_cache="auto": the largest image set (bytes) kept on a GPU, or else in CPU memory.
CACHE_BYTES_DEVICE = 2 << 30
CACHE_BYTES_CPU = 1 << 30


class DataFeedMixin:
    """Opens and re-opens the trainer's stream (see the module docstring)."""

    cfg: TrainConfig
    device: torch.device
    dist: Dist | None
    dataset: Any  # progan.data.dataset.ImageDataset
    schedule: Schedule
    stream: Any
    levels: Any  # progan.data.levels.LevelStore | None
    images: int
    is_main: bool
    progress: bool
    _rows: dict[int, torch.Tensor]
    _levels_opened = False  # whether the levels store was looked for (once per session)

    def _cache_mode_for(self, resolution: int) -> str:
        """data_cache "auto": images of ``resolution`` on the GPU up to 2 GiB, else in CPU
        memory up to 1 GiB, else streamed."""
        mode = self.cfg.data_cache
        if mode != "auto":
            return mode
        ds = self.dataset
        nbytes = len(ds) * ds.channels * resolution**2
        if self.device.type == "cuda" and nbytes <= CACHE_BYTES_DEVICE:
            return "device"
        return "cpu" if nbytes <= CACHE_BYTES_CPU else "none"

    def _data_cache_mode(self) -> str:
        return self._cache_mode_for(self.dataset.resolution)

    @property
    def serves_phase_resolution(self) -> bool:
        """Whether the stream serves reals at the phase's resolution (from the dataset's
        levels; docs/ARCHITECTURE.md "Dataset levels"): when the dataset is not cached whole.
        A cached dataset is served at its own resolution and downscaled on the device."""
        return self._data_cache_mode() == "none"

    def _stream_options(self) -> dict[str, Any]:
        """Resolution, cache mode and levels store of a stream opened at the current images."""
        if not self.serves_phase_resolution:
            return {"cache": self._data_cache_mode()}
        if not self._levels_opened:
            self._levels_opened = True
            if self.dist is None:  # made on first use
                from progan.data.levels import open_levels

                self.levels = open_levels(self.dataset, rebuild=True, progress=self.progress)
            else:
                self.levels = self._ranks_levels()
        resolution = self.schedule.at(self.images).resolution
        cache = self._level_cache_mode(resolution)
        return {"cache": cache, "resolution": resolution, "levels": self.levels}

    def _ranks_levels(self) -> Any:
        """Data-parallel ranks never write the store (they would race); they use a good one
        and otherwise decode the PNGs, which gives the same pixels, only slower."""
        from progan.data.levels import open_levels
        from progan.errors import DatasetError

        try:
            store = open_levels(self.dataset, progress=False)
        except DatasetError as e:
            store = None
            if self.is_main:
                tqdm.write(f"Warning: decoding the dataset at every phase: {e}")
        if store is None and self.is_main:
            tqdm.write(
                f"Note: {self.dataset.path} has no levels store; phases below its resolution "
                f"decode every image (`progan dataset prepare {self.dataset.path}` makes "
                "them faster)"
            )
        return store

    def _level_cache_mode(self, resolution: int) -> str:
        """A phase's images are cached (data_cache "auto" rules) only when read without a
        decode, from the levels store: loading is then one read of the level's file."""
        held = self.levels is not None and resolution in self.levels.resolutions
        return self._cache_mode_for(resolution) if held else "none"

    def _open_stream(self) -> None:
        from progan.data.loader import RealImageStream

        if self.stream is not None:
            self.stream.close()
        if self.dist is not None:
            self._open_shard_stream()
            return
        self.stream = RealImageStream(
            self.dataset,
            self.device,
            seed=self.cfg.seed,
            start=self.data_position,
            mirror=self.cfg.mirror,
            num_workers=self.num_workers,
            **self._stream_options(),
        )

    @property
    def num_workers(self) -> int | None:
        """cfg.num_workers; -1 (auto): None, which the streams read as all usable cores."""
        return None if self.cfg.num_workers < 0 else self.cfg.num_workers

    def _open_shard_stream(self) -> None:
        """This rank's images of each global minibatch of the shared sequence."""
        from progan.data.shard import ShardedImageStream

        start = self._data_position
        ahead = self.images - start  # 0: the data position is the number of images shown

        self.stream = ShardedImageStream(
            self.dataset,
            self.device,
            offsets=self._shard_offsets,
            batch_size_at=lambda pos: self.schedule.at(pos + ahead).batch_size,
            seed=self.cfg.seed,
            start=start,
            mirror=self.cfg.mirror,
            num_workers=self.num_workers,
            **self._stream_options(),
        )

    def _shard_offsets(self, batch: int) -> Any:
        assert self.dist is not None
        return shard_offsets(
            batch, self.dist.world_size, self.dist.rank, self.cfg.network.mbstd_group_size
        )

    def _shard_rows(self, batch: int) -> torch.Tensor:
        """This rank's rows of a global batch (device index tensor, cached per batch size)."""
        rows = self._rows.get(batch)
        if rows is None:
            rows = torch.from_numpy(self._shard_offsets(batch)).to(self.device)
            self._rows[batch] = rows
        return rows

    @property
    def data_position(self) -> int:
        return self.stream.position if self.stream is not None else self._data_position

    _data_position = 0

    def _open_stream_at(self, position: int) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self._data_position = position
        self._open_stream()

    def data_wait_share(self, wait_before: float, seconds: float) -> float:
        """Share of ``seconds`` of wall time that the stream spent waiting since its
        ``wait_seconds`` was ``wait_before``."""
        if self.stream is None or seconds <= 0:
            return 0.0
        return max(0.0, self.stream.wait_seconds - wait_before) / seconds
