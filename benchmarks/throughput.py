"""Training throughput: a plain fp32 reference step vs progan's real training step.

    python benchmarks/throughput.py [--preset paper|small|tiny] [--resolutions 4,8,16,32]
        [--variants fp32,tf32,bf16,channels_last,compile] [--batch N] [--alpha 1,0.5]
        [--warmup N] [--steps N | --seconds S] [--repeats N] [--project-resolution 1024]
        [--json benchmarks/results/throughput-<device>.json]

For every resolution R, the networks are fully grown at R (depth log2(R) - 2) with the preset's
widths and the preset's minibatch for R (``--batch`` overrides), and two steps are timed in
steady state, counting real images shown to D per second:

* ``reference``: a plain training step written here the way the existing ports write it: fp32
  with TF32 off, ``torch.optim.Adam`` (not fused), one D step with WGAN-GP (lambda 10, drift
  0.001, penalty through ``torch.autograd.grad(create_graph=True)``) and one G step (D's weight
  gradients computed and thrown away), an EMA update with a Python loop over the parameters,
  ``.item()`` on both losses every step, and one random real batch already on the device. It
  uses progan's Generator/Discriminator, so both paths compute the same function.
* ``progan``: ``Trainer.train_step`` (``progan.train.step``) on a small synthetic dataset (made in a
  temporary folder at R), with the trainer's data stream open, plus what ``Trainer.run`` does
  around it (summing the loss tensors; every ``loss_log_every`` steps reading them back and
  checking that the weights are finite). Each ``--variants`` entry is measured separately:
  ``fp32`` (TF32 off), ``tf32`` (progan's default), ``bf16`` (autocast), ``channels_last``,
  ``compile`` (torch.compile of G and D) and ``compile_g`` (G only); join them with ``+``
  (``bf16+channels_last``). Every variant except ``fp32`` has TF32 on. TF32, bf16 and
  channels_last only act on CUDA and are skipped on a CPU. A variant that fails (torch.compile
  of D cannot do the penalty's double backward) gives a row with its error instead of stopping
  the run.

Per row: img/s, ms/step, peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on a CPU the
process's peak resident set size), FLOPs per image counted with
``torch.utils.flop_counter.FlopCounterMode`` over one whole step (forward, backward and the
penalty's double backward), achieved TFLOP/s, the fraction of the device's peak (the faster of
a large matmul and a large 3x3 convolution, measured here in fp32, tf32 and bf16 as applicable)
and the speedup over the reference; on CUDA also the operations of one step that make the host
wait for the GPU (``torch.cuda.set_sync_debug_mode``). Then a projection of a whole progressive
run to ``--project-resolution`` from the preset's schedule.

The rows of one resolution are timed interleaved, ``--repeats`` runs each after the warm-up,
and the fastest run is reported (all are in the JSON): on a shared machine, other load then
affects every row alike. ``--profile N`` keeps the N top ops of one profiled step per row. No
network access is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import math
import os
import platform
import re
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from progan.config import NetworkConfig, TrainConfig, preset
from progan.fileio import atomic_write_json
from progan.nn import Discriminator, Generator
from progan.schedule import PhaseState, Schedule

SCHEMA = "progan-throughput/1"
TOKENS = ("fp32", "tf32", "bf16", "channels_last", "compile", "compile_g")
CUDA_ONLY_TOKENS = ("tf32", "bf16", "channels_last")
REFERENCE_LR = 1e-3
REFERENCE_BETAS = (0.0, 0.99)
REFERENCE_EMA_BETA = 0.999
GP_LAMBDA = 10.0
PEAK_METHOD = (
    "faster of a square matmul (2048 on CPU, 8192 on CUDA) and a 512-channel 3x3 convolution, "
    "fastest 0.1 s window within --peak-seconds, best of the start and the end of the run"
)
DRIFT = 0.001


# --------------------------------------------------------------------------------------------
# the reference step


class ReferenceStep:
    """A plain WGAN-GP training step (one D step, one G step, EMA), as the existing ports do it.

    ``G``/``D`` are progan's modules (copied when given, else new ones seeded by ``seed``).
    ``generator`` draws the latents and the penalty's mixing factors (default: the global RNG);
    the draws come in the same order as in progan's step (D latents, mixing factors, G latents),
    so with the same generator state both steps see the same random numbers.
    """

    def __init__(
        self,
        net: NetworkConfig,
        depth: int,
        alpha: float,
        device: torch.device | str = "cpu",
        *,
        G: torch.nn.Module | None = None,
        D: torch.nn.Module | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        sync: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.latent_size = net.latent_size
        self.depth, self.alpha = depth, alpha
        self.generator = generator
        self.sync = sync
        if G is None or D is None:
            torch.manual_seed(seed)
            with torch.device(self.device):
                G, D = Generator(net), Discriminator(net)
        else:
            G, D = copy.deepcopy(G), copy.deepcopy(D)
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(self.G)
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=REFERENCE_LR, betas=REFERENCE_BETAS)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=REFERENCE_LR, betas=REFERENCE_BETAS)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_size, device=self.device, generator=self.generator)

    def __call__(self, reals: torch.Tensor) -> tuple[float, float]:
        """One D step and one G step on ``reals`` (N, C, R, R); returns the two losses."""
        G, D, depth, alpha = self.G, self.D, self.depth, self.alpha
        n = reals.shape[0]

        # D step: WGAN loss + gradient penalty + drift.
        fakes = G(self._z(n), None, depth, alpha).detach()
        real_scores = D(reals, depth, alpha)[0]
        fake_scores = D(fakes, depth, alpha)[0]
        u = torch.rand(n, 1, 1, 1, device=self.device, generator=self.generator)
        mixed = (u * fakes + (1.0 - u) * reals).requires_grad_(True)
        mixed_scores = D(mixed, depth, alpha)[0]
        (grad,) = torch.autograd.grad(mixed_scores.sum(), mixed, create_graph=True)
        penalty = ((grad.reshape(n, -1).norm(2, dim=1) - 1.0) ** 2).mean()
        d_loss = (
            fake_scores.mean()
            - real_scores.mean()
            + GP_LAMBDA * penalty
            + DRIFT * (real_scores**2).mean()
        )
        self.opt_D.zero_grad()
        d_loss.backward()
        self.opt_D.step()

        # G step (D's weight gradients are computed too, and cleared by the next D step).
        g_loss = -D(G(self._z(n), None, depth, alpha), depth, alpha)[0].mean()
        self.opt_G.zero_grad()
        g_loss.backward()
        self.opt_G.step()

        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.mul_(REFERENCE_EMA_BETA).add_(p, alpha=1.0 - REFERENCE_EMA_BETA)
        if not self.sync:
            return math.nan, math.nan
        return d_loss.item(), g_loss.item()


# --------------------------------------------------------------------------------------------
# progan's step


def network_config(preset_name: str, resolution: int, channels: int = 3) -> TrainConfig:
    """The preset's TrainConfig for networks fully grown at ``resolution`` (>= 8 is built; the
    4x4 case runs the 8x8 networks at depth 0)."""
    return preset(preset_name, max(resolution, 8), channels)


def make_dataset(folder: Path, resolution: int, batch: int) -> Path:
    """A small synthetic shapes dataset at ``resolution`` in ``folder`` (a zip)."""
    from progan.data.create import create_dataset

    count = max(2 * batch, 16 if resolution >= 512 else 64)
    path = folder / f"shapes-{resolution}.zip"
    if not path.exists():
        create_dataset("synthetic:shapes", path, resolution, max_images=count, progress=False)
    return path


def variant_settings(name: str) -> dict[str, Any]:
    """``fp32``/``tf32``/``bf16``/``channels_last``/``compile``/``compile_g`` joined by ``+``."""
    tokens = [t for t in name.split("+") if t]
    bad = [t for t in tokens if t not in TOKENS]
    if bad or not tokens:
        raise ValueError(f"unknown variant {name!r}; use {', '.join(TOKENS)} joined by '+'")
    compile_mode = "GD" if "compile" in tokens else ("G" if "compile_g" in tokens else None)
    return {
        "tf32": "fp32" not in tokens,
        "amp": "bf16" if "bf16" in tokens else "none",
        "channels_last": "channels_last" in tokens,
        "compile": compile_mode,
    }


def make_trainer(
    cfg: TrainConfig, data: Path, run_dir: Path, device: torch.device, settings: dict[str, Any]
) -> Any:
    """A Trainer on ``data`` with its stream open at position 0 (as ``Trainer.run`` opens it)."""
    from progan.train.trainer import Trainer

    cfg = copy.deepcopy(cfg)
    cfg.data, cfg.outdir, cfg.device = str(data), str(run_dir), str(device)
    cfg.num_workers = 0
    cfg.tf32 = settings.get("tf32", True)
    cfg.amp = settings.get("amp", "none")
    cfg.channels_last = settings.get("channels_last", False)
    trainer = Trainer(cfg, run_dir, progress=False)
    if settings.get("compile"):
        trainer.G = torch.compile(trainer.G)
        if settings["compile"] == "GD":
            trainer.D = torch.compile(trainer.D)
    trainer._open_stream_at(0)
    return trainer


class ProganStep:
    """``Trainer.train_step`` plus the per-step bookkeeping of ``Trainer.run`` (loss sums on the
    device; every ``loss_log_every`` steps the read-back of the losses and the check that all
    weights are finite, ``Trainer._read_back``)."""

    def __init__(self, trainer: Any, st: PhaseState) -> None:
        self.trainer, self.st = trainer, st
        trainer._enter_phase(st)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def __call__(self) -> None:
        t, st = self.trainer, self.st
        stats = t.train_step(st)
        t.images += st.batch_size
        t.steps += 1
        for k, v in stats.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1
        if self.count >= t.cfg.loss_log_every:
            read_back = getattr(t, "_read_back", None)  # losses + finite-weights check
            if read_back is not None:
                read_back(self.sums, self.count, False)
            else:
                _ = {k: v.item() / self.count for k, v in self.sums.items()}
            self.sums, self.count = {}, 0


# --------------------------------------------------------------------------------------------
# measurement helpers


class _NoModuleTracker:
    """Stands in for FlopCounterMode's module tracker, whose hooks break torch.autograd.grad."""

    parents = ("Global",)

    def __enter__(self) -> _NoModuleTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> Any:
    """A FlopCounterMode that counts everything under 'Global' without module hooks."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _NoModuleTracker()
    return counter


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn`` (total, by aten op)."""
    counter = flop_counter()
    with counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def reference_flops_per_image(
    net: NetworkConfig, resolution: int, batch: int, alpha: float = 1.0
) -> float:
    """FLOPs per image of the reference step at ``resolution``, counted on the meta device (no
    memory, no compute: shapes only)."""
    depth = int(math.log2(resolution)) - 2
    ref = ReferenceStep(net, depth, alpha, "meta", sync=False)
    reals = torch.empty(batch, net.channels, resolution, resolution, device="meta")
    total, _ = count_flops(lambda: ref(reals))
    return total / batch


def count_host_syncs(step: Callable[[], Any]) -> dict[str, Any]:
    """CUDA only: the operations of one step that make the host wait for the GPU, as reported
    by ``torch.cuda.set_sync_debug_mode('warn')`` (count and the first few messages)."""
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
    except Exception as exc:
        return {"error": _error_text(exc)}
    messages = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    return {"count": len(messages), "first": messages[:3]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of one measurement: CUDA allocator peak, or the process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.metric = (
                "torch.cuda.max_memory_allocated during the row's set-up and warm-up, minus "
                "what was allocated before it"
            )
        elif Path("/proc/self/clear_refs").exists():
            self.metric = (
                "process peak RSS (VmHWM, reset per row) during the row's set-up and warm-up; "
                "includes the Python process and the rows built before it"
            )
        else:
            self.metric = "process peak RSS since start (ru_maxrss)"

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if "VmHWM" in self.metric:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.metric = "process peak RSS since start (ru_maxrss)"

    def read_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        if "VmHWM" in self.metric:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 2**30
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def _best_rate(fn: Callable[[], Any], flops: float, device: torch.device, seconds: float) -> float:
    """Fastest TFLOP/s of ``fn`` (``flops`` per call) over windows of about 0.1 s."""
    for _ in range(2):
        fn()
    synchronize(device)
    t = time.perf_counter()
    fn()
    synchronize(device)
    per_window = max(1, int(0.1 / max(time.perf_counter() - t, 1e-6)))
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds or best == 0.0:
        t = time.perf_counter()
        for _ in range(per_window):
            fn()
        synchronize(device)
        best = max(best, flops * per_window / (time.perf_counter() - t) / 1e12)
    return best


def measure_peak(device: torch.device, seconds: float = 1.0) -> dict[str, dict[str, float]]:
    """Peak TFLOP/s per precision: the faster of a square matmul and a 3x3 convolution with 512
    channels (fp32 with TF32 off everywhere; tf32 and bf16 on CUDA)."""
    cuda = device.type == "cuda"
    n, (cn, cr) = (8192, (64, 32)) if cuda else (2048, (16, 16))
    precisions = {"fp32": (torch.float32, False)}
    if cuda:
        precisions.update({"tf32": (torch.float32, True), "bf16": (torch.bfloat16, True)})
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    old_bench = torch.backends.cudnn.benchmark
    out: dict[str, dict[str, float]] = {}
    try:
        torch.backends.cudnn.benchmark = True
        for name, (dtype, tf32) in precisions.items():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            mm = _best_rate(lambda a=a, b=b: a @ b, 2 * n**3, device, seconds / 2)
            del a, b
            x = torch.randn(cn, 512, cr, cr, device=device, dtype=dtype)
            w = torch.randn(512, 512, 3, 3, device=device, dtype=dtype)
            conv_flops = 2 * cn * cr * cr * 512 * 512 * 9
            conv = _best_rate(
                lambda x=x, w=w: torch.nn.functional.conv2d(x, w, padding=1),
                conv_flops, device, seconds / 2,
            )  # fmt: skip
            del x, w
            out[name] = {"matmul": mm, "conv3x3": conv, "peak": max(mm, conv)}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        torch.backends.cudnn.benchmark = old_bench
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def _set_reference_precision(device: torch.device, reference_tf32: str) -> None:
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = reference_tf32 == "cudnn-default"
    torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------------------------
# one resolution


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
            self.flags = lambda: _set_reference_precision(dev, opts.reference_tf32)
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
                self.flops = count_flops(self.step)
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
            self.mem_gib = mem.read_gib() - base
            if dev.type == "cuda":
                self.host_syncs = count_host_syncs(self.step)
        except Exception as exc:
            self.fail(exc)

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
            self.profile_table = [{"error": _error_text(exc)}]
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
        self.error = _error_text(exc)
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


# --------------------------------------------------------------------------------------------
# projection of a whole run


def project_run(
    rows: list[dict[str, Any]], preset_name: str, target: int, batch_override: int | None
) -> dict[str, Any]:
    """Hours for all phases of ``preset_name``'s schedule up to ``target``, per measured path.

    A phase's time is its images / the path's img/s at that resolution (fade phases use the
    fade measurement when there is one, else the stable one). Resolutions not measured are
    extrapolated: above the largest measured one by scaling its img/s with the ratio of FLOPs
    per image (same achieved FLOP/s), below the smallest measured one with its img/s.
    """
    cfg = preset(preset_name, target)
    schedule = Schedule(cfg.schedule, target)
    segments = schedule.segments()
    ok = [r for r in rows if not r.get("error")]
    keys = sorted({(r["path"], r["variant"]) for r in ok}, key=lambda k: (k[0] != "reference", k))
    measured = sorted({r["resolution"] for r in ok})
    needed = sorted({s.resolution for s in segments})
    extrapolated = [r for r in needed if r not in measured]
    notes: list[str] = []
    out: dict[str, Any] = {
        "preset": preset_name,
        "resolution": target,
        "total_kimg": cfg.schedule.total_kimg,
        "phases": [
            {"resolution": s.resolution, "fading": s.fading, "kimg": s.kimg, "batch": s.batch_size}
            for s in segments
        ],
        "measured_resolutions": measured,
        "extrapolated_resolutions": extrapolated,
        "paths": {},
        "notes": notes,
    }
    if not ok:
        notes.append("nothing was measured")
        return out
    if batch_override is not None:
        notes.append(f"measured at --batch {batch_override}, not the schedule's minibatch sizes")
    elif any(
        r["batch"] != schedule.batch_size(r["resolution"]) for r in ok if r["resolution"] >= 8
    ):
        notes.append("some measured batch sizes differ from the projected schedule's")
    flops_cache: dict[int, float] = {}

    def flops_at(res: int) -> float:
        if res not in flops_cache:
            net = network_config(preset_name, res).network
            flops_cache[res] = reference_flops_per_image(net, res, schedule.batch_size(res))
        return flops_cache[res]

    if any(r > max(measured) for r in extrapolated):
        notes.append(
            f"resolutions above {max(measured)} scale its img/s by the ratio of reference FLOPs "
            "per image (counted on the meta device), i.e. assume the same achieved TFLOP/s"
        )
    if any(r < min(measured) for r in extrapolated):
        notes.append(
            f"resolutions below {min(measured)} use its img/s (a conservative upper bound on time)"
        )
    fade_from_stable = False
    for path, variant in keys:
        mine = [r for r in ok if r["path"] == path and r["variant"] == variant]
        stable = {r["resolution"]: r["img_per_s"] for r in mine if r["alpha"] >= 1.0}
        fade = {r["resolution"]: r["img_per_s"] for r in mine if r["alpha"] < 1.0}
        if not stable:
            stable = dict(fade)
        per_res: dict[int, float] = {}
        for seg in segments:
            res = seg.resolution
            if seg.fading and res in fade:
                ips = fade[res]
            elif res in stable:
                ips = stable[res]
                fade_from_stable |= seg.fading
            else:
                below = [m for m in stable if m < res]
                if below:
                    anchor = max(below)
                    ips = stable[anchor] * flops_at(anchor) / flops_at(res)
                else:
                    ips = stable[min(stable)]
                fade_from_stable |= seg.fading
            per_res[res] = per_res.get(res, 0.0) + seg.kimg * 1000 / ips / 3600
        out["paths"][f"{path}:{variant}"] = {
            "hours": round(sum(per_res.values()), 3),
            "hours_by_resolution": {str(k): round(v, 4) for k, v in per_res.items()},
        }
    if fade_from_stable:
        notes.append("fade-in phases without a fade measurement use the stable img/s")
    return out


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="paper", choices=("paper", "small", "tiny"))
    ap.add_argument("--resolutions", help="comma list (default: 4..1024 on CUDA, 4,8,16 on CPU)")
    ap.add_argument("--variants", help="comma list (default: fp32,tf32,bf16,channels_last on "
                    "CUDA, fp32 on CPU)")  # fmt: skip
    ap.add_argument("--batch", type=int, help="minibatch for every resolution (default: preset's)")
    ap.add_argument("--alpha", default="1", help="comma list of fade alphas, e.g. 1,0.5")
    ap.add_argument("--warmup", type=int, help="warm-up steps (default 5 on CUDA, 1 on CPU)")
    ap.add_argument("--steps", type=int, help="timed steps (default 30 on CUDA; on CPU --seconds)")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per run when --steps unset")
    ap.add_argument("--repeats", type=int, help="timed runs per row; the fastest is reported "
                    "(default 1 on CUDA, 5 on CPU)")  # fmt: skip
    ap.add_argument("--project-resolution", type=int,
                    help="target of the projected run (default 1024; tiny: largest "
                    "measured)")  # fmt: skip
    ap.add_argument("--no-reference", action="store_true", help="skip the reference step")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile one step per row and keep its N top ops by "
                    "self time (device time on CUDA)")  # fmt: skip
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    ap.add_argument("--reference-tf32", choices=("off", "cudnn-default"), default="off",
                    help="reference on CUDA: TF32 off, or PyTorch's default (cuDNN TF32 "
                    "convolutions, as the ports run)")  # fmt: skip
    ap.add_argument("--peak-seconds", type=float, default=2.0,
                    help="time for each peak measurement (start and end of the run)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="output (default benchmarks/results/throughput-<device>.json)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.resolutions is None:
        args.resolutions = "4,8,16,32,64,128,256,512,1024" if cuda else "4,8,16"
    if args.variants is None:
        args.variants = "fp32,tf32,bf16,channels_last" if cuda else "fp32"
    if args.warmup is None:
        args.warmup = 5 if cuda else 1
    if args.steps is None and cuda:
        args.steps = 30
    if args.repeats is None:
        args.repeats = 1 if cuda else 5
    return args


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], mem_label: str) -> None:
    print(
        f"{'res':>5} {'batch':>5} {'alpha':>5}  {'path:variant':<24} {'img/s':>9} {'ms/step':>9} "
        f"{'mem GiB':>8} {'GFLOP/img':>10} {'TFLOP/s':>8} {'%peak':>6} {'speedup':>7}"
    )
    for r in rows:
        name = f"{r['path']}:{r['variant']}"
        if r.get("error"):
            print(f"{r['resolution']:>5} {r['batch']:>5} {r['alpha']:>5}  {name:<24} {r['error']}")
            continue
        frac = r.get("fraction_of_peak")
        gflop = r["flops_per_img"] / 1e9 if r.get("flops_per_img") else None
        print(
            f"{r['resolution']:>5} {r['batch']:>5} {r['alpha']:>5}  {name:<24} "
            f"{r['img_per_s']:>9.2f} {r['ms_per_step']:>9.1f} {r['peak_mem_gib']:>8.2f} "
            f"{_fmt(gflop, '10.2f')} {_fmt(r.get('tflops'), '8.3f')} "
            f"{_fmt(frac * 100 if frac is not None else None, '6.1f')} "
            f"{_fmt(r.get('speedup_vs_reference'), '7.2f')}"
        )
    syncs = [(f"{r['path']}:{r['variant']}@{r['resolution']}", r["host_syncs_per_step"])
             for r in rows if r.get("host_syncs_per_step")]  # fmt: skip
    if syncs:
        print("host syncs per step: " + ", ".join(f"{k} {v.get('count', '?')}" for k, v in syncs))
    print(f"(memory: {mem_label})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = [int(r) for r in args.resolutions.split(",") if r]
    for r in resolutions:
        if r < 4 or r > 1024 or r & (r - 1):
            raise SystemExit(f"resolution {r} is not a power of two in [4, 1024]")
    alphas = [float(a) for a in args.alpha.split(",") if a]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        try:
            variant_settings(v)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
    notes: list[str] = []
    skipped: list[dict[str, str]] = []
    if device.type != "cuda":
        keep = []
        for v in variants:
            cuda_only = [t for t in v.split("+") if t in CUDA_ONLY_TOKENS]
            if cuda_only:
                reason = f"{'/'.join(cuda_only)} only act on CUDA (progan ignores them on a CPU)"
                skipped.append({"variant": v, "reason": reason})
                print(f"skipping variant {v}: {reason}")
            else:
                keep.append(v)
        variants = keep
        notes.append(
            "CPU run: not a GPU figure. TF32/bf16/channels_last variants are CUDA-only and skipped."
        )
    opts = Options(
        device=device,
        preset=args.preset,
        warmup=args.warmup,
        steps=args.steps,
        seconds=args.seconds,
        repeats=args.repeats,
        profile=args.profile,
        flops=not args.no_flops,
        reference=not args.no_reference,
        reference_tf32=args.reference_tf32,
        seed=args.seed,
    )
    started = datetime.now(timezone.utc)
    peak_detail = measure_peak(device, args.peak_seconds)
    peaks = {k: v["peak"] for k, v in peak_detail.items()}
    print(
        "peak TFLOP/s (matmul / conv3x3): "
        + ", ".join(f"{k} {v['matmul']:.3f} / {v['conv3x3']:.3f}" for k, v in peak_detail.items())
    )
    mem_label = PeakMemory(device).metric
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="progan-throughput-") as tmp:
        tmp_path = Path(tmp)
        for res in resolutions:
            sched = network_config(args.preset, res).schedule
            batch = args.batch or sched.minibatch.get(res, sched.minibatch_default)
            data = make_dataset(tmp_path, max(res, 8), batch)
            for alpha in alphas:
                if alpha < 1.0 and res == 4:
                    continue  # nothing fades in at 4x4
                new = measure_resolution(
                    opts, res, batch, alpha, variants, data, tmp_path / "run", peaks
                )
                rows += new
                print_table(new, mem_label)
    # Peak again at the end: the faster of the two is kept (other load lowers a measurement).
    for k, v in measure_peak(device, args.peak_seconds).items():
        for kind, value in v.items():
            peak_detail[k][kind] = max(peak_detail[k][kind], value)
        peaks[k] = peak_detail[k]["peak"]
    for row in rows:
        if row.get("tflops") and peaks.get(row["peak_key"]):
            row["fraction_of_peak"] = round(row["tflops"] / peaks[row["peak_key"]], 5)
    print()
    print(
        "peak TFLOP/s, best of start and end (matmul / conv3x3): "
        + ", ".join(f"{k} {v['matmul']:.3f} / {v['conv3x3']:.3f}" for k, v in peak_detail.items())
    )
    print_table(rows, mem_label)
    target = args.project_resolution
    if target is None:
        target = 1024 if args.preset != "tiny" else max(8, *resolutions)
    try:
        projection = project_run(rows, args.preset, target, args.batch)
    except Exception as exc:
        projection = {"resolution": target, "error": _error_text(exc), "paths": {}, "notes": []}
        print(f"projection failed: {projection['error']}")
    print(
        f"\nProjected time of a whole '{args.preset}' run to {target}x{target} "
        f"({projection.get('total_kimg', math.nan):.0f} kimg):"
    )
    for key, p in projection["paths"].items():
        print(f"  {key:<28} {p['hours']:10.2f} h")
    if projection.get("extrapolated_resolutions"):
        print(f"  extrapolated resolutions: {projection['extrapolated_resolutions']}")
    for note in projection["notes"]:
        print(f"  note: {note}")
    result = {
        "schema": SCHEMA,
        "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": _command_line(argv),
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "preset": args.preset,
        "warmup": args.warmup,
        "steps": args.steps,
        "seconds_per_run": None if args.steps else args.seconds,
        "repeats": args.repeats,
        "reported": "fastest of the repeats (img_per_s_repeats lists all)",
        "reference_tf32": args.reference_tf32 if device.type == "cuda" else None,
        "peak_tflops": {k: round(v, 4) for k, v in peaks.items()},
        "peak_detail": {k: {m: round(x, 4) for m, x in v.items()} for k, v in peak_detail.items()},
        "peak_method": PEAK_METHOD,
        "memory_metric": mem_label,
        "variants": variants,
        "skipped_variants": skipped,
        "notes": notes,
        "rows": rows,
        "projection": projection,
    }
    json_path = args.json or f"benchmarks/results/throughput-{_json_device(device)}.json"
    atomic_write_json(json_path, result)
    print(f"wrote {json_path}")
    return result


def _command_line(argv: list[str] | None) -> str:
    """The command as typed: ``python <script> <arguments>``."""
    if argv is None:
        return shlex.join(["python", *sys.argv])
    return shlex.join(["python", "benchmarks/throughput.py", *argv])


def _json_device(device: torch.device) -> str:
    return "cpu" if device.type != "cuda" else _slug(device_name(device))


if __name__ == "__main__":
    main()
