"""``progan dataset create``, ``info`` and ``prepare`` (argparse sub-commands)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from progan.cli_options import add_json, add_seed
from progan.data.create import create_dataset, dataset_info
from progan.data.images import TRANSFORMS
from progan.data.sources import SOURCE_TYPES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_create(args: argparse.Namespace) -> int:
    summary = create_dataset(
        args.source,
        args.dest,
        args.resolution,
        transform=args.transform,
        max_images=args.max_images,
        skip_bad=args.skip_bad,
        source_type=args.source_type,
        channels=args.channels,
        progress=not args.no_progress,
        seed=args.seed,
        labels_from_folders=args.labels_from_folders,
        workers=args.workers,
    )
    print(summary)
    return 0


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for :func:`progan.data.create.dataset_info`'s dict."""
    r = info["resolution"]
    lines = [
        f"path:        {info['path']}",
        f"images:      {info['count']}",
        f"resolution:  {r}x{r}",
        f"channels:    {info['channels']}",
        f"size:        {info['size_bytes'] / 2**20:.1f} MiB",
        f"source:      {info.get('source') or '?'}",
        f"created:     {info.get('created') or '?'}",
    ]
    if info["labeled"]:
        lines.append(f"labels:      {info['num_classes']} classes")
        for name, count in info["class_counts"].items():
            lines.append(f"  {name}: {count}")
    else:
        lines.append("labels:      none")
    lv = info.get("levels")
    if lv:
        sizes = ", ".join(f"{r}x{r}" for r in lv["resolutions"]) or "none"
        lines.append(f"levels:      {sizes}, {lv['bytes'] / 2**20:.1f} MiB in {lv['path']}")
    else:
        lines.append("levels:      not prepared (`progan dataset prepare`)")
    return "\n".join(lines)


def run_prepare(args: argparse.Namespace) -> int:
    from progan.data.dataset import ImageDataset
    from progan.data.levels import prepare_levels

    dataset = ImageDataset(args.dest)
    t0 = time.perf_counter()
    store = prepare_levels(
        dataset,
        max_bytes=int(args.max_gib * 2**30),
        workers=args.workers,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - t0
    levels = ", ".join(f"{r}x{r}" for r in store.resolutions) or "none (budget too small)"
    print(
        f"Wrote the levels of {dataset.path} to {store.path}: {levels}, "
        f"{store.nbytes() / 2**20:.1f} MiB, in {seconds:.1f} s "
        f"({1000 * seconds / len(dataset):.1f} s per 1,000 images)"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = dataset_info(args.dest)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def add_commands(dataset_subparsers: argparse._SubParsersAction) -> None:
    """Register ``create``, ``prepare`` and ``info`` under ``progan dataset``."""
    p = dataset_subparsers.add_parser(
        "create",
        help="convert images (folder, zip, CIFAR-10, MNIST, LSUN, CelebA, synthetic:shapes) "
        "into a progan dataset",
        description="Convert a source into a progan dataset (a zip of square PNGs plus "
        "dataset.json). SOURCE is a folder of images, a zip of images, cifar-10-batches-py "
        "(or its .tar.gz), an MNIST/Fashion-MNIST idx folder, an LSUN LMDB folder, CelebA "
        "img_align_celeba, or synthetic:shapes.",
    )
    p.add_argument("source", metavar="SOURCE", help="what to convert (type auto-detected)")
    p.add_argument("dest", metavar="DEST", help="output: a .zip file or a new folder")
    p.add_argument(
        "--resolution",
        type=_positive_int,
        default=None,
        help="output size, a power of two (default: the largest power of two that fits the "
        "first image)",
    )
    p.add_argument("--max-images", type=_positive_int, default=None, help="stop after N images")
    p.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default="center-crop",
        help="how non-square images become square (default: center-crop)",
    )
    p.add_argument("--source-type", choices=SOURCE_TYPES, default=None, help="override detection")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable or too small images (and list them) instead of failing",
    )
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="convert every image")
    add_seed(p, "seed of synthetic sources (default 0)")
    p.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="label each image by its class folder (<class>/<image>, e.g. CIFAR-10 as PNG "
        "folders); classes in sorted order of the folder names",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that resize and encode (default: all usable cores); same output bytes",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_create)

    p = dataset_subparsers.add_parser(
        "prepare",
        help="write the dataset's lower resolutions once (fast low-resolution phases)",
        description="Write every lower resolution of the dataset's images (4x4, 8x8, ...) as "
        "raw uint8 arrays beside it (DEST.levels/), so that training reads a phase's reals "
        "without decoding the full-size PNGs. Training makes them on first use when the "
        "dataset is too large to cache; this command does it ahead of time with all cores.",
    )
    p.add_argument("dest", metavar="DEST", help="a progan dataset (zip or folder)")
    p.add_argument(
        "--max-gib",
        type=float,
        default=4.0,
        help="store levels from 4x4 up while their total stays within this (default 4 GiB); "
        "higher ones are decoded from the dataset during training",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="processes (default: all usable cores)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)

    p = dataset_subparsers.add_parser("info", help="describe a progan dataset")
    p.add_argument("dest", metavar="DEST", help="a progan dataset (zip or folder)")
    add_json(p, "print JSON")
    p.set_defaults(func=run_info)
