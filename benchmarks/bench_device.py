"""Device measurements shared by the benchmarks: FLOP counting (``FlopCounterMode`` without
module hooks), host-sync counting, peak memory, the device's peak TFLOP/s per precision, the
device's name, and ``synchronize``. Used by ``throughput.py`` and ``scaling.py``."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import platform
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench_reference import ReferenceStep
from progan.config import NetworkConfig

PEAK_METHOD = (
    "faster of a square matmul (2048 on CPU, 8192 on CUDA) and a 512-channel 3x3 convolution, "
    "fastest 0.1 s window within --peak-seconds, best of the start and the end of the run"
)


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
        return {"error": error_text(exc)}
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


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def set_reference_precision(device: torch.device, reference_tf32: str) -> None:
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = reference_tf32 == "cudnn-default"
    torch.backends.cudnn.benchmark = False
