"""``progan project IMAGES... --network CHECKPOINT``: the command over
:func:`progan.tools.project.project_images` and :mod:`progan.tools.project_io`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from progan.cli_options import add_device, add_inception, add_quiet, add_seed
from progan.errors import ProganError

__all__ = ["add_command", "cmd_project"]


def add_command(subparsers) -> None:
    """Register ``progan project``."""
    p = subparsers.add_parser(
        "project",
        help="find latents that reproduce real images",
        description="Project real images into a generator's latent space: Adam on z (kept on "
        "the latents' sphere) from several random starts, loss = pixel MSE + an early-layer "
        "FID-Inception perceptual distance. Images are centre-cropped and resized to the "
        "network's resolution as `progan dataset create` does. Writes per image NAME: "
        "NAME-latent.safetensors, NAME-compare.png (target | reconstruction), NAME-loss.json "
        "(per step), optionally NAME-optimisation.mp4; and projection.json.",
    )
    p.add_argument("images", nargs="+", help="image files, folders or zips of images, datasets")
    p.add_argument(
        "--network", required=True, help="generator snapshot, run folder or official .pkl"
    )
    p.add_argument("--outdir", default="projection", help="output folder [projection]")
    p.add_argument("--steps", type=int, default=300, help="Adam steps per image [300]")
    p.add_argument("--starts", type=int, default=4, help="random starts per image [4]")
    p.add_argument(
        "--select-step",
        type=int,
        default=50,
        help="step after which each image keeps its best start only [50]",
    )
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate [0.1]")
    p.add_argument("--pixel-weight", type=float, default=1.0, help="weight of the MSE [1]")
    p.add_argument(
        "--perceptual-weight",
        type=float,
        default=1.0,
        help="weight of the perceptual distance; 0 = pixels only, no Inception [1]",
    )
    p.add_argument(
        "--perceptual-size",
        type=int,
        default=96,
        help="pixels the images are resized to for the perceptual network [96]",
    )
    p.add_argument("--max-images", type=int, help="project at most this many images")
    p.add_argument("--batch-size", type=int, default=25, help="images optimised together [25]")
    p.add_argument(
        "--label",
        type=int,
        help="class of every target (conditional generators) [required for them]",
    )
    p.add_argument("--video-fps", type=float, default=0.0, help="write optimisation videos")
    add_seed(p, "seed of the random starts [0]")
    add_inception(p)
    add_device(p)
    add_quiet(p)
    p.set_defaults(func=cmd_project)


def cmd_project(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from progan.fileio import atomic_write_json
    from progan.generate import load_generator
    from progan.tools.perceptual import PerceptualDistance
    from progan.tools.project import native_targets, project_images, to_float
    from progan.tools.project_io import load_targets, write_projection
    from progan.train.trainer import resolve_device

    if args.steps < 1 or args.starts < 1 or args.batch_size < 1:
        raise ProganError("--steps, --starts and --batch-size must be >= 1")
    device = resolve_device(args.device)
    G = load_generator(args.network, device)
    if G.label_size and args.label is None:
        raise ProganError("this generator is conditional: give the targets' class with --label")
    if not G.label_size and args.label is not None:
        raise ProganError("this generator is unconditional: --label does not apply")
    names, targets = load_targets(args.images, G.resolution, G.channels, args.max_images)
    perc = None
    if args.perceptual_weight > 0:
        perc = PerceptualDistance(args.inception, device, input_size=args.perceptual_size)
    records = []
    start_time = time.perf_counter()
    total = len(names) * args.steps
    with tqdm(total=total, unit="step", disable=args.quiet, desc="project") as bar:
        for lo in range(0, len(names), args.batch_size):
            batch = targets[lo : lo + args.batch_size]
            n_batch = len(batch)
            labels = None
            if G.label_size:
                labels = torch.full((len(batch),), args.label, dtype=torch.int64)
            result = project_images(
                G,
                batch,
                perc,
                labels,
                steps=args.steps,
                starts=args.starts,
                select_step=args.select_step,
                lr=args.lr,
                pixel_weight=args.pixel_weight,
                perceptual_weight=args.perceptual_weight,
                seed=args.seed + lo,
                frame_every=max(1, args.steps // 100) if args.video_fps > 0 else 0,
                device=device,
                progress=lambda _step, n=n_batch: bar.update(n),
            )
            final = None
            if perc is not None:
                with torch.no_grad():
                    shown = to_float(result.images).to(device)
                    final = perc(shown, native_targets(batch, shown.shape[-1]).to(device)).cpu()
            records += write_projection(
                args.outdir,
                names[lo : lo + args.batch_size],
                batch,
                result,
                args.network,
                labels,
                final,
                args.video_fps,
            )
    atomic_write_json(Path(args.outdir) / "projection.json", records)
    seconds = time.perf_counter() - start_time
    mean_psnr = sum(r["psnr_db"] for r in records) / len(records)
    print(f"Projected {len(records)} images in {seconds:.1f} s: mean PSNR {mean_psnr:.2f} dB")
    print(f"Wrote {args.outdir}")
    return 0
