"""Cost of one projection step (G forward + backward, with and without the perceptual term)
per image, for perceptual input sizes 96, 128 and 299 (the FID graph's own), on one thread.

    python benchmarks/perceptual_cost.py --network RUN/snapshot-....safetensors --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from progan.generate import load_generator
from progan.tools.perceptual import PerceptualDistance
from progan.tools.project import sphere


def _ms_per_image(step, batch: int, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats / batch * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    G = load_generator(args.network)
    G.default_depth, G.default_alpha = G.max_depth, 1.0  # full resolution either way
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(args.batch, G.channels, G.resolution, G.resolution, generator=gen) * 2 - 1
    w = torch.randn(args.batch, G.latent_size, generator=gen).requires_grad_(True)

    def pixels_only():
        (G(sphere(w)) - target).square().mean().backward()

    rows = {
        "pixels only (G forward + backward)": _ms_per_image(pixels_only, args.batch, args.repeats)
    }
    for size in (96, 128, 299):
        perc = PerceptualDistance(input_size=size)
        feats = [f.detach() for f in perc.features(target)]

        def with_perceptual(perc=perc, feats=feats):
            images = G(sphere(w))
            loss = (images - target).square().mean(1).mean((1, 2))
            loss = loss + perc.between_features(perc.features(images), feats)
            loss.sum().backward()

        rows[f"pixels + perceptual at {size}px"] = _ms_per_image(
            with_perceptual, args.batch, args.repeats
        )
    report = {
        "command": f"python benchmarks/perceptual_cost.py --network {args.network} "
        f"--batch {args.batch} --repeats {args.repeats}",
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread, shared with "
        "other jobs (timings are distorted; compare the ratios)",
        "resolution": G.resolution,
        "ms_per_image_step": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
