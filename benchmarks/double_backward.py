"""The gradient penalty's double backward: native vs explicit convolutions (issue 16).

One D step of WGAN-GP (``progan.losses.discriminator_loss``: D on reals, fakes and mixed
images, penalty through ``autograd.grad(create_graph=True)``, drift; then ``loss.backward()``)
on a fully grown progan ``Discriminator``, with random reals and fakes already on the device.
Variants (``--variants``), all with the same weights and inputs:

* ``baseline``: native ``F.conv2d``/``F.linear`` and ``F.avg_pool2d`` for the 2x2 downsample
  (progan before issue 16);
* ``native``: native convolutions, downsample with the broadcast backward (``nn/sampling.py``);
* ``explicit``: ``NetworkConfig.conv_impl="explicit"`` (``nn/conv_ops.py``) + that downsample.

For each case (``--cases widths:resolution:batch``) the script reports

* FLOPs of one step, counted with ``torch.utils.flop_counter.FlopCounterMode`` (module hooks
  replaced by a stub: they break ``autograd.grad``), total and by aten op;
* a ``torch.profiler`` profile of one step: the ``--top`` ops by self time (self CPU time on a
  CPU, self device time on CUDA), and the total time of the autograd nodes that matter here
  (``ConvolutionBackwardBackward0``, ``AvgPool2DBackward0``, ...), present or absent;
* the time per step (best and median of ``--repeats`` interleaved runs of ``--steps`` steps
  after ``--warmup``), images per second, and the speedup over the first variant;
* the difference of the loss, and the relative L2 difference of all of D's weight gradients
  together, from the first variant; under ``--amp bf16`` also from the first variant without
  autocast.

Widths: ``paper`` (512 feature maps up to 32x32, then 256, 128, ...), ``small`` (at most 256),
``narrow`` (at most 64: 64, 64, 64, 64, 32, 16 from 4x4 to 128x128), ``tiny`` (at most 32).

Examples::

    python benchmarks/double_backward.py --threads 1          # CPU default cases
    python benchmarks/double_backward.py --device cuda --json $OUT/double_backward.json
    python benchmarks/double_backward.py --device cuda --amp bf16 --channels-last --json ...

Writes JSON (``--json``, default ``benchmarks/results/double_backward-<device>.json``) with the
device, torch version, date and command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # loaded by path (tests) rather than run as a script
    sys.path.insert(0, str(HERE))

from bench_device import count_flops, device_name  # noqa: E402
from progan.config import LossConfig, NetworkConfig  # noqa: E402
from progan.losses import discriminator_loss  # noqa: E402
from progan.nn import Discriminator  # noqa: E402
from progan.nn import discriminator as disc_module  # noqa: E402
from progan.nn.layers import set_conv_impl  # noqa: E402

WIDTHS = {  # fmap_base, fmap_max
    "paper": (8192, 512),
    "small": (4096, 256),
    "narrow": (1024, 64),
    "tiny": (256, 32),
}
VARIANTS = ("baseline", "native", "explicit")
CPU_CASES = "paper:16:8,narrow:64:8,narrow:128:4"
CUDA_CASES = "paper:32:64,paper:64:32,paper:128:16,paper:256:16"
WATCHED_NODES = (
    "ConvolutionBackwardBackward0",
    "ConvolutionBackward0",
    "AvgPool2DBackward0",
    "AvgPool2DBackwardBackward0",
    "_Conv2dBackward",
    "_Conv2dInputGradBackward",
    "_Conv2dWeightGradBackward",
    "_BoxDown2xBackward",
)


# --------------------------------------------------------------------------------------------
# the step


def _avg_pool_downsample(x: torch.Tensor) -> torch.Tensor:
    """progan's downsample before issue 16: F.avg_pool2d with its own backward kernel."""
    return F.avg_pool2d(x, kernel_size=2)


@contextlib.contextmanager
def variant_context(D: Discriminator, variant: str):
    """Set D's convolution implementation and the downsample for ``variant``."""
    saved = disc_module.downsample2x
    set_conv_impl(D, "explicit" if variant == "explicit" else "native")
    if variant == "baseline":
        disc_module.downsample2x = _avg_pool_downsample
    try:
        yield
    finally:
        disc_module.downsample2x = saved
        set_conv_impl(D, "native")


class Case:
    """A fully grown D of the given widths at one resolution, with fixed inputs."""

    def __init__(
        self,
        spec: str,
        device: torch.device,
        seed: int = 0,
        amp: str = "none",
        channels_last: bool = False,
    ) -> None:
        widths, res, batch = spec.split(":")
        if widths not in WIDTHS:
            raise SystemExit(f"Error: unknown widths {widths!r}; choose from {', '.join(WIDTHS)}")
        self.spec, self.widths, self.resolution, self.batch = spec, widths, int(res), int(batch)
        base, fmax = WIDTHS[widths]
        self.net = NetworkConfig(
            resolution=max(8, self.resolution), fmap_base=base, fmap_max=fmax, latent_size=fmax
        )
        torch.manual_seed(seed)
        self.D = Discriminator(self.net).to(device)
        self.depth = int(torch.log2(torch.tensor(float(self.resolution))).item()) - 2
        gen = torch.Generator(device).manual_seed(seed)
        shape = (self.batch, 3, self.resolution, self.resolution)
        self.reals = torch.rand(shape, device=device, generator=gen) * 2 - 1
        self.fakes = torch.rand(shape, device=device, generator=gen) * 2 - 1
        self.mix = torch.rand(self.batch, 1, 1, 1, device=device, generator=gen)
        if channels_last:
            self.D = self.D.to(memory_format=torch.channels_last)
            self.reals = self.reals.contiguous(memory_format=torch.channels_last)
            self.fakes = self.fakes.contiguous(memory_format=torch.channels_last)
        self.device_type = device.type
        self.amp = amp
        self.loss_cfg = LossConfig()  # wgan-gp, lambda 10, drift 0.001

    def step(self) -> torch.Tensor:
        """One D step's loss and backward (gradients accumulate into D's .grad)."""
        with torch.autocast(self.device_type, torch.bfloat16, enabled=self.amp == "bf16"):
            loss, _ = discriminator_loss(
                self.loss_cfg,
                lambda x: self.D(x, self.depth, 1.0),
                self.reals,
                self.fakes,
                mix=self.mix,
            )
        loss.backward()
        return loss.detach()

    def grads(self, variant: str) -> tuple[float, list[torch.Tensor | None]]:
        self.D.zero_grad(set_to_none=True)
        with variant_context(self.D, variant):
            loss = self.step()
        out = [None if p.grad is None else p.grad.detach().clone() for p in self.D.parameters()]
        self.D.zero_grad(set_to_none=True)
        return float(loss), out


# --------------------------------------------------------------------------------------------
# measurements


def profile_step(fn: Callable[[], Any], device: torch.device, top: int) -> dict[str, Any]:
    """Top ops by self time and the watched autograd nodes' total time, for one call."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    on_dev = device.type == "cuda"

    def self_us(e) -> float:
        if on_dev:
            return float(getattr(e, "self_device_time_total", e.self_cuda_time_total))
        return float(e.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:top]
    top_ops = [
        {"op": e.key, "self_ms": self_us(e) / 1e3, "share": self_us(e) / total, "calls": e.count}
        for e in ranked
    ]
    nodes = {}
    for e in events:
        for name in WATCHED_NODES:
            if e.key == f"autograd::engine::evaluate_function: {name}":
                nodes[name] = {"calls": e.count, "cpu_total_ms": e.cpu_time_total / 1e3}
                if on_dev:
                    dev_total = getattr(e, "device_time_total", e.cuda_time_total)
                    nodes[name]["device_total_ms"] = dev_total / 1e3
    return {
        "ranked_by": "self device time" if on_dev else "self CPU time",
        "total_self_ms": total / 1e3,
        "top_ops": top_ops,
        "autograd_nodes": nodes,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fn: Callable[[], Any], device: torch.device, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, averaged over ``steps`` calls. On a shared
    CPU the process CPU time is the steadier figure (it leaves out time spent descheduled)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def _rel_l2(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> float:
    """||a - b|| / ||b|| over all of D's gradients together (inf if different ones exist)."""
    num = den = 0.0
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return float("inf")
        if x is not None:
            num += (x.double() - y.double()).square().sum().item()
            den += y.double().square().sum().item()
    return (num / den) ** 0.5 if den else float(num > 0)


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    variants = args.variants
    rows: dict[str, dict[str, Any]] = {v: {"variant": v} for v in variants}
    ref_loss, ref_grads = case.grads(variants[0])
    fp32_grads = None
    if case.amp != "none":  # also compare with the first variant without autocast
        amp, case.amp = case.amp, "none"
        fp32_grads = case.grads(variants[0])[1]
        case.amp = amp
    for v in variants:
        loss, grads = case.grads(v)
        rows[v]["loss"] = loss
        rows[v]["loss_abs_diff"] = abs(loss - ref_loss)
        rows[v]["grad_rel_l2"] = _rel_l2(grads, ref_grads)
        if fp32_grads is not None:
            rows[v]["grad_rel_l2_vs_fp32"] = _rel_l2(grads, fp32_grads)
        with variant_context(case.D, v):
            if not args.no_flops:
                total, by_op = count_flops(case.step)
                rows[v]["flops_per_step"] = total
                rows[v]["gflop_per_image"] = total / case.batch / 1e9
                rows[v]["flops_by_op"] = by_op
            for _ in range(args.warmup):
                case.step()
            if args.top > 0:
                rows[v]["profile"] = profile_step(case.step, device, args.top)
        case.D.zero_grad(set_to_none=True)
        rows[v]["seconds"], rows[v]["cpu_seconds"] = [], []
    for _ in range(args.repeats):  # interleaved: A B C A B C ...
        for v in variants:
            with variant_context(case.D, v):
                wall, cpu = time_steps(case.step, device, args.steps)
            rows[v]["seconds"].append(wall)
            rows[v]["cpu_seconds"].append(cpu)
            case.D.zero_grad(set_to_none=True)
    first = min(rows[variants[0]]["seconds"])
    first_cpu = min(rows[variants[0]]["cpu_seconds"])
    for v in variants:
        best = min(rows[v]["seconds"])
        rows[v]["ms_per_step_best"] = best * 1e3
        rows[v]["ms_per_step_median"] = statistics.median(rows[v]["seconds"]) * 1e3
        rows[v]["img_per_s"] = case.batch / best
        rows[v]["speedup"] = first / best
        rows[v]["cpu_ms_per_step_best"] = min(rows[v]["cpu_seconds"]) * 1e3
        rows[v]["cpu_speedup"] = first_cpu / min(rows[v]["cpu_seconds"])
    if device.type == "cuda":
        rows[variants[-1]]["note"] = "peak memory not separated per variant"
    return {
        "case": case.spec,
        "widths": case.widths,
        "resolution": case.resolution,
        "batch": case.batch,
        "feature_maps": [case.net.num_features(d) for d in range(case.depth + 1)],
        "rows": [rows[v] for v in variants],
    }


# --------------------------------------------------------------------------------------------
# report


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['case']}: D feature maps {result['feature_maps']} (4x4 first), "
        f"batch {result['batch']}"
    )
    print(
        "variant    ms/step best (median)   img/s   speedup  CPU ms/step  CPU speedup"
        "  GFLOP/img  loss diff  grad rel L2"
    )
    for r in result["rows"]:
        gf = f"{r['gflop_per_image']:9.3f}" if "gflop_per_image" in r else "        -"
        print(
            f"{r['variant']:<10} {r['ms_per_step_best']:9.1f} ({r['ms_per_step_median']:8.1f})"
            f" {r['img_per_s']:8.2f} {r['speedup']:8.3f}  {r['cpu_ms_per_step_best']:11.1f}"
            f"  {r['cpu_speedup']:11.3f}  {gf}  {r['loss_abs_diff']:9.2e}"
            f"  {r['grad_rel_l2']:9.2e}"
            + (f"  (vs fp32 {r['grad_rel_l2_vs_fp32']:.2e})" if "grad_rel_l2_vs_fp32" in r else "")
        )
    for r in result["rows"]:
        prof = r.get("profile")
        if not prof:
            continue
        print(
            f"  {r['variant']}: top ops by {prof['ranked_by']} "
            f"(total {prof['total_self_ms']:.1f} ms)"
        )
        for op in prof["top_ops"]:
            print(
                f"    {op['share'] * 100:5.1f}%  {op['self_ms']:9.2f} ms  {op['calls']:5d}x  "
                f"{op['op']}"
            )
        nodes = ", ".join(
            f"{k} x{v['calls']} {v.get('device_total_ms', v['cpu_total_ms']):.1f} ms"
            for k, v in prof["autograd_nodes"].items()
        )
        print(f"    autograd nodes: {nodes or 'none watched'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    p.add_argument(
        "--cases", help=f"widths:resolution:batch,... [CPU {CPU_CASES}; CUDA {CUDA_CASES}]"
    )
    p.add_argument("--variants", default=",".join(VARIANTS), help="[baseline,native,explicit]")
    p.add_argument("--steps", type=int, help="timed steps per run [CPU 2, CUDA 20]")
    p.add_argument("--warmup", type=int, help="untimed steps first [CPU 1, CUDA 5]")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per variant [3]")
    p.add_argument("--top", type=int, default=10, help="profiled top ops per variant (0: none)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 (default off: fp32)")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast [none]")
    p.add_argument("--channels-last", action="store_true", help="D and images in NHWC")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--json", help="output path [benchmarks/results/double_backward-<dev>.json]")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("Error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    on_cuda = device.type == "cuda"
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        print(f"Error: unknown variant(s) {bad}; choose from {VARIANTS}", file=sys.stderr)
        return 2
    args.steps = args.steps or (20 if on_cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cudnn.benchmark = True
    cases = (args.cases or (CUDA_CASES if on_cuda else CPU_CASES)).split(",")
    started = dt.datetime.now(dt.timezone.utc)
    out = {
        "benchmark": "double_backward",
        "date_utc": started.isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/double_backward.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast"
        if args.amp == "bf16"
        else (("tf32" if args.tf32 else "fp32") if on_cuda else "fp32"),
        "channels_last": args.channels_last,
        "step": "one D step of WGAN-GP (lambda 10, drift 0.001): D on reals, fakes and mixed "
        "images, penalty via autograd.grad(create_graph=True), loss.backward(); no optimizer",
        "variants": args.variants,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": [],
    }
    print(
        f"{out['device_name']} ({device.type}), torch {torch.__version__}, threads {out['threads']}"
    )
    for spec in cases:
        case = Case(spec.strip(), device, amp=args.amp, channels_last=args.channels_last)
        result = run_case(case, args, device)
        print_report(result)
        out["results"].append(result)
    out["wall_s"] = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    path = Path(args.json or f"benchmarks/results/double_backward-{device.type}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
