"""``progan metrics``: evaluate a checkpoint against a dataset, or two datasets.

progan metrics CHECKPOINT --data DEST --metrics swd,ms-ssim,fid,is [--num-images N] [--json F]
progan metrics --data A --against B --metrics swd,fid

Under ``torchrun --nproc_per_node=N -m progan metrics ...`` the N processes share the work
(each evaluates a block of the images on its own GPU; see ``progan.metrics.parallel``) and
rank 0 prints and writes the results.

A snapshot taken before the network was fully grown is evaluated at the full resolution, its
images upscaled by nearest neighbour (as the official code does); the output says so and the
JSON has ``"upscaled_from": R``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from progan.cli_options import (
    add_device,
    add_fid_preprocess,
    add_inception,
    add_json,
    add_quiet,
    add_seed,
)
from progan.errors import ConfigError

if TYPE_CHECKING:
    from progan.train.distributed import Dist

__all__ = ["add_command", "format_table", "run"]


def add_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``metrics`` sub-command (its ``func`` is ``run``)."""
    p = subparsers.add_parser(
        "metrics",
        help="compute SWD, MS-SSIM, FID and Inception Score",
        description="Evaluate a generator checkpoint against a dataset (or a dataset against "
        "another with --against). Prints a table; --json writes the numbers.",
    )
    p.add_argument("checkpoint", nargs="?", help="snapshot, run folder or official .pkl")
    p.add_argument(
        "--raw",
        action="store_true",
        help="evaluate the raw generator saved beside the snapshot (raw-snapshot-*), not its "
        "moving average",
    )
    p.add_argument("--data", required=True, help="reference (real) dataset: zip or folder")
    p.add_argument("--against", help="second dataset evaluated instead of a checkpoint")
    p.add_argument("--metrics", default="swd,ms-ssim,fid,is", help="comma-separated list")
    p.add_argument(
        "--num-images",
        "--num",
        dest="num",
        type=int,
        help="images per metric (default: each metric's own); under torchrun spell it "
        "--num-images (torchrun reads --num as its own --numa-binding)",
    )
    p.add_argument(
        "--num-real",
        type=int,
        help="real images for the FID statistics (default: as many as the evaluated side, "
        "capped by the dataset), e.g. 50000 against CIFAR-10's 10000 test images",
    )
    add_json(p, "write the results to this JSON file", to_file=True)
    add_device(p, "torch device (default: cuda when available)", default=None)
    p.add_argument("--batch-size", type=int, default=64)
    add_seed(p, "sampling seed (default 0)")
    add_inception(
        p,
        "FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or "
        "NVIDIA's default_1.pt (FID only) [looked up, see README]",
    )
    add_fid_preprocess(p)
    p.add_argument("--cache-dir", help="folder for cached dataset statistics")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--fid-method", choices=["eigh", "sqrtm"], default="eigh")
    add_quiet(p)
    p.set_defaults(func=run)
    return p


_NOT_IN_TABLE = ("fake", "real", "upscaled_from")  # reported beside the table


def format_table(results: dict[str, Any]) -> str:
    """Human-readable lines: one per metric value."""
    lines = []
    for name, value in results.items():
        if name in ("num_images", "num_real_images", "seconds", "device"):
            continue
        n = results.get("num_images", {}).get(name, "")
        n_real = results.get("num_real_images", {}).get(name)
        if n_real is not None and n_real != n:
            n = f"{n} vs {n_real} real"
        if isinstance(value, dict):
            for sub, v in value.items():
                lines.append(f"{name + ' ' + sub:<16} {v:12.4f}   ({n} images)")
        else:
            lines.append(f"{name:<16} {value:12.4f}   ({n} images)")
    lines.append(f"{'seconds':<16} {results['seconds']:12.1f}   on {results['device']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``progan metrics``; returns the exit status."""
    from progan.train.distributed import run_as_rank

    if (args.checkpoint is None) == (args.against is None):
        raise ConfigError("give either a CHECKPOINT or --against DATASET (not both)")
    return run_as_rank(lambda comm: _evaluate_and_report(args, comm))


def _evaluate_and_report(args: argparse.Namespace, comm: Dist | None) -> int:
    """Evaluate as ``args`` say (``comm``: the ranks under torchrun); rank 0 reports."""
    import torch

    from progan.fileio import atomic_write_json
    from progan.metrics.api import evaluate
    from progan.metrics.sources import DatasetSource, GeneratorSource

    if comm is not None:
        device = str(comm.device_for(args.device or "auto"))
    else:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    real = DatasetSource(args.data, seed=args.seed)
    if args.against is not None:
        fake = DatasetSource(args.against, seed=args.seed + 1)
    else:
        from progan.generate import load_generator

        # --raw: the raw snapshot beside the chosen one, or an official pickle's G
        checkpoint = args.checkpoint
        if args.raw:
            checkpoint = load_generator(checkpoint, device, raw=True)
        fake = GeneratorSource(checkpoint, device=device)
    results = evaluate(
        args.metrics,
        fake,
        real,
        args.num,
        device=device,
        batch_size=args.batch_size,
        seed=args.seed,
        inception_path=args.inception,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        fid_method=args.fid_method,
        fid_preprocess=args.fid_preprocess,
        progress=not args.quiet,
        comm=comm,
        num_real=args.num_real,
    )
    if comm is not None and comm.rank != 0:
        return 0
    results["fake"] = fake.name
    results["real"] = real.name
    upscaled_from = getattr(fake, "upscaled_from", None)
    if upscaled_from:
        results["upscaled_from"] = upscaled_from
    print(format_table({k: v for k, v in results.items() if k not in _NOT_IN_TABLE}))
    if upscaled_from:
        r = fake.resolution
        print(
            f"(the snapshot is not fully grown: its {upscaled_from}x{upscaled_from} images were "
            f"upscaled by nearest neighbour to {r}x{r}, as the official code evaluates them)"
        )
    if args.json:
        atomic_write_json(args.json, results)
    return 0
