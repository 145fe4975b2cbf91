"""The run loop of a training session: steps, ticks, snapshots, signals and NaN recovery.

``run`` trains until ``total_kimg`` (or a tick or time limit, or a stop signal):

* each iteration enters the schedule's phase when it changes and runs one ``train_step``
  (:mod:`progan.train.step`), summing its losses on the device;
* every ``loss_log_every`` steps one read-back (the only host sync) brings the mean losses
  home and checks them and the weights for NaN/Inf; a non-finite value restores the newest
  checkpoint and retries with another random stream, three times at most
  (docs/RELIABILITY.md);
* every ``tick_kimg`` a line goes to log.jsonl and TensorBoard (:mod:`progan.train.stats`),
  with ``data_wait_share``, the share of the tick spent waiting for real images; a phase
  where it reaches ``DATA_BOUND_SHARE`` (and ``DATA_BOUND_MIN_SECONDS``) gets a data-bound
  warning (once per phase);
  every ``snapshot_ticks`` ticks, and when the session ends, a snapshot with its metrics
  (:mod:`progan.train.snapshots`);
* SIGINT/SIGTERM finish the step and write a checkpoint (a second signal exits at once).

Data-parallel, the read-back is one all-reduce, so all ranks recover, stop and end a
time-limited session together; only rank 0 writes files.

:class:`RunLoopMixin` is one part of :class:`progan.train.trainer.Trainer`, which owns the
state it reads (annotated below).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from progan.config import TrainConfig
from progan.errors import TrainingDiverged
from progan.schedule import PhaseState, Schedule
from progan.train import checkpoint as ckpt
from progan.train.data_feed import DATA_BOUND_MIN_SECONDS, DATA_BOUND_SHARE
from progan.train.distributed import Dist, debug_fail_point, on_main_shared
from progan.train.stats import StatsWriter


class RunLoopMixin:
    """``run``: the loop over steps and ticks of one session, with its read-backs."""

    # The trainer's state that the loop reads or updates (set by Trainer.__init__).
    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    dist: Dist | None
    is_main: bool
    progress: bool
    schedule: Schedule
    stream: Any
    rng: torch.Generator
    images: int
    steps: int
    ticks: int
    seconds: float
    phase_key: tuple[int, bool] | None
    nan_retries: int
    tick_record: dict[str, Any] | None
    resumed_tick_record: dict[str, Any] | None
    stop_requested: bool
    stop_signal: bool
    checkpoint_images: int
    _data_position: int
    # ... and the methods of the other parts
    train_step: Callable[[PhaseState], dict[str, torch.Tensor]]
    write_snapshot: Callable[..., dict[str, float]]
    _enter_phase: Callable[[PhaseState], None]
    _open_stream_at: Callable[[int], None]
    data_wait_share: Callable[[float, float], float]
    _finite_tensor: Callable[[], torch.Tensor]
    _all_finite: Callable[[], bool]
    load_state_dict: Callable[..., None]

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
        tick_start_wait = 0.0  # the stream's wait_seconds at the start of the tick
        data_bound_warned: set[str] = set()  # phases already reported as data-bound
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
            nonlocal tick_start_wait
            self.ticks += 1
            ticks_this_session += 1
            now = time.time()
            self.seconds = now - session_start
            record = self._tick_record(
                st, tick_sums, tick_count, tick_start_images, now - tick_start_time
            )
            share = self.data_wait_share(tick_start_wait, now - tick_start_time)
            record["data_wait_share"] = round(share, 4)
            waited = share * (now - tick_start_time)
            bound = share >= DATA_BOUND_SHARE and waited >= DATA_BOUND_MIN_SECONDS
            if bound and st.name not in data_bound_warned and self.is_main:
                data_bound_warned.add(st.name)
                tqdm.write(
                    f"Warning: phase {st.name} is data-bound: waiting for real images took "
                    f"{share:.0%} of the tick at {record['images_per_sec']:.0f} img/s "
                    "(more --workers, `progan dataset prepare`, or a faster disk; "
                    'docs/PERFORMANCE.md "Data rate")'
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
            tick_start_wait = self.stream.wait_seconds if self.stream is not None else 0.0
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
        entry, state = on_main_shared(
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
