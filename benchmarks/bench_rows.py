"""One resolution of the throughput benchmark: the reference step and every progan variant
measured at the same resolution and batch (warm-up, timed steps, repeats, peak memory, FLOPs
and the fraction of the device's peak, optional profile), one JSON row each."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench_device import (
    PeakMemory,
    count_flops,
    count_host_syncs,
    error_text,
    set_reference_precision,
    synchronize,
)
from bench_progan import ProganStep, make_trainer, network_config, variant_settings
from bench_reference import ReferenceStep
from progan.schedule import PhaseState


@dataclass
class Options:
    device: torch.device
    preset: str
    warmup: int
    steps: int | None
    seconds: float
    repeats: int
    profile: int
    flops: bool
    reference: bool
    reference_tf32: str
    seed: int


def _row(
    path: str,
    variant: str,
    res: int,
    batch: int,
    alpha: float,
    runs: list[tuple[int, float]],
    mem_gib: float,
    flops: tuple[int, dict[str, int]] | None,
    peak_key: str,
    peaks: dict[str, float],
) -> dict[str, Any]:
    rates = [batch * n / sec for n, sec in runs]
    best = max(range(len(runs)), key=lambda i: rates[i])
    steps, seconds = runs[best]
    img_s = rates[best]
    row: dict[str, Any] = {
        "path": path,
        "variant": variant,
        "resolution": res,
        "batch": batch,
        "alpha": alpha,
        "steps": steps,
        "seconds": round(seconds, 4),
        "img_per_s": round(img_s, 3),
        "ms_per_step": round(1000 * seconds / steps, 3),
        "img_per_s_repeats": [round(r, 3) for r in rates],
        "peak_mem_gib": round(mem_gib, 4),
        "flops_per_img": None,
        "tflops": None,
        "peak_key": peak_key,
        "fraction_of_peak": None,
        "flops_by_op": None,
        "error": None,
    }
    if flops is not None:
        total, by_op = flops
        row["flops_per_img"] = total / batch
        row["tflops"] = round(total / batch * img_s / 1e12, 6)
        row["flops_by_op"] = by_op
        if peaks.get(peak_key):
            row["fraction_of_peak"] = round(row["tflops"] / peaks[peak_key], 5)
    return row


def _error_row(path: str, variant: str, res: int, batch: int, alpha: float) -> dict[str, Any]:
    return {
        "path": path,
        "variant": variant,
        "resolution": res,
        "batch": batch,
        "alpha": alpha,
        "error": None,
    }


def _borrow_flops(row: dict[str, Any], rows: list[dict[str, Any]], peaks: dict[str, float]) -> None:
    """FLOPs of a compiled row from an eager progan row of the same resolution, batch, alpha."""
    for donor in rows:
        same = all(donor.get(k) == row[k] for k in ("path", "resolution", "batch", "alpha"))
        if same and not donor.get("error") and donor.get("flops_per_img"):
            row["flops_per_img"] = donor["flops_per_img"]
            row["flops_by_op"] = donor["flops_by_op"]
            row["flops_from"] = f"{donor['path']}:{donor['variant']}"
            row["tflops"] = round(row["flops_per_img"] * row["img_per_s"] / 1e12, 6)
            if peaks.get(row["peak_key"]):
                row["fraction_of_peak"] = round(row["tflops"] / peaks[row["peak_key"]], 5)
            return


def _trainer_flags(trainer: Any) -> None:
    """Set the global backend flags as ``Trainer.__init__`` sets them for its config (they are
    global, so they are set again before each timed run of an interleaved candidate)."""
    if trainer.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = trainer.cfg.tf32
        torch.backends.cudnn.allow_tf32 = trainer.cfg.tf32
        torch.backends.cudnn.benchmark = not trainer.cfg.deterministic


class Candidate:
    """One row of the table: a step function to prepare, warm up and time.

    ``prepare`` builds it (reference step or Trainer), counts the FLOPs of one step, runs the
    warm-up and measures its peak memory; ``timed_run`` times one run of ``steps`` steps.
    Candidates of one resolution are timed interleaved (A B A B ...) so that other load on the
    machine affects them alike.
    """

    def __init__(self, path: str, variant: str, opts: Options, res: int, batch: int, alpha: float):
        self.path, self.variant, self.opts = path, variant, opts
        self.res, self.batch, self.alpha = res, batch, alpha
        self.depth = int(math.log2(res)) - 2
        self.settings = variant_settings(variant)
        self.step: Callable[[], Any] | None = None
        self.flags: Callable[[], None] = lambda: None
        self.trainer: Any = None
        self.flops: tuple[int, dict[str, int]] | None = None
        self.mem_gib = math.nan
        self.steps = 0
        self.runs: list[tuple[int, float]] = []
        self.error: str | None = None
        self.profile_table: list[dict[str, Any]] | None = None
        self.host_syncs: dict[str, Any] | None = None
        dev = opts.device
        if path == "reference":
            cuda_tf32 = dev.type == "cuda" and opts.reference_tf32 == "cudnn-default"
            self.peak_key = "tf32" if cuda_tf32 else "fp32"
        elif dev.type != "cuda":
            self.peak_key = "fp32"
        elif self.settings["amp"] == "bf16":
            self.peak_key = "bf16"
        else:
            self.peak_key = "tf32" if self.settings["tf32"] else "fp32"

    def _build(self, data: Path, run_dir: Path) -> None:
        opts, dev = self.opts, self.opts.device
        cfg = network_config(opts.preset, self.res)
        if self.path == "reference":
            self.flags = lambda: set_reference_precision(dev, opts.reference_tf32)
            self.flags()
            ref = ReferenceStep(cfg.network, self.depth, self.alpha, dev, seed=opts.seed)
            torch.manual_seed(opts.seed)
            shape = (self.batch, cfg.network.channels, self.res, self.res)
            reals = torch.rand(shape, device=dev) * 2 - 1
            self.step = lambda: ref(reals)
            return
        cfg.seed = opts.seed
        self.trainer = make_trainer(cfg, data, run_dir, dev, self.settings)
        self.flags = lambda: _trainer_flags(self.trainer)
        lr = cfg.schedule.learning_rate_default
        self.step = ProganStep(self.trainer, PhaseState(self.depth, self.alpha, self.batch, lr))

    def prepare(self, data: Path, run_dir: Path) -> None:
        opts, dev = self.opts, self.opts.device
        mem = PeakMemory(dev)
        mem.reset()
        base = torch.cuda.memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0
        try:
            self._build(data, run_dir)
            assert self.step is not None
            if self.settings["compile"]:
                # Compile outside the counter: a dispatch mode changes what gets compiled.
                # The FLOPs are then taken from an eager row of the same shape (same math).
                self.step()
            elif opts.flops:
                self.flops = self._count_flops()
            for _ in range(opts.warmup):
                self.step()
            synchronize(dev)
            self.steps = opts.steps or 0
            if not self.steps:
                t = time.perf_counter()
                self.step()
                synchronize(dev)
                one = max(time.perf_counter() - t, 1e-6)
                self.steps = int(min(max(opts.seconds / one, 1), 10_000))
            k = int(self.settings.get("gp_every", 1))  # lazy penalty: whole cycles of k steps,
            self.steps = -(-self.steps // k) * k  # each with one penalized step
            self.mem_gib = mem.read_gib() - base
            if dev.type == "cuda":
                self.host_syncs = count_host_syncs(self.step)
        except Exception as exc:
            self.fail(exc)

    def _count_flops(self) -> tuple[int, dict[str, int]]:
        """FLOPs of one step; with the lazy penalty (every k-th D step) the mean over k steps,
        one of which computes the penalty."""
        k = int(self.settings.get("gp_every", 1))
        step = self.step
        assert step is not None
        total, by_op = count_flops(lambda: [step() for _ in range(k)])
        return total // k, {op: n // k for op, n in by_op.items()}

    def timed_run(self) -> None:
        if self.error is not None or self.step is None:
            return
        dev = self.opts.device
        try:
            self.flags()
            synchronize(dev)
            t = time.perf_counter()
            for _ in range(self.steps):
                self.step()
            synchronize(dev)
            self.runs.append((self.steps, time.perf_counter() - t))
        except Exception as exc:
            self.fail(exc)

    def profile(self, top: int) -> None:
        """torch.profiler over one step: the ``top`` ops by self time (device time on CUDA)."""
        if self.error is not None or self.step is None or top <= 0:
            return
        from torch.profiler import ProfilerActivity, profile

        dev = self.opts.device
        cuda = dev.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        try:
            self.flags()
            synchronize(dev)
            with profile(activities=activities) as prof:
                self.step()
                synchronize(dev)
        except Exception as exc:
            self.profile_table = [{"error": error_text(exc)}]
            return

        def self_us(e: Any) -> float:
            if cuda:
                return float(
                    getattr(e, "self_device_time_total", None)
                    or getattr(e, "self_cuda_time_total", 0.0)
                )
            return float(e.self_cpu_time_total)

        events = [e for e in prof.key_averages() if self_us(e) > 0]
        total = sum(self_us(e) for e in events) or 1.0
        events.sort(key=self_us, reverse=True)
        self.profile_table = [
            {"op": e.key, "self_ms": round(self_us(e) / 1000, 3),
             "percent": round(100 * self_us(e) / total, 2), "calls": e.count}
            for e in events[:top]
        ]  # fmt: skip

    def fail(self, exc: BaseException) -> None:
        self.error = error_text(exc)
        self.close()

    def close(self) -> None:
        if self.trainer is not None and self.trainer.stream is not None:
            self.trainer.stream.close()
        self.step = self.trainer = None

    def row(self, peaks: dict[str, float]) -> dict[str, Any]:
        if self.error is not None or not self.runs:
            err = _error_row(self.path, self.variant, self.res, self.batch, self.alpha)
            err["error"] = self.error or "not measured"
            return err
        row = _row(
            self.path, self.variant, self.res, self.batch, self.alpha, self.runs,
            self.mem_gib, self.flops, self.peak_key, peaks,
        )  # fmt: skip
        if self.profile_table is not None:
            row["profile"] = self.profile_table
        if self.host_syncs is not None:
            row["host_syncs_per_step"] = self.host_syncs
        return row


def measure_resolution(
    opts: Options,
    res: int,
    batch: int,
    alpha: float,
    variants: list[str],
    data: Path,
    run_dir: Path,
    peaks: dict[str, float],
) -> list[dict[str, Any]]:
    """Rows of the reference (when on) and every variant at one resolution and alpha."""
    cands = [Candidate("reference", "fp32", opts, res, batch, alpha)] if opts.reference else []
    cands += [Candidate("progan", v, opts, res, batch, alpha) for v in variants]
    for c in cands:
        c.prepare(data, run_dir)
    for _ in range(max(opts.repeats, 1)):
        for c in cands:
            c.timed_run()
    for c in cands:
        c.profile(opts.profile)
    rows = [c.row(peaks) for c in cands]
    for c in cands:
        c.close()
    if any(c.settings["compile"] for c in cands):
        torch._dynamo.reset()
    ref = rows[0] if opts.reference and not rows[0].get("error") else None
    for row in rows:
        if row.get("error"):
            continue
        if row["flops_per_img"] is None and opts.flops:
            _borrow_flops(row, rows, peaks)
        if ref is not None and row is not ref:
            row["speedup_vs_reference"] = round(row["img_per_s"] / ref["img_per_s"], 3)
    gc.collect()
    if opts.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows
