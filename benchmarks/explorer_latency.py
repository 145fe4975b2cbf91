"""How long the explorer waits for the generator: one image (a slider step) and a page of 16,
for randomly initialised generators of a given size, on the CPU with one thread.

    python benchmarks/explorer_latency.py --json benchmarks/results/explorer-latency-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from progan.config import NetworkConfig
from progan.explore.model import Explorer
from progan.presets import preset

CASES = {
    "cpu preset, 32x32": lambda: preset("cpu", 32).network,
    "paper widths, 256x256": lambda: NetworkConfig(resolution=256, channels=3),
}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--page-size", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for name, make in CASES.items():
        from progan.nn import Generator

        torch.manual_seed(0)
        net = make()
        G = Generator(net).eval().requires_grad_(False)
        ex = Explorer(G)
        ex.sample(0)  # warm-up
        a, b = ex.latent(0), ex.latent(1)
        rows[name] = {
            "parameters": sum(p.numel() for p in G.parameters()),
            "one_image_s": _seconds(lambda ex=ex, a=a, b=b: ex.interpolate(a, b, 0.3, None)),
            "page_s": _seconds(lambda ex=ex: ex.page(0, args.page_size)),
        }
        print(name, rows[name])
    report = {
        "command": f"python benchmarks/explorer_latency.py --page-size {args.page_size}",
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread, shared with "
        "other jobs",
        "page_size": args.page_size,
        "cases": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
