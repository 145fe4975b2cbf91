"""Timing of the metrics: SWD (16,384 images at 128x128), FID and IS (50,000 images at 32x32
and 256x256).

    python benchmarks/metrics.py [--num-swd 16384] [--num-fid 50000] [--device cuda]
                                 [--json benchmarks/metrics.json]

Images are random uint8 tensors made on the device (generation is not timed). FID/IS use the
real Inception weights when found (torch hub cache, $PROGAN_INCEPTION_WEIGHTS, ../shared/data)
and random weights otherwise (same cost). FID timings include both sides (real + fake) and
the Frechet distance; use ``--num-*`` to shrink the run on a CPU.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from progan.fileio import atomic_write_json
from progan.metrics import inception
from progan.metrics.api import clear_memory_cache, evaluate
from progan.metrics.sources import CallableSource

SHARED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared/data/weights"


def _source(res: int, device: str, offset: int) -> CallableSource:
    def fn(seeds: list[int]) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seeds[0])
        return torch.randint(0, 256, (len(seeds), 3, res, res), generator=g, device=device,
                             dtype=torch.uint8)  # fmt: skip

    return CallableSource(fn, res, 3, seed_offset=offset, name=f"random{res}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-swd", type=int, default=16384)
    ap.add_argument("--num-fid", type=int, default=50000)
    ap.add_argument("--swd-res", type=int, default=128)
    ap.add_argument("--fid-res", default="32,256")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default="benchmarks/metrics.json")
    args = ap.parse_args()

    weights = None
    try:
        weights = inception.find_inception_weights(download=False)
    except Exception:
        if (SHARED_WEIGHTS / inception.FID_WEIGHTS_FILE).is_file():
            weights = SHARED_WEIGHTS / inception.FID_WEIGHTS_FILE
    rows = []

    def timed(label: str, metrics: str, res: int, num: int) -> None:
        clear_memory_cache()
        _sync(args.device)
        t = time.perf_counter()
        evaluate(metrics, _source(res, args.device, 10**6), _source(res, args.device, 0),
                       num, device=args.device, batch_size=args.batch_size,
                       inception_path=weights, random_inception=weights is None,
                       use_cache=False)  # fmt: skip
        _sync(args.device)
        sec = time.perf_counter() - t
        rows.append({"what": label, "resolution": res, "images": num, "seconds": sec,
                     "images_per_second": (2 if metrics != "is" else 1) * num / sec})  # fmt: skip
        print(f"{label:<8} {res:>5}px {num:>7} img/side {sec:10.2f} s", flush=True)

    timed("swd", "swd", args.swd_res, args.num_swd)
    for res in (int(r) for r in args.fid_res.split(",")):
        timed("fid", "fid", res, args.num_fid)
        timed("is", "is", res, args.num_fid)

    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "inception_weights": str(weights) if weights else "random",
        "rows": rows,
    }  # fmt: skip
    atomic_write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
