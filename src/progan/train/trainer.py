"""The Trainer: the state of one run and how it changes between steps.

Owns the networks (G, D and the EMA copy of G), both Adam optimizers, the schedule position
(images, steps, ticks, training seconds), the run's random stream, the real-image stream
(opened at the saved data position; this rank's shard when data-parallel), the phase changes
(Adam reset, learning rate, the stream's resolution), and ``state_dict``/``load_state_dict``:
everything needed to continue a run exactly (the training state file, docs/ARCHITECTURE.md
"Checkpoints").

The other parts of the Trainer live in their own modules and read this state:

* :mod:`progan.train.data_feed`: the real-image stream (cached whole, or each phase's
  resolution from the dataset's levels) and its wait time;
* :mod:`progan.train.step`: ``train_step``, what one minibatch does to G, D and the EMA;
* :mod:`progan.train.snapshots`: grids, snapshots and checkpoints, metrics, ``best.json``;
* :mod:`progan.train.run_loop`: ``run``, the ticks, read-backs, signals and NaN recovery.

The public entry points, ``configure`` and ``train``, are in :mod:`progan.train.api`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from progan.config import TrainConfig, from_dict, to_dict
from progan.errors import CheckpointError, ConfigError
from progan.nn import Discriminator, Generator
from progan.schedule import PhaseState, Schedule
from progan.train.data_feed import DataFeedMixin
from progan.train.distributed import Dist, check_batch_sizes
from progan.train.ema import make_ema_copy
from progan.train.gradients import GradientReducer
from progan.train.run_loop import RunLoopMixin
from progan.train.snapshots import SnapshotMixin
from progan.train.step import StepMixin

STATE_FORMAT = "progan-training-state"

# Where TrainConfig.channels_last acts: CUDA only, because on a CPU NHWC is not known to pay
# (the tests add "cpu" to run the NHWC step there).
CHANNELS_LAST_DEVICES: tuple[str, ...] = ("cuda",)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer(DataFeedMixin, StepMixin, SnapshotMixin, RunLoopMixin):
    """Holds the networks, optimizers, EMA, data stream and schedule position of one run.

    With ``dist`` (one rank of a data-parallel job) every rank holds the same replica; only
    rank 0 (``is_main``) writes into ``run_dir``. ``train_step`` comes from
    :class:`~progan.train.step.StepMixin`, ``write_snapshot`` and ``evaluate_metrics`` from
    :class:`~progan.train.snapshots.SnapshotMixin`, ``run`` from
    :class:`~progan.train.run_loop.RunLoopMixin`, the stream from
    :class:`~progan.train.data_feed.DataFeedMixin`.
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
        # NHWC end to end: the parameters are converted once here, the reals once per D step
        # (train/step.py); every layer then keeps the layout (nn/sampling.py, nn/layers.py).
        self.channels_last = cfg.channels_last and self.device.type in CHANNELS_LAST_DEVICES
        if self.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        self.compiled = None
        if cfg.compile:
            from progan.train.compiled import compile_calls

            self.compiled = compile_calls(self.G, self.D, self.device)
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
        self.d_steps_done = 0  # D steps so far: which ones compute the lazy penalty
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
        self.levels = None  # the dataset's levels store, opened with the first stream
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

    # ----------------------------------------------------------------------------------------
    # phases

    def _enter_phase(self, st: PhaseState) -> None:
        """Reset Adam when a fade starts or ends (as the official code did) and set the LR."""
        changed = self.phase_key is not None and st.phase_key != self.phase_key
        if changed and self.cfg.schedule.reset_optimizer:
            for opt in (self.opt_G, self.opt_D):
                opt.state.clear()
        self.phase_key = st.phase_key
        if self.stream is not None and self.serves_phase_resolution:
            self.stream.set_resolution(st.resolution, self._level_cache_mode(st.resolution))
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
            "d_steps_done": self.d_steps_done,
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
        # Absent in training states written before the lazy penalty: every step was then a
        # training step of cfg.d_steps D steps (their config's d_steps cannot have changed).
        self.d_steps_done = int(state.get("d_steps_done", self.steps * saved.d_steps))
        self.ticks = int(state["ticks"])
        self.seconds = float(state["seconds"])
        self._data_position = int(state["data_position"])
        record = state.get("log_record")  # absent in checkpoints of older versions
        self.resumed_tick_record = json.loads(record) if record else None
        self.checkpoint_images = self.images
        self.phase_key = tuple(state["phase_key"]) if state["phase_key"] is not None else None
        if self.stream is not None:
            self._open_stream_at(self._data_position)

    def init_weights(self, weights: dict[str, Any]) -> None:
        """Start from given weights (``--init-from``): state dicts ``G``, ``G_ema`` and ``D``
        (None keeps D's fresh random weights); optimizers stay fresh."""
        source = self.cfg.init_from or "--init-from"
        try:
            self.G.load_state_dict(weights["G"])
            self.G_ema.load_state_dict(weights["G_ema"])
            if weights.get("D") is not None:
                self.D.load_state_dict(weights["D"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{source}: weights do not fit the network: {exc}") from exc
