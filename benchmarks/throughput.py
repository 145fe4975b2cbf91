"""Training throughput: a plain fp32 reference step vs progan's real training step.

    python benchmarks/throughput.py [--preset paper|small|cpu|quickstart|tiny]
        [--resolutions 4,8,16,32]
        [--variants fp32,tf32,bf16,channels_last,explicit,compile,lazy-gp4 | issue16]
        [--batch N] [--alpha 1,0.5] [--warmup N] [--steps N | --seconds S] [--repeats N]
        [--profile N [--profile-at 128,256]] [--project-resolution 1024]
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
  ``fp32`` (TF32 off), ``tf32`` (progan's default), ``bf16`` (autocast), ``channels_last``
  (NHWC end to end), ``explicit`` (D's convolutions with the explicit double backward,
  ``conv_impl="explicit"``), ``compile`` (``TrainConfig.compile``: torch.compile of G and of the
  G step's D, never the penalty's D), ``compile_g`` (the whole of G wrapped in torch.compile)
  and ``lazy-gp4`` (the lazy penalty, every 4th D step with weight x4; not the paper's method);
  join them with ``+`` (``explicit+bf16+channels_last``). ``--variants issue16`` is the list
  of issue 16 (``bench_progan.ISSUE16_VARIANTS``: native and explicit in each precision and
  layout, ``explicit+compile``, ``explicit+bf16+lazy-gp4``). Every variant except ``fp32`` has
  TF32 on. TF32, bf16 and channels_last only act on CUDA and are skipped on a CPU. A variant
  that fails gives a row with its error instead of stopping the run. A ``lazy-gp4`` row's FLOPs
  per step are the mean over 4 steps, one of which computes the penalty.

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
affects every row alike. ``--profile N`` keeps the N top ops of one profiled step per row
(``--profile-at``: only at those resolutions). No
network access is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from progan.fileio import atomic_write_json

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # loaded by path (tests) rather than run as a script
    sys.path.insert(0, str(HERE))

# The parts (each readable and reusable alone): the reference step, progan's step, the device
# and FLOP measurements, one resolution's rows, the projection of a whole run. This file is
# the report and the command line; it re-exports the parts' public names.
from bench_device import (  # noqa: E402
    PEAK_METHOD,
    PeakMemory,
    count_flops,
    device_name,
    error_text,
    measure_peak,
    reference_flops_per_image,
    slug,
    synchronize,
)
from bench_progan import (  # noqa: E402
    CUDA_ONLY_TOKENS,
    ISSUE16_VARIANTS,
    TOKENS,
    ProganStep,
    make_dataset,
    make_trainer,
    network_config,
    variant_settings,
)
from bench_projection import data_rates_from_json, project_run  # noqa: E402
from bench_reference import REFERENCE_EMA_BETA, REFERENCE_LR, ReferenceStep  # noqa: E402
from bench_rows import Options, measure_resolution  # noqa: E402

__all__ = [
    "ISSUE16_VARIANTS",
    "REFERENCE_EMA_BETA",
    "REFERENCE_LR",
    "SCHEMA",
    "TOKENS",
    "PeakMemory",
    "ProganStep",
    "ReferenceStep",
    "count_flops",
    "data_rates_from_json",
    "expand_variants",
    "main",
    "make_dataset",
    "make_trainer",
    "network_config",
    "project_run",
    "reference_flops_per_image",
    "synchronize",
    "variant_settings",
]  # fmt: skip

SCHEMA = "progan-throughput/1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--preset", default="paper", choices=("paper", "small", "cpu", "quickstart", "tiny")
    )
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
    ap.add_argument("--profile-at", help="comma list: profile only the rows at these "
                    "resolutions (default: all)")  # fmt: skip
    ap.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    ap.add_argument("--reference-tf32", choices=("off", "cudnn-default"), default="off",
                    help="reference on CUDA: TF32 off, or PyTorch's default (cuDNN TF32 "
                    "convolutions, as the ports run)")  # fmt: skip
    ap.add_argument("--peak-seconds", type=float, default=2.0,
                    help="time for each peak measurement (start and end of the run)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data-rate",
        metavar="JSON",
        help="benchmarks/data_rate.py output: "
        "project each phase at min(step, data rate) and say which binds",
    )
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


def expand_variants(variants: list[str]) -> list[str]:
    """``issue16`` in a ``--variants`` list stands for ``ISSUE16_VARIANTS`` (no repeats)."""
    out: list[str] = []
    for v in variants:
        for name in ISSUE16_VARIANTS if v == "issue16" else (v,):
            if name not in out:
                out.append(name)
    return out


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
    variants = expand_variants(variants)
    profile_at = {int(r) for r in args.profile_at.split(",") if r} if args.profile_at else None
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
    json_path = args.json or f"benchmarks/results/throughput-{_json_device(device)}.json"
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
                res_opts = opts
                if profile_at is not None and res not in profile_at:
                    res_opts = dataclasses.replace(opts, profile=0)
                new = measure_resolution(
                    res_opts, res, batch, alpha, variants, data, tmp_path / "run", peaks
                )
                rows += new
                print_table(new, mem_label)
                # the rows so far, in case the run is stopped (the full JSON replaces them)
                atomic_write_json(json_path, {"schema": SCHEMA, "partial": True, "rows": rows})
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
        data_rates = data_rates_from_json(args.data_rate) if args.data_rate else None
        projection = project_run(rows, args.preset, target, args.batch, data_rates)
    except Exception as exc:
        projection = {"resolution": target, "error": error_text(exc), "paths": {}, "notes": []}
        print(f"projection failed: {projection['error']}")
    print(
        f"\nProjected time of a whole '{args.preset}' run to {target}x{target} "
        f"({projection.get('total_kimg', math.nan):.0f} kimg):"
    )
    for key, p in projection["paths"].items():
        binds = p.get("bound_by_resolution", {})
        data_bound = [r for r, b in binds.items() if b == "data"]
        where = f"  data-bound at {', '.join(data_bound)}" if data_bound else ""
        print(f"  {key:<28} {p['hours']:10.2f} h{where}")
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
    atomic_write_json(json_path, result)
    print(f"wrote {json_path}")
    return result


def _command_line(argv: list[str] | None) -> str:
    """The command as typed: ``python <script> <arguments>``."""
    if argv is None:
        return shlex.join(["python", *sys.argv])
    return shlex.join(["python", "benchmarks/throughput.py", *argv])


def _json_device(device: torch.device) -> str:
    return "cpu" if device.type != "cuda" else slug(device_name(device))


if __name__ == "__main__":
    main()
