"""Time 1024x1024 generation: images per second of a generator with the official CelebA-HQ
layout (ten blocks, G_paper widths by default: fmap_base 8192, fmap_max 512, latent 512).

An official file converts to exactly this network (progan.official), so the numbers hold for
``progan generate karras2018iclr-celebahq-1024x1024.pkl``; the weights here are random
(speed does not depend on them). ``--fmap-base``/``--fmap-max``/``--latent`` give the tiny
layouts of the tests.

    python benchmarks/generate_1024.py --device cuda --num 64 --batch 8      # GPU
    python benchmarks/generate_1024.py --device cpu --num 2 --batch 1        # CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from progan.config import NetworkConfig
from progan.generate import generate_images
from progan.nn.generator import Generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num", type=int, default=8, help="images timed (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--fmap-base", type=int, default=8192)
    p.add_argument("--fmap-max", type=int, default=512)
    p.add_argument("--latent", type=int, default=512)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = NetworkConfig(resolution=1024, fmap_base=args.fmap_base, fmap_max=args.fmap_max,
                        latent_size=args.latent, mbstd_group_size=16)  # fmt: skip
    G = Generator(cfg).eval().requires_grad_(False).to(args.device)
    generate_images(G, range(args.batch), batch_size=args.batch)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    generate_images(G, range(args.num), batch_size=args.batch)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(json.dumps({
        "device": args.device, "device_name": name or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "fmap_base": args.fmap_base, "fmap_max": args.fmap_max, "latent": args.latent,
        "params": sum(t.numel() for t in G.parameters()), "images": args.num,
        "batch": args.batch, "seconds": round(seconds, 3),
        "images_per_second": round(args.num / seconds, 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
