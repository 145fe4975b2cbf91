"""The training loop: one D step and one G step per minibatch, growing by the schedule.

Data flow of a step (all on the training device):

1. ``RealImageStream.next(B)`` gives B dataset images (uint8, target resolution) and labels;
   :func:`~progan.nn.resample.real_images_for_phase` box-downscales them to the phase's
   resolution and fades them exactly like G's output.
2. D step: fresh latents -> G (no grad) -> fakes; the loss (e.g. WGAN-GP + drift) on reals
   and fakes; Adam step on D.
3. G step: fresh latents -> G -> D (D frozen) -> loss; Adam step on G; EMA update of G.

Losses stay on the device and are read back every ``loss_log_every`` steps, where they are also
checked for NaN/Inf. Every tick (``tick_kimg``) a line goes to log.jsonl/TensorBoard; every
``snapshot_ticks`` ticks a sample grid, a generator snapshot and a full training state are
written (see :mod:`progan.train.checkpoint`).

Data-parallel (torchrun or ``--gpus N``; :mod:`progan.train.distributed`): every rank trains
on its share of each global minibatch, gradients are averaged over ranks, and all decisions
(NaN recovery, stopping on a signal or after ``max_seconds``) are taken together at the loss
readbacks. Only rank 0 writes files; the others wait for it at snapshots.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from progan.config import TrainConfig, from_dict, load_config, preset, save_config, to_dict
from progan.errors import CheckpointError, ConfigError, ProganError
from progan.fileio import atomic_write_json
from progan.losses import discriminator_loss, generator_loss
from progan.nn import Discriminator, Generator
from progan.nn.resample import real_images_for_phase
from progan.schedule import PhaseState, Schedule
from progan.train import checkpoint as ckpt
from progan.train.distributed import (
    DEFAULT_TIMEOUT_S,
    Dist,
    check_batch_sizes,
    debug_fail_point,
    run_as_rank,
    shard_offsets,
)
from progan.train.ema import make_ema_copy, update_ema
from progan.train.gradients import GradientReducer
from progan.train.run_dir import RunLock, new_run_dir
from progan.train.stats import StatsWriter

STATE_FORMAT = "progan-training-state"


class TrainingDiverged(ProganError):
    """Losses became NaN/Inf and retrying from the last good checkpoint did not help."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure(
    data: str | Path,
    outdir: str | Path = "runs",
    preset_name: str = "paper",
    resolution: int | None = None,
    conditional: bool = False,
    **overrides: Any,
) -> TrainConfig:
    """A validated :class:`TrainConfig` for a dataset: network shape from the dataset
    (resolution, channels, classes) and a preset; ``overrides`` set top-level fields
    (``kimg`` sets ``schedule.total_kimg``, ``loss`` the loss name, ``growing``
    ``schedule.growing``)."""
    from progan.data.dataset import ImageDataset

    ds = ImageDataset(data)
    res = resolution or ds.resolution
    if res > ds.resolution or ds.resolution % res:
        raise ConfigError(
            f"--resolution {res} is not available from {data} (its images are "
            f"{ds.resolution}x{ds.resolution})"
        )
    if conditional and not ds.num_classes:
        raise ConfigError(f"--cond needs a labelled dataset; {data} has no labels")
    cfg = preset(preset_name, res, ds.channels, ds.num_classes if conditional else 0)
    cfg.data, cfg.outdir = str(data), str(outdir)
    kimg = overrides.pop("kimg", None)
    if kimg is not None:
        cfg.schedule.total_kimg = float(kimg)
    loss = overrides.pop("loss", None)
    if loss is not None:
        cfg.loss.name = loss
    growing = overrides.pop("growing", None)
    if growing is not None:
        cfg.schedule.growing = bool(growing)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    cfg.validate()
    return cfg


def _optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    reducer: GradientReducer | None,
    phase_key: Any,
) -> None:
    """Backward pass, gradient averaging over ranks (overlapping the backward pass when
    data-parallel) and one optimizer step."""
    opt.zero_grad(set_to_none=True)
    if reducer is not None:
        reducer.begin(phase_key)
    loss.backward()
    if reducer is not None:
        reducer.finish()
    opt.step()


class Trainer:
    """Holds the networks, optimizers, EMA, data stream and schedule position of one run.

    With ``dist`` (one rank of a data-parallel job) every rank holds the same replica; only
    rank 0 (``is_main``) writes into ``run_dir``.
    """

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, progress: bool = True, dist: Dist | None = None
    ) -> None:
        from progan.data.dataset import ImageDataset

        cfg.validate()
        self.cfg = cfg
        self.run_dir = run_dir
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.progress = progress and self.is_main
        self.device = dist.device_for(cfg.device) if dist else resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
            torch.backends.cudnn.benchmark = not cfg.deterministic
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dataset = ImageDataset(cfg.data)
        self._check_dataset()
        if cfg.metrics:
            from progan.metrics.registry import resolve_names

            self.metric_names = resolve_names(cfg.metrics)
            self._check_inception_weights()
        else:
            self.metric_names = []
        net = cfg.network
        torch.manual_seed(cfg.seed)
        self.G = Generator(net).to(self.device)
        self.D = Discriminator(net).to(self.device)
        if dist is not None:  # same seed, same weights; made certain as DDP does
            dist.broadcast_tensors(
                [t for m in (self.G, self.D) for t in (*m.parameters(), *m.buffers())],
                "broadcasting the initial weights",
            )
        self.G_ema = make_ema_copy(self.G)
        if cfg.channels_last and self.device.type == "cuda":
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        self.opt_G = self._adam(self.G)
        self.opt_D = self._adam(self.D)
        self.schedule = Schedule(cfg.schedule, net.resolution)
        self.reducers: tuple[GradientReducer, GradientReducer] | None = None
        self._rows: dict[int, torch.Tensor] = {}
        # Buffers that training changes (batch-norm statistics of the ablation networks):
        # rank 0's are broadcast after every step, as DDP does, so that all replicas agree.
        self._synced_buffers: list[torch.Tensor] = []
        if dist is not None:
            notes = check_batch_sizes(
                self.schedule.segments(), dist.world_size, net.mbstd_group_size
            )
            for on, what in (
                (net.batchnorm_g, "batch normalization in G"),
                (net.mbdisc_kernels > 0, "minibatch discrimination in D"),
            ):
                if on:
                    notes.append(
                        f"{what} sees only each rank's share of the minibatch, so training "
                        "differs from one process with the same global minibatch"
                    )
            if self.is_main:
                for note in notes:
                    tqdm.write(f"Note: {note}")
            self.reducers = (GradientReducer(self.D, dist), GradientReducer(self.G, dist))
            self._synced_buffers = [b for m in (self.G, self.D) for b in m.buffers()]
        self.rng = torch.Generator(self.device).manual_seed(cfg.seed)
        self.label_table = (
            torch.as_tensor(self.dataset.labels, dtype=torch.int64, device=self.device)
            if net.label_size
            else None
        )
        # Position and bookkeeping (all saved in the training state).
        self.images = 0
        self.steps = 0
        self.ticks = 0
        self.seconds = 0.0  # training time of earlier sessions of this run
        # The log.jsonl line of the tick a checkpoint closes, saved inside the checkpoint: a
        # process killed after the checkpoint but before the log write gets it back on resume.
        self.tick_record: dict[str, Any] | None = None
        self.resumed_tick_record: dict[str, Any] | None = None
        self.phase_key: tuple[int, bool] | None = None
        self.nan_retries = 0
        fixed = torch.Generator().manual_seed(cfg.seed + 12345)
        self.grid_z = torch.randn(cfg.grid_size, net.latent_size, generator=fixed)
        self.grid_labels = torch.arange(cfg.grid_size) % net.label_size if net.label_size else None
        self.stream = None
        self.stop_requested = False  # agreed by all ranks
        self.stop_signal = False  # a signal arrived at this process
        self.checkpoint_images = -1  # images at the newest checkpoint written or loaded

    # ----------------------------------------------------------------------------------------
    # setup helpers

    def _adam(self, model: torch.nn.Module) -> torch.optim.Adam:
        kwargs: dict[str, Any] = {}
        if self.device.type == "cuda":
            kwargs["fused"] = True
        return torch.optim.Adam(
            model.parameters(),
            lr=self.cfg.schedule.learning_rate_default,
            betas=self.cfg.adam_betas,
            eps=self.cfg.adam_eps,
            **kwargs,
        )

    def _check_inception_weights(self) -> None:
        """FID and IS need the Inception weights: find (or download) them now rather than at
        the first snapshot. Data-parallel, local rank 0 of each node may download them; the
        others then look for the file, and all ranks stop if any lacks it."""
        from progan.metrics.inception import find_inception_weights
        from progan.metrics.parallel import SingleProcess, on_every_rank
        from progan.metrics.registry import SPECS

        if not any(SPECS[n].uses_inception for n in self.metric_names):
            return
        comm = self.dist if self.dist is not None else SingleProcess()
        downloads = self.dist is None or self.dist.local_rank == 0

        def find_or_download() -> None:
            if downloads:
                find_inception_weights()

        def find_downloaded() -> None:
            if not downloads:
                find_inception_weights(download=False)

        what = "looking for the Inception weights"
        on_every_rank(comm, find_or_download, what)
        on_every_rank(comm, find_downloaded, what)  # after the downloads of the first step

    def _check_dataset(self) -> None:
        net, ds = self.cfg.network, self.dataset
        if ds.channels != net.channels:
            raise ConfigError(
                f"{ds.path}: dataset has {ds.channels} channels but the network expects "
                f"{net.channels}"
            )
        if ds.resolution < net.resolution or ds.resolution % net.resolution:
            raise ConfigError(
                f"{ds.path}: {ds.resolution}x{ds.resolution} images cannot train a "
                f"{net.resolution}x{net.resolution} network"
            )
        if net.label_size and ds.num_classes != net.label_size:
            raise ConfigError(
                f"{ds.path}: dataset has {ds.num_classes} classes, network expects {net.label_size}"
            )

    def _data_cache_mode(self) -> str:
        mode = self.cfg.data_cache
        if mode != "auto":
            return mode
        ds = self.dataset
        nbytes = len(ds) * ds.channels * ds.resolution**2
        if self.device.type == "cuda" and nbytes <= 2 * 2**30:
            return "device"
        return "cpu" if nbytes <= 2**30 else "none"

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
            num_workers=self.cfg.num_workers,
            cache=self._data_cache_mode(),
        )

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
            num_workers=self.cfg.num_workers,
            cache=self._data_cache_mode(),
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

    # ----------------------------------------------------------------------------------------
    # one training step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.amp == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _latents(
        self, n: int, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) of a global batch of ``n``; with ``rows``, only those rows (all
        ranks draw the whole batch from the shared RNG, so the streams stay identical)."""
        z = torch.randn(n, self.cfg.network.latent_size, device=self.device, generator=self.rng)
        labels = None
        if self.label_table is not None:
            idx = torch.randint(len(self.label_table), (n,), device=self.device, generator=self.rng)
            labels = self.label_table[idx]
        if rows is not None:
            z = z[rows]
            labels = labels[rows] if labels is not None else None
        return z, labels

    def train_step(self, st: PhaseState) -> dict[str, torch.Tensor]:
        """``d_steps`` D steps (each on a fresh real minibatch) and one G step; returns
        detached device scalars (the D statistics of the last D step)."""
        cfg, G, D = self.cfg, self.G, self.D
        depth, alpha = st.depth, st.alpha
        batch = st.batch_size  # global: this rank trains on its rows of it
        rows = self._shard_rows(batch) if self.dist is not None else None
        reduce_D, reduce_G = self.reducers if self.reducers is not None else (None, None)

        def d_fn(x: torch.Tensor):
            return D(x, depth, alpha)

        for _ in range(cfg.d_steps):
            reals_u8, labels = self.stream.next(batch)
            reals = real_images_for_phase(reals_u8, st.resolution, alpha)
            if cfg.channels_last and self.device.type == "cuda":
                reals = reals.contiguous(memory_format=torch.channels_last)
            if not cfg.network.label_size:
                labels = None
            z, fake_labels = self._latents(batch, rows)
            mix = None
            if rows is not None and cfg.loss.name == "wgan-gp" and cfg.loss.gp_lambda > 0:
                # The penalty's mixing factors, drawn for the global batch exactly as
                # gradient_penalty would draw them in one process (next in the RNG stream).
                mix = torch.rand(
                    batch, 1, 1, 1, device=self.device, dtype=reals.dtype, generator=self.rng
                )[rows]
            with self._autocast():
                with torch.no_grad():
                    fakes = G(z, fake_labels, depth, alpha)
                d_loss, d_stats = discriminator_loss(
                    cfg.loss, d_fn, reals, fakes, labels, fake_labels, generator=self.rng,
                    mix=mix,
                )  # fmt: skip
            _optimizer_step(d_loss, self.opt_D, reduce_D, st.phase_key)

        # G step (D frozen so that no weight gradients are computed for it)
        z, fake_labels = self._latents(batch, rows)
        D.requires_grad_(False)
        with self._autocast():
            fakes = G(z, fake_labels, depth, alpha)
            g_loss, g_stats = generator_loss(cfg.loss, d_fn, fakes, fake_labels)
        _optimizer_step(g_loss, self.opt_G, reduce_G, st.phase_key)
        D.requires_grad_(True)
        if self._synced_buffers:
            assert self.dist is not None
            self.dist.broadcast_tensors(self._synced_buffers, "broadcasting network buffers")
        update_ema(self.G_ema, G, self.ema_beta(batch))

        stats = {f"D/{k}": v for k, v in d_stats.items()}
        stats.update({f"G/{k}": v for k, v in g_stats.items()})
        return stats

    def ema_beta(self, batch_size: int) -> float:
        """This step's EMA decay: ``ema_beta``, or less during the optional warm-up."""
        beta = self.cfg.ema_beta
        if self.cfg.ema_rampup and 0.0 < beta < 1.0:
            half_life = batch_size * math.log(0.5) / math.log(beta)  # in images
            half_life = min(half_life, max(self.images * self.cfg.ema_rampup, batch_size))
            beta = 0.5 ** (batch_size / half_life)
        return beta

    def _enter_phase(self, st: PhaseState) -> None:
        """Reset Adam when a fade starts or ends (as the official code did) and set the LR."""
        changed = self.phase_key is not None and st.phase_key != self.phase_key
        if changed and self.cfg.schedule.reset_optimizer:
            for opt in (self.opt_G, self.opt_D):
                opt.state.clear()
        self.phase_key = st.phase_key
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = st.learning_rate

    # ----------------------------------------------------------------------------------------
    # state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain tensors and data, no objects."""
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "config": to_dict(self.cfg),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": self.rng.get_state(),
            "images": self.images,
            "steps": self.steps,
            "ticks": self.ticks,
            "seconds": self.seconds,
            "data_position": self.data_position,
            "phase_key": list(self.phase_key) if self.phase_key is not None else None,
            "log_record": json.dumps(self.tick_record) if self.tick_record else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        saved = from_dict(TrainConfig, state["config"])
        if to_dict(saved.network) != to_dict(self.cfg.network):
            a, b = to_dict(saved.network), to_dict(self.cfg.network)
            diff = ", ".join(
                f"{k}: checkpoint {a[k]!r} vs config {b[k]!r}" for k in a if a[k] != b.get(k)
            )
            raise CheckpointError(
                f"{source}: checkpoint is from another network configuration ({diff})"
            )
        try:
            self.G.load_state_dict(state["G"])
            self.D.load_state_dict(state["D"])
            self.G_ema.load_state_dict(state["G_ema"])
            self.opt_G.load_state_dict(state["opt_G"])
            self.opt_D.load_state_dict(state["opt_D"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"{source}: weights do not fit this configuration: {exc}"
            ) from exc
        self.rng.set_state(state["rng"])
        self.images = int(state["images"])
        self.steps = int(state["steps"])
        self.ticks = int(state["ticks"])
        self.seconds = float(state["seconds"])
        self._data_position = int(state["data_position"])
        record = state.get("log_record")  # absent in checkpoints of older versions
        self.resumed_tick_record = json.loads(record) if record else None
        self.checkpoint_images = self.images
        self.phase_key = tuple(state["phase_key"]) if state["phase_key"] is not None else None
        if self.stream is not None:
            self._open_stream_at(self._data_position)

    def _open_stream_at(self, position: int) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self._data_position = position
        self._open_stream()

    # ----------------------------------------------------------------------------------------
    # snapshots

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
        """Sample grid, EMA generator snapshot and full training state for the current kimg;
        then the configured metrics of the snapshot (returned as flat ``metric/...`` values)
        and ``best.json``.

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
        kimg, st = self.images / 1000.0, self.schedule.at(self.images)
        if self.dist is None:
            self._update_best(values, kimg, st)
        else:
            self.dist.run_on_main(
                lambda: self._update_best(values, kimg, st), "recording the best snapshot"
            )
        return values

    def _write_snapshot_files(self, stats: StatsWriter | None, reals_grid: bool) -> None:
        from progan.tools.grid import make_grid, save_image_grid

        kimg = self.images / 1000.0
        st = self.schedule.at(self.images)
        grid = self.sample_grid()
        save_image_grid(grid, self.run_dir / f"fakes-{kimg:010.3f}.png")
        if stats is not None:
            stats.image("fakes", make_grid(grid), kimg)
        sha = ckpt.save_generator_snapshot(
            self.run_dir / ckpt.snapshot_name(kimg),
            self.G_ema.state_dict(),
            self.cfg.network,
            st.depth,
            st.alpha,
            extra={"kimg": kimg, "images": self.images},
        )
        ckpt.write_checkpoint(
            self.run_dir, kimg, self.images, self.state_dict(), sha, self.cfg.keep_checkpoints
        )
        self.checkpoint_images = self.images
        if reals_grid:
            save_image_grid_reals(self, self.run_dir / "reals.png")

    @torch.no_grad()
    def evaluate_metrics(self, st: PhaseState | None = None) -> dict[str, float]:
        """The configured metrics of the EMA generator at the current phase, or at ``st``
        (its depth, fade and resolution; real images are box-downscaled to it), flattened:
        ``metric/swd/16``, ``metric/swd/avg``, ``metric/fid``, ``metric/is/mean``,
        ``metric/ms-ssim``, plus ``metric/seconds``. Metrics not defined at the phase's
        resolution (SWD below 8x8, MS-SSIM below 16x16) are left out. Data-parallel, every
        rank calls this: each generates and measures its share of the images
        (``progan.metrics.parallel``) and all get the values, the same as one process
        computes (up to float64 summation order)."""
        from progan.generate import to_uint8
        from progan.metrics.api import evaluate
        from progan.metrics.registry import SPECS
        from progan.metrics.sources import CallableSource

        st = st if st is not None else self.schedule.at(self.images)
        names = [n for n in self.metric_names if st.resolution >= SPECS[n].min_resolution]
        if not names:  # e.g. SWD before 8x8 and MS-SSIM before 16x16: nothing to measure
            return {}
        net = self.cfg.network
        latent_gen = torch.Generator(self.device)

        def fake_batch(seeds: list[int]) -> torch.Tensor:
            latent_gen.manual_seed(self.cfg.seed * 7919 + seeds[0])
            z = torch.randn(len(seeds), net.latent_size, device=self.device, generator=latent_gen)
            labels = None
            if net.label_size:
                labels = torch.tensor([s % net.label_size for s in seeds], device=self.device)
            return to_uint8(self.G_ema(z, labels, st.depth, st.alpha))

        source = CallableSource(fake_batch, st.resolution, net.channels, name="training")
        result = evaluate(
            names,
            source,
            self.cfg.data,
            num=self.cfg.metrics_num or None,
            device=self.device,
            seed=self.cfg.seed,
            comm=self.dist,
        )
        flat: dict[str, float] = {}
        for name in names:
            value = result[name]
            if isinstance(value, dict):
                flat.update({f"metric/{name}/{k}": float(v) for k, v in value.items()})
            else:
                flat[f"metric/{name}"] = float(value)
        flat["metric/seconds"] = round(float(result["seconds"]), 3)
        return flat

    def _update_best(self, values: dict[str, float], kimg: float, st: PhaseState) -> None:
        """Record the best fully grown snapshot by the first metric in ``best.json``."""
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

    # ----------------------------------------------------------------------------------------
    # the loop

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal:  # second signal to this process: leave at once
                signal.signal(signum, signal.SIG_DFL)
                raise KeyboardInterrupt
            self.stop_signal = True
            name = signal.Signals(signum).name
            if self.dist is None:
                self.stop_requested = True
                tqdm.write(
                    f"Received {name}: finishing this step and writing a checkpoint (send "
                    "again to exit at once)."
                )
            else:  # all ranks agree to stop at the next loss readback
                tqdm.write(
                    f"Received {name} (rank {self.dist.rank}): all ranks stop within "
                    f"{self.cfg.loss_log_every} steps and rank 0 writes a checkpoint (send "
                    "again to exit at once)."
                )

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                old[sig] = signal.signal(sig, handler)
        return old

    def run(self, max_ticks: int | None = None, max_seconds: float | None = None) -> None:
        """Train until ``total_kimg`` (or ``max_ticks`` more ticks, or ``max_seconds`` of
        this session's wall-clock time at the next tick, or a stop signal)."""
        cfg = self.cfg
        stats_writer = None
        if self.is_main:  # data-parallel: only rank 0 writes files
            stats_writer = StatsWriter(self.run_dir)
            last_kimg = stats_writer.truncate_after(self.images / 1000.0)
            lost = self.resumed_tick_record
            if lost is not None and (last_kimg is None or last_kimg < lost["kimg"] - 1e-9):
                stats_writer.write(lost)  # the checkpoint was written, its log line was not
            best = ckpt.read_best(self.run_dir)
            if best is not None and best.get("kimg", 0.0) > self.images / 1000.0 + 1e-9:
                (self.run_dir / ckpt.BEST_NAME).unlink()  # from work lost since this checkpoint
        self._open_stream_at(self._data_position)
        old_handlers = self._install_signal_handlers()
        total = self.schedule.total_images
        bar = tqdm(
            total=total,
            initial=self.images,
            unit="kimg",
            unit_scale=0.001,
            disable=not self.progress,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        sums: dict[str, torch.Tensor] = {}
        count = 0
        tick_sums: dict[str, float] = {}
        tick_count = 0
        tick_start_images = self.images
        tick_start_time = time.time()
        session_start = time.time() - self.seconds
        wall_start = time.time()
        ticks_this_session = 0
        first_step = True
        time_up = False  # data-parallel: rank 0's clock, agreed at the loss readbacks
        if self.images == 0:
            self.write_snapshot(stats_writer, metrics=False, reals_grid=True)

        def close_tick(st: PhaseState) -> bool:
            """Log the tick (and snapshot when due or stopping); True when the session ends."""
            nonlocal tick_sums, tick_count, tick_start_images, tick_start_time, ticks_this_session
            self.ticks += 1
            ticks_this_session += 1
            now = time.time()
            self.seconds = now - session_start
            record = self._tick_record(
                st, tick_sums, tick_count, tick_start_images, now - tick_start_time
            )
            maintenance = time.time()
            last = self.images >= total or self.stop_requested
            out_of_time = max_seconds is not None and now - wall_start >= max_seconds
            if self.dist is not None:
                out_of_time = time_up
            stop_now = (max_ticks is not None and ticks_this_session >= max_ticks) or out_of_time
            if self.ticks % cfg.snapshot_ticks == 0 or last or stop_now:
                self.tick_record = record
                try:
                    record.update(self.write_snapshot(stats_writer))
                finally:
                    self.tick_record = None
            record["maintenance_sec"] = round(time.time() - maintenance, 3)
            if stats_writer is not None:
                stats_writer.write(record)
            tick_sums, tick_count = {}, 0
            tick_start_images, tick_start_time = self.images, time.time()
            return stop_now

        try:
            while self.images < total and not self.stop_requested:
                st = self.schedule.at(self.images)
                if st.phase_key != self.phase_key or first_step:
                    self._enter_phase(st)
                    first_step = False
                if self.dist is not None:
                    debug_fail_point(self.dist.rank, self.steps)
                step_stats = self.train_step(st)
                self.images += st.batch_size * cfg.d_steps  # reals shown to D
                self.steps += 1
                bar.update(st.batch_size * cfg.d_steps)
                for k, v in step_stats.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                tick_done = self.images >= tick_start_images + cfg.tick_kimg * 1000
                if count >= cfg.loss_log_every or tick_done or self.images >= total:
                    out_of_time = (
                        max_seconds is not None and time.time() - wall_start >= max_seconds
                    )
                    values, weights_ok, time_up = self._read_back(sums, count, out_of_time)
                    # A non-finite gradient shows up in the weights after Adam's step and
                    # in the losses of the next step; checking losses and weights here (one
                    # host sync every loss_log_every steps) catches all three.
                    finite = all(math.isfinite(v) for v in values.values())
                    if not finite or not weights_ok:
                        if finite:
                            values["weights"] = math.nan
                        self._recover_from_nan(values)
                        sums, count, tick_sums, tick_count = {}, 0, {}, 0
                        tick_start_images, tick_start_time = self.images, time.time()
                        bar.n = self.images
                        continue
                    for k, v in values.items():
                        tick_sums[k] = tick_sums.get(k, 0.0) + v * count
                    tick_count += count
                    sums, count = {}, 0
                    bar.set_postfix_str(
                        f"{st.resolution}px a={st.alpha:.2f} "
                        + " ".join(f"{k}={v:.3f}" for k, v in values.items() if k.endswith("/loss"))
                    )
                tick_end = tick_done or self.images >= total or self.stop_requested
                if tick_end and close_tick(st):
                    break
            if self.stop_requested and self.checkpoint_images != self.images:
                # The signal came after this iteration's last look at the flag: fold in the
                # losses not read back yet and close a short tick with a checkpoint here.
                if self.images == tick_start_images:  # the tick is already logged
                    self.write_snapshot(stats_writer)
                else:
                    if count:
                        values, _, _ = self._read_back(sums, count, False)
                        for k, v in values.items():
                            tick_sums[k] = tick_sums.get(k, 0.0) + v * count
                    tick_count += count
                    close_tick(self.schedule.at(self.images - 1))
        finally:
            bar.close()
            if stats_writer is not None:
                stats_writer.close()
            if self.stream is not None:
                self._data_position = self.stream.position
                self.stream.close()
                self.stream = None
            for sig, h in old_handlers.items():
                signal.signal(sig, h)

    def _read_back(
        self, sums: dict[str, torch.Tensor], count: int, out_of_time: bool
    ) -> tuple[dict[str, float], bool, bool]:
        """The host sync every ``loss_log_every`` steps: (mean losses of these steps, whether
        all weights are finite, whether ``max_seconds`` is reached).

        Data-parallel, one all-reduce makes these the same on every rank: losses averaged
        over ranks (= over the global batch), weights finite everywhere, rank 0's clock, and
        ``stop_requested`` set on all ranks when a stop signal reached any rank."""
        if self.dist is None:
            values = {k: v.item() / count for k, v in sums.items()}
            return values, self._all_finite(), out_of_time
        keys = list(sums)
        flags = torch.tensor(
            [float(self.stop_signal), float(out_of_time and self.is_main)], device=self.device
        )
        vec = torch.cat(
            [
                torch.stack([sums[k].float() for k in keys] + [(~self._finite_tensor()).float()]),
                flags,
            ]
        )
        out = self.dist.all_reduce_sum(vec, "the loss readback").tolist()
        n, world = len(keys), self.dist.world_size
        values = {k: out[i] / (count * world) for i, k in enumerate(keys)}
        if out[n + 1] > 0:
            self.stop_requested = True
        return values, out[n] == 0, out[n + 2] > 0

    def _tick_record(
        self, st: PhaseState, sums: dict[str, float], count: int, start_images: int, seconds: float
    ) -> dict[str, Any]:
        images = self.images - start_images
        record: dict[str, Any] = {
            "kimg": round(self.images / 1000.0, 3),
            "tick": self.ticks,
            "phase": st.name,
            "resolution": st.resolution,
            "alpha": round(st.alpha, 4),
            "batch_size": st.batch_size,
            "learning_rate": st.learning_rate,
        }
        record.update({k: v / max(count, 1) for k, v in sums.items()})
        record["images_per_sec"] = round(images / max(seconds, 1e-9), 2)
        record["sec_per_tick"] = round(seconds, 3)
        record["seconds"] = round(self.seconds, 3)
        if self.device.type == "cuda":
            record["peak_gpu_mem_gib"] = round(
                torch.cuda.max_memory_allocated(self.device) / 2**30, 3
            )
        record["time"] = round(time.time(), 3)
        return record

    def _recover_from_nan(self, values: dict[str, float]) -> None:
        """Restore the newest good checkpoint and retry with a different random stream;
        give up after 3 tries with the checkpoints intact."""
        bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
        self.nan_retries += 1
        if self.nan_retries > 3:
            raise TrainingDiverged(
                f"losses became non-finite ({bad}) at {self.images / 1000:.3f} kimg three times; "
                f"stopped. The last good checkpoint in {self.run_dir} is intact: resume with a "
                "lower learning rate or a different loss."
            )
        entry, state = _on_main_shared(
            self.dist,
            lambda: ckpt.newest_valid_checkpoint(self.run_dir),
            "loading the newest checkpoint",
        )
        if self.is_main:
            tqdm.write(
                f"Non-finite losses ({bad}) at {self.images / 1000:.3f} kimg: restoring the "
                f"checkpoint at {entry['kimg']:.3f} kimg and retrying with a new random stream "
                f"(try {self.nan_retries} of 3)."
            )
        retries = self.nan_retries
        self.load_state_dict(state, source=str(self.run_dir / entry["state"]))
        self.nan_retries = retries
        self.rng.manual_seed(self.cfg.seed + 1_000_003 * retries)


def save_image_grid_reals(trainer: Trainer, path: Path) -> None:
    """A grid of real training images (target resolution) for comparison with the fakes."""
    import numpy as np

    from progan.tools.grid import save_image_grid

    n = min(trainer.cfg.grid_size, len(trainer.dataset))
    images = np.stack([trainer.dataset[i][0] for i in range(n)])
    save_image_grid(images, path)


def _describe(cfg: TrainConfig) -> str:
    name = Path(cfg.data).name.split(".")[0] or "data"
    return f"{name}-{cfg.preset}-{cfg.network.resolution}"


def _on_main_shared(dist: Dist | None, fn: Any, what: str) -> Any:
    """``fn()`` in a single process; data-parallel, rank 0 runs it and every rank gets the
    result (a rank-0 failure is reported on all ranks)."""
    if dist is None:
        return fn()
    return dist.run_on_main(fn, what, share=True)


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    total_kimg: float | None = None,
    progress: bool = True,
    max_ticks: int | None = None,
    max_seconds: float | None = None,
    dist_timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Train a new run (``cfg``) or continue one (``resume``: a run folder or a
    ``state-*.pt`` file). ``total_kimg`` may extend a resumed run; ``max_ticks`` and
    ``max_seconds`` end this session early (with a checkpoint). Returns the run folder.

    Launched by torchrun (``WORLD_SIZE`` > 1) this process is one rank of a data-parallel job
    (:mod:`progan.train.distributed`; collectives time out after ``dist_timeout`` seconds):
    rank 0 creates or locks the run folder and reads the config and checkpoint, and shares
    them with the other ranks, which need no access to the run folder.
    """
    return run_as_rank(
        lambda ctx: _train(ctx, cfg, resume, total_kimg, progress, max_ticks, max_seconds),
        dist_timeout,
    )


def _train(
    ctx: Dist | None,
    cfg: TrainConfig | None,
    resume: str | Path | None,
    total_kimg: float | None,
    progress: bool,
    max_ticks: int | None,
    max_seconds: float | None,
) -> Path:
    main = ctx is None or ctx.is_main
    resume = Path(resume) if resume is not None else None
    with contextlib.ExitStack() as stack:

        def prepare() -> tuple[str, dict[str, Any]]:
            """Rank 0: the config and the (new or locked) run folder."""
            nonlocal cfg
            if resume is not None:
                run_dir = resume if resume.is_dir() else resume.parent
                cfg = load_config(run_dir / "config.json")
                if total_kimg is not None:
                    cfg.schedule.total_kimg = float(total_kimg)
                cfg.validate()
            else:
                if cfg is None:
                    raise ConfigError("train() needs a config or resume=")
                if total_kimg is not None:
                    cfg = replace(cfg, schedule=replace(cfg.schedule, total_kimg=float(total_kimg)))
                cfg.validate()
                run_dir = new_run_dir(cfg.outdir, _describe(cfg))
            stack.enter_context(RunLock(run_dir))
            save_config(cfg, run_dir / "config.json")
            return str(run_dir), to_dict(cfg)

        run_dir_str, cfg_dict = _on_main_shared(ctx, prepare, "preparing the run folder")
        run_dir = Path(run_dir_str)
        cfg = from_dict(TrainConfig, cfg_dict)
        trainer = Trainer(cfg, run_dir, progress=progress, dist=ctx)
        if resume is not None:

            def load() -> tuple[dict[str, Any], str]:
                if resume.is_dir():
                    entry, state = ckpt.newest_valid_checkpoint(run_dir)
                    return state, str(run_dir / entry["state"])
                return ckpt.load_training_state(resume), str(resume)

            state, source = _on_main_shared(ctx, load, "loading the checkpoint")
            trainer.load_state_dict(state, source=source)
            del state
            if progress and main:
                tqdm.write(f"Resuming {run_dir} at {trainer.images / 1000:.3f} kimg from {source}")
        trainer.run(max_ticks=max_ticks, max_seconds=max_seconds)
        if trainer.stop_requested and main:
            tqdm.write(f"Stopped; checkpoint written. Resume with: progan train --resume {run_dir}")
    return run_dir
