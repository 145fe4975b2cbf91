"""Command-line front ends of the tools: ``progan video``, ``timelapse``, ``neighbors``, ``grid``
and ``progan dataset align-faces``.

Heavy or optional modules (the generator loader, datasets, Inception) are imported inside the
command functions, so ``progan --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from progan.cli_options import add_device, add_inception, add_quiet, add_seed
from progan.errors import ConfigError

__all__ = ["add_commands", "parse_grid_size"]


def parse_grid_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (columns x rows) -> (W, H); a single number N means NxN."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a grid size like 4x3, got {text!r}")
    return values[0], values[1]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# Command functions (each returns the process exit status)


def cmd_video(args: argparse.Namespace) -> int:
    from progan.generate import load_generator
    from progan.tools.video import make_interpolation_video

    device = _device(args.device)
    G = load_generator(args.checkpoint, device)
    out = make_interpolation_video(
        G,
        args.out,
        seconds=args.seconds,
        fps=args.fps,
        grid=args.grid,
        seed=args.seed,
        resolution=args.resolution,
        smoothing_sec=args.smoothing,
        labels=args.label,
        device=device,
        batch_size=args.batch_size,
    )
    print(f"Wrote {out}")
    return 0


def cmd_timelapse(args: argparse.Namespace) -> int:
    from progan.tools.video import make_timelapse

    out = args.out if args.out is not None else Path(args.run_dir) / "timelapse.mp4"
    out = make_timelapse(
        args.run_dir,
        out,
        fps=args.fps,
        frame_seconds=args.frame_seconds,
        hold_last_seconds=args.hold,
    )
    print(f"Wrote {out}")
    return 0


def cmd_neighbors(args: argparse.Namespace) -> int:
    from progan.data.dataset import ImageDataset
    from progan.generate import generate_images, load_generator
    from progan.tools.grid import save_image_grid
    from progan.tools.neighbors import (
        find_nearest_neighbors,
        inception_features,
        neighbor_grid,
        pixel_features,
    )

    device = _device(args.device)
    G = load_generator(args.checkpoint, device)
    seeds = list(range(args.seed, args.seed + args.num))
    labels = None if args.label is None else [args.label] * len(seeds)
    fakes = generate_images(G, seeds, labels=labels, device=device)
    dataset = ImageDataset(args.dataset)
    if args.features == "pixels":
        feature_fn = pixel_features
    else:
        feature_fn = inception_features(args.inception, device)
    indices, distances = find_nearest_neighbors(
        fakes,
        dataset,
        args.k,
        feature_fn=feature_fn,
        crop=args.crop,
        batch_size=args.batch_size,
        max_images=args.max_images,
    )
    out = save_image_grid(
        neighbor_grid(fakes, dataset, indices), args.out, cols=indices.shape[1] + 1, pad=args.pad
    )
    for seed, row, dist in zip(seeds, indices, distances, strict=True):
        pairs = ", ".join(f"#{i} ({d:.4g})" for i, d in zip(row, dist, strict=True))
        print(f"seed {seed}: {pairs}")
    print(f"Wrote {out}")
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    from progan.data.dataset import ImageDataset
    from progan.tools.grid import dataset_grid, save_image_grid

    dataset = ImageDataset(args.dataset)
    images, cols = dataset_grid(
        dataset,
        num=args.num,
        seed=args.seed,
        rows_per_label=args.rows_per_label,
        per_row=args.per_row,
    )
    out = save_image_grid(images, args.out, cols=args.cols or cols, pad=args.pad)
    print(f"Wrote {out}")
    return 0


def cmd_align_faces(args: argparse.Namespace) -> int:
    from progan.tools.align import align_faces_to_dataset

    if args.resolution < 4 or args.resolution & (args.resolution - 1):
        raise ConfigError(f"--resolution must be a power of two >= 4, got {args.resolution}")
    dest, written, missing = align_faces_to_dataset(
        args.images,
        args.landmarks,
        args.dest,
        resolution=args.resolution,
        max_images=args.max_images,
        progress=not args.quiet,
    )
    note = f" ({missing} listed images not found, skipped)" if missing else ""
    print(f"Wrote {written} aligned faces to {dest}{note}")
    return 0


# ----------------------------------------------------------------------------------------------
# Parsers


def _add_device(p: argparse.ArgumentParser) -> None:
    add_device(p, "cpu, cuda, cuda:1, ... (default: auto)")


def add_commands(subparsers, dataset_subparsers) -> None:
    """Register ``video``, ``timelapse``, ``neighbors`` and ``grid`` on the top-level
    sub-parsers and ``align-faces`` on the ``progan dataset`` sub-parsers."""
    p = subparsers.add_parser(
        "video",
        help="latent-space interpolation video (MP4)",
        description="Render a looping video of smooth random walks through latent space "
        "(paper Section 6.3): per-frame Gaussian latents blurred over time.",
    )
    p.add_argument("checkpoint", help="generator snapshot, run folder or official .pkl")
    p.add_argument("--out", default="interp.mp4", help="output MP4 (default: interp.mp4)")
    p.add_argument("--seconds", type=float, default=10.0, help="length in seconds (default 10)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--grid", type=parse_grid_size, default=(1, 1), help="WxH streams (default 1x1)")
    add_seed(p, "random seed (default 0)")
    p.add_argument("--resolution", type=int, default=None, help="pixel size of each cell")
    p.add_argument(
        "--smoothing",
        type=float,
        default=0.75,
        help="temporal Gaussian sigma in seconds (default 0.75, as in the paper)",
    )
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class for conditional generators [balanced: stream i shows class i mod number "
        "of classes, the rule of `progan generate` and `metrics` with stream i as seed i]",
    )
    p.add_argument("--batch-size", type=int, default=16)
    _add_device(p)
    p.set_defaults(func=cmd_video)

    p = subparsers.add_parser(
        "timelapse",
        help="video of a run's snapshot grids over training",
        description="Turn a run's fakes-*.png grids into an MP4 labelled with resolution and kimg.",
    )
    p.add_argument("run_dir", help="training run folder")
    p.add_argument("--out", default=None, help="output MP4 (default: RUN_DIR/timelapse.mp4)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument(
        "--frame-seconds", type=float, default=0.25, help="seconds per snapshot (default 0.25)"
    )
    p.add_argument(
        "--hold", type=float, default=2.0, help="extra seconds on the last snapshot (default 2)"
    )
    p.set_defaults(func=cmd_timelapse)

    p = subparsers.add_parser(
        "neighbors",
        help="nearest training images of generated images (paper Figure 10)",
        description="Each output row: a generated image, then its k nearest training images.",
    )
    p.add_argument("checkpoint", help="generator snapshot, run folder or official .pkl")
    p.add_argument("dataset", help="progan dataset (zip or folder)")
    p.add_argument("--out", default="neighbors.png", help="output PNG (default neighbors.png)")
    p.add_argument("--num", type=int, default=8, help="generated images (rows, default 8)")
    p.add_argument("--k", type=int, default=5, help="neighbours per image (default 5)")
    add_seed(p, "first seed; seeds SEED..SEED+NUM-1")
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class for conditional generators [balanced: seed mod number of classes]",
    )
    p.add_argument(
        "--features",
        choices=("inception", "pixels"),
        default="inception",
        help="feature space for L2 distances (default inception pool features)",
    )
    p.add_argument(
        "--crop", type=_fraction, default=None, help="compare a centre crop (fraction of side)"
    )
    add_inception(p)
    p.add_argument("--max-images", type=int, default=None, help="search only the first N")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--pad", type=int, default=2, help="pixels between cells (default 2)")
    _add_device(p)
    p.set_defaults(func=cmd_neighbors)

    p = subparsers.add_parser(
        "grid",
        help="grid of real dataset images (for side-by-side comparison)",
        description="Save a PNG grid of random real images, optionally one row per class.",
    )
    p.add_argument("dataset", help="progan dataset (zip or folder)")
    p.add_argument("--out", default="reals.png", help="output PNG (default reals.png)")
    p.add_argument("--num", type=int, default=64, help="images (default 64)")
    p.add_argument("--cols", type=int, default=None, help="images per row (default: square)")
    add_seed(p)
    p.add_argument(
        "--rows-per-label", action="store_true", help="one row per class (labelled datasets)"
    )
    p.add_argument("--per-row", type=int, default=8, help="images per class row (default 8)")
    p.add_argument("--pad", type=int, default=0, help="pixels between cells (default 0)")
    p.set_defaults(func=cmd_grid)

    p = dataset_subparsers.add_parser(
        "align-faces",
        help="CelebA-HQ-style aligned face crops from landmarks",
        description="Crop oriented, eye-levelled faces as in the paper's CelebA-HQ (Appendix "
        "C) from a CelebA list_landmarks_celeba.txt file; the paper's JPEG-artifact removal "
        "and super-resolution networks are not applied.",
    )
    p.add_argument("images", help="folder with the (unaligned) images, e.g. img_celeba")
    p.add_argument("landmarks", help="list_landmarks_celeba.txt")
    p.add_argument("dest", help="output dataset (.zip or new folder)")
    p.add_argument("--resolution", type=int, default=1024, help="power of two (default 1024)")
    p.add_argument("--max-images", type=int, default=None)
    add_quiet(p, "no progress bar")
    p.set_defaults(func=cmd_align_faces)
