"""Snapshots of a run and the metrics measured at them.

At every ``snapshot_ticks``-th tick (and when a session ends) ``write_snapshot`` writes, in
this order and each atomically: the EMA generator's grid of the fixed latents
(``fakes-KKKKKK.KKK.png``, also to TensorBoard), the EMA generator's snapshot and the raw
generator's (``raw-snapshot-...``, both safetensors), the full training state and its manifest
entry (:mod:`progan.train.checkpoint`). Then it evaluates the metrics named in
``TrainConfig.metrics`` on both generators (``evaluate_metrics``: ``metric/...`` for the EMA
generator, ``metric-raw/...`` for the raw one; every rank its share when data-parallel;
before the network is fully grown its images are upscaled to the full resolution, as the
official code does) and records the best fully grown EMA snapshot in ``best.json``. Weights
that are not finite are never written.

:class:`SnapshotMixin` is one part of :class:`progan.train.trainer.Trainer`, which owns the
state it reads (annotated below) and its ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from progan.config import TrainConfig
from progan.errors import TrainingDiverged
from progan.fileio import atomic_write_json
from progan.nn import Discriminator, Generator
from progan.schedule import PhaseState, Schedule
from progan.train import checkpoint as ckpt
from progan.train.distributed import Dist
from progan.train.stats import StatsWriter


class SnapshotMixin:
    """Sample grids, snapshots and checkpoints, metrics at snapshots and ``best.json``."""

    # The trainer's state that snapshots read or update (set by Trainer.__init__).
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    dist: Dist | None
    dataset: Any  # progan.data.dataset.ImageDataset
    G: Generator
    D: Discriminator
    G_ema: Generator
    schedule: Schedule
    images: int
    grid_z: torch.Tensor  # the fixed latents of the sample grid (CPU)
    grid_labels: torch.Tensor | None
    metric_names: list[str]
    nan_retries: int
    checkpoint_images: int
    state_dict: Callable[[], dict[str, Any]]

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        """uint8 images of the fixed grid latents from the EMA generator at the current phase."""
        from progan.generate import to_uint8

        st = self.schedule.at(self.images)
        out = []
        for i in range(0, len(self.grid_z), 32):
            z = self.grid_z[i : i + 32].to(self.device)
            lab = (
                self.grid_labels[i : i + 32].to(self.device)
                if self.grid_labels is not None
                else None
            )
            out.append(to_uint8(self.G_ema(z, lab, st.depth, st.alpha)).cpu())
        return torch.cat(out)

    def _finite_tensor(self) -> torch.Tensor:
        params = [p for m in (self.G, self.D, self.G_ema) for p in m.parameters()]
        return torch.stack([torch.isfinite(p).all() for p in params]).all()

    def _all_finite(self) -> bool:
        return bool(self._finite_tensor())

    def write_snapshot(
        self, stats: StatsWriter | None, metrics: bool = True, reals_grid: bool = False
    ) -> dict[str, float]:
        """Sample grid, EMA and raw generator snapshots and full training state for the current
        kimg; then the configured metrics of both generators (returned as flat values,
        ``metric/...`` for the EMA generator and ``metric-raw/...`` for the raw one) and
        ``best.json`` (by the EMA generator's).

        Data-parallel: rank 0 writes the files while the other ranks wait; then all ranks
        evaluate the metrics together (each its share of the images) and all return the
        values; rank 0 updates ``best.json``."""
        if not self._all_finite():
            raise TrainingDiverged("weights are not finite; refusing to write a checkpoint")
        if self.dist is None:
            self._write_snapshot_files(stats, reals_grid)
        else:
            self.dist.run_on_main(
                lambda: self._write_snapshot_files(stats, reals_grid), "writing a snapshot"
            )
        self.nan_retries = 0  # progress past the failure: the next fault gets 3 tries again
        self.checkpoint_images = self.images
        if not (metrics and self.metric_names):
            return {}
        values = self.evaluate_metrics()
        raw_values = self.evaluate_metrics(raw=True)
        kimg, st = self.images / 1000.0, self.schedule.at(self.images)
        if self.dist is None:
            self._update_best(values, kimg, st)
        else:
            self.dist.run_on_main(
                lambda: self._update_best(values, kimg, st), "recording the best snapshot"
            )
        return {**values, **raw_values}

    def _write_snapshot_files(self, stats: StatsWriter | None, reals_grid: bool) -> None:
        from progan.tools.grid import make_grid, save_image_grid

        kimg = self.images / 1000.0
        st = self.schedule.at(self.images)
        grid = self.sample_grid()
        save_image_grid(grid, self.run_dir / f"fakes-{kimg:010.3f}.png")
        if stats is not None:
            stats.image("fakes", make_grid(grid), kimg)
        # the raw generator first, so that an EMA snapshot on disk always has its raw one
        sha = ""
        for name, generator, kind in (
            (ckpt.raw_snapshot_name(kimg), self.G, "raw"),
            (ckpt.snapshot_name(kimg), self.G_ema, "ema"),
        ):
            sha = ckpt.save_generator_snapshot(
                self.run_dir / name,
                generator.state_dict(),
                self.cfg.network,
                st.depth,
                st.alpha,
                extra={"kimg": kimg, "images": self.images, "generator": kind},
            )  # sha: the EMA snapshot's, entered in the manifest
        ckpt.write_checkpoint(
            self.run_dir, kimg, self.images, self.state_dict(), sha, self.cfg.keep_checkpoints
        )
        self.checkpoint_images = self.images
        if reals_grid:
            save_image_grid_reals(self, self.run_dir / "reals.png")

    @torch.no_grad()
    def evaluate_metrics(self, st: PhaseState | None = None, raw: bool = False) -> dict[str, float]:
        """The configured metrics of the EMA generator at the current phase, or at ``st``
        (its depth and fade), flattened: ``metric/swd/16``, ``metric/swd/avg``,
        ``metric/fid``, ``metric/is/mean``, ``metric/ms-ssim``, plus ``metric/seconds``.
        ``raw=True``: the same of the raw generator (in eval mode, from the same latents),
        keyed ``metric-raw/...``.

        As in the official code, the images of a network not yet fully grown are upscaled by
        nearest neighbour to the full resolution and measured there against the full-size
        real images, so one run's values have the same SWD levels from start to end (metrics
        not defined at the full resolution, e.g. MS-SSIM of a target below 16x16, are left
        out). Data-parallel, every rank calls this: each generates and measures its share of
        the images (``progan.metrics.parallel``) and all get the values, the same as one
        process computes (up to float64 summation order)."""
        from progan.generate import to_uint8, upscale_nearest
        from progan.metrics.api import evaluate
        from progan.metrics.registry import SPECS
        from progan.metrics.sources import CallableSource

        st = st if st is not None else self.schedule.at(self.images)
        net = self.cfg.network
        names = [n for n in self.metric_names if net.resolution >= SPECS[n].min_resolution]
        if not names:  # e.g. MS-SSIM of an 8x8 model: nothing to measure
            return {}
        latent_gen = torch.Generator(self.device)
        generator, prefix = (self.G, "metric-raw") if raw else (self.G_ema, "metric")
        was_training = generator.training
        generator.eval()  # batch-norm ablations: running statistics, as the EMA copy uses

        def fake_batch(seeds: list[int]) -> torch.Tensor:
            latent_gen.manual_seed(self.cfg.seed * 7919 + seeds[0])
            z = torch.randn(len(seeds), net.latent_size, device=self.device, generator=latent_gen)
            labels = None
            if net.label_size:
                labels = torch.tensor([s % net.label_size for s in seeds], device=self.device)
            images = to_uint8(generator(z, labels, st.depth, st.alpha))
            return upscale_nearest(images, net.resolution)

        source = CallableSource(fake_batch, net.resolution, net.channels, name="training")
        try:
            result = evaluate(
                names,
                source,
                self.cfg.data,
                num=self.cfg.metrics_num or None,
                device=self.device,
                seed=self.cfg.seed,
                comm=self.dist,
                fid_preprocess=self.cfg.fid_preprocess,
            )
        finally:
            generator.train(was_training)
        flat: dict[str, float] = {}
        for name in names:
            value = result[name]
            if isinstance(value, dict):
                flat.update({f"{prefix}/{name}/{k}": float(v) for k, v in value.items()})
            else:
                flat[f"{prefix}/{name}"] = float(value)
        flat[f"{prefix}/seconds"] = round(float(result["seconds"]), 3)
        return flat

    def _update_best(self, values: dict[str, float], kimg: float, st: PhaseState) -> None:
        """Record the best fully grown snapshot by the first metric in ``best.json``.

        Snapshots of a network not yet fully grown are measured too (upscaled), but do not
        compete: ``best.json`` names a snapshot of the final network, at full depth and fade,
        so that ``--best`` always gives a generator of the full resolution."""
        name = self.metric_names[0]
        key = {"swd": "metric/swd/avg", "is": "metric/is/mean"}.get(name, f"metric/{name}")
        if st.resolution != self.cfg.network.resolution or st.alpha < 1.0 or key not in values:
            return  # only snapshots of the final network compete
        higher_is_better = name == "is"
        best = ckpt.read_best(self.run_dir)
        if best is not None and best.get("metric") == key and best["kimg"] <= kimg:
            old = float(best["value"])
            if (values[key] <= old) if higher_is_better else (values[key] >= old):
                return
        atomic_write_json(
            self.run_dir / ckpt.BEST_NAME,
            {
                "metric": key,
                "value": values[key],
                "kimg": kimg,
                "snapshot": ckpt.snapshot_name(kimg),
                "higher_is_better": higher_is_better,
            },
        )


def save_image_grid_reals(trainer: SnapshotMixin, path: Path) -> None:
    """A grid of real training images (target resolution) for comparison with the fakes."""
    import numpy as np

    from progan.tools.grid import save_image_grid

    n = min(trainer.cfg.grid_size, len(trainer.dataset))
    images = np.stack([trainer.dataset[i][0] for i in range(n)])
    save_image_grid(images, path)
