"""How well `progan project` reconstructs held-out faces, against two yardsticks.

Projects the first ``--num`` images of a test dataset with a generator trained on a separate
training dataset and reports, per reconstruction, PSNR (uint8, peak 255) and the perceptual
distance of :mod:`progan.tools.perceptual` (the one the projection optimises), against

* the nearest training image by the same measure (max PSNR over the training set; min
  perceptual distance over it), i.e. what memorising the training set would give;
* the best of ``--samples`` random samples of the generator (seeds 0..samples-1) by the
  same measure, i.e. what picking instead of optimising gives.

Writes a JSON of the numbers and a grid: targets, projections, nearest training images (by
perceptual distance), best random samples (by perceptual distance), a row each.

    python benchmarks/projection_quality.py --network RUN/snapshot-....safetensors \
        --train celeba32-train.zip --test celeba32-test.zip --num 100 \
        --json benchmarks/results/projection-celeba32-cpu.json --grid docs/results/x.png

``--raw-g STATE.pt`` projects with the raw (non-EMA) generator of a training state instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from progan.data.dataset import ImageDataset
from progan.generate import generate_images, load_generator, upscale_nearest
from progan.tools.grid import make_grid, write_png
from progan.tools.perceptual import PerceptualDistance
from progan.tools.project import project_images, psnr, to_float


def _dataset_images(path: str, count: int | None = None) -> torch.Tensor:
    ds = ImageDataset(path)
    n = len(ds) if count is None else min(count, len(ds))
    return torch.from_numpy(np.stack([ds.read_image(i) for i in range(n)]))


def _raw_generator(G, state_path: str):
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    G.load_state_dict(state["G"], strict=True)
    return G


def _best_by_pixels(targets: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target: (max PSNR over ``pool``, its index)."""
    t = targets.flatten(1).double()
    best = torch.full((len(t),), float("inf"), dtype=torch.float64)
    index = torch.zeros(len(t), dtype=torch.int64)
    for lo in range(0, len(pool), 500):
        chunk = pool[lo : lo + 500].flatten(1).double()
        mse = torch.cdist(t, chunk).square() / t.shape[1]
        value, where = mse.min(1)
        better = value < best
        best[better], index[better] = value[better], where[better] + lo
    return 10 * torch.log10(255.0**2 / best), index


def _best_by_perceptual(
    target_feats: torch.Tensor, pool: torch.Tensor, perc: PerceptualDistance
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target: (min perceptual distance over ``pool``, its index), via flat features."""
    best = torch.full((len(target_feats),), float("inf"))
    index = torch.zeros(len(target_feats), dtype=torch.int64)
    for lo in range(0, len(pool), 200):
        feats = perc.flat_features(to_float(pool[lo : lo + 200]))
        dist = torch.cdist(target_feats, feats).square()
        value, where = dist.min(1)
        better = value < best
        best[better], index[better] = value[better], where[better] + lo
    return best, index


def _summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(v.median())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", required=True)
    ap.add_argument("--raw-g", help="training state whose raw G to use instead of the EMA")
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--starts", type=int, default=4)
    ap.add_argument("--select-step", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--grid-columns", type=int, default=16)
    ap.add_argument("--json", required=True)
    ap.add_argument("--grid", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    G = load_generator(args.network)
    if args.raw_g:
        G = _raw_generator(G, args.raw_g)
    if G.default_depth != G.max_depth:
        print(f"warning: snapshot at depth {G.default_depth} of {G.max_depth}")
    perc = PerceptualDistance()
    targets = _dataset_images(args.test, args.num)
    timing = {}
    start = time.perf_counter()
    recon, curves = [], []
    for lo in range(0, len(targets), args.batch_size):
        result = project_images(
            G,
            targets[lo : lo + args.batch_size],
            perc,
            steps=args.steps,
            starts=args.starts,
            select_step=args.select_step,
            seed=lo,
        )
        recon.append(result.images)
        curves.append(result.loss)
        print(f"projected {lo + len(result.images)} images, {time.perf_counter() - start:.0f} s")
    recon_t = upscale_nearest(torch.cat(recon), targets.shape[-1])
    timing["projection_s"] = time.perf_counter() - start
    with torch.no_grad():
        target_feats = perc.flat_features(to_float(targets))
        proj_perc = torch.cdist(target_feats, perc.flat_features(to_float(recon_t))).square()
        proj_perc = proj_perc.diagonal()
    proj_psnr = psnr(recon_t, targets)

    start = time.perf_counter()
    train = _dataset_images(args.train)
    train_psnr, train_pix_idx = _best_by_pixels(targets, train)
    train_perc, train_perc_idx = _best_by_perceptual(target_feats, train, perc)
    timing["nearest_training_s"] = time.perf_counter() - start
    start = time.perf_counter()
    samples = generate_images(G, list(range(args.samples)))
    samples = upscale_nearest(samples, targets.shape[-1])
    rand_psnr, _ = _best_by_pixels(targets, samples)
    rand_perc, rand_perc_idx = _best_by_perceptual(target_feats, samples, perc)
    timing["random_samples_s"] = time.perf_counter() - start

    cols = min(args.grid_columns, len(targets))
    rows = [
        targets[:cols],
        recon_t[:cols],
        train[train_perc_idx[:cols]],
        samples[rand_perc_idx[:cols]],
    ]
    grid = make_grid(upscale_nearest(torch.cat(rows), 2 * targets.shape[-1]), cols=cols, pad=2)
    write_png(grid, args.grid)
    report = {
        "command": "python benchmarks/projection_quality.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        "1 thread, shared with other jobs",
        "generator": "raw G of " + args.raw_g if args.raw_g else "EMA snapshot",
        "images": len(targets),
        "settings": {k: getattr(args, k) for k in ("steps", "starts", "select_step", "samples")},
        "perceptual": "early FID-Inception layers at 96 px (progan.tools.perceptual)",
        "psnr_db": {
            "projection": _summary(proj_psnr),
            "nearest_training": _summary(train_psnr),
            "best_of_random": _summary(rand_psnr),
            "projection_beats_nearest_training": float((proj_psnr > train_psnr).double().mean()),
            "projection_beats_best_random": float((proj_psnr > rand_psnr).double().mean()),
        },
        "perceptual_distance": {
            "projection": _summary(proj_perc),
            "nearest_training": _summary(train_perc),
            "best_of_random": _summary(rand_perc),
            "projection_beats_nearest_training": float((proj_perc < train_perc).double().mean()),
            "projection_beats_best_random": float((proj_perc < rand_perc).double().mean()),
        },
        "final_loss_mean": float(torch.cat(curves)[:, -1].mean()),
        "mean_loss_curve_every_25_steps": torch.cat(curves).mean(0)[::25].tolist(),
        "seconds": timing,
        "seconds_per_image": timing["projection_s"] / len(targets),
        "training_nearest_by_pixels_differs": float(
            (train_pix_idx != train_perc_idx).double().mean()
        ),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
