"""How fast the training stream delivers reals of a 1024x1024 dataset at every phase resolution,
before and after its levels are prepared (``progan dataset prepare``); what the preparation
costs; and whether a training run's low phases keep up with the same images stored small.

    PYTHONPATH=src python benchmarks/data_rate.py --count 200 --json data_rate.json

1. A dataset of ``--count`` photo-like 1024x1024 PNGs (random crops of the photos in
   ../shared/data/photos, upscaled, with sensor-like noise: about 1.5-2 MB each, as
   CelebA-HQ's), or the built-in shapes when the photos are absent.
2. ``RealImageStream`` img/s at each resolution 4 ... 1024 with each worker count, at the
   ``paper`` schedule's minibatch sizes: *before* (every image decoded and box-reduced in the
   workers) and *after* preparation (levels read from the memory-mapped store). The store
   keeps the levels a 30,000-image dataset would keep under the default 4 GiB budget
   (``--project-count``), so the "after" rows hold for that size.
3. The preparation's cost per 1,000 images with one process and with all cores, its bytes on
   disk, and both projected to ``--project-count`` images.
4. Training steps (the ``paper`` schedule with a small network, so that the step is fast and
   the data path shows) at 4 ... 32 on the 1024 dataset's levels vs on the same images stored
   as a dataset of the phase's own resolution (cached, as small datasets are) and vs today's
   path (full-size images decoded each step and downscaled by ``real_images_for_phase``).

Wall-clock figures on a shared machine vary with the load; the ratios of step 4 come from the
same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_device import device_name
from progan.data.dataset import DatasetWriter, ImageDataset
from progan.data.images import encode_png
from progan.data.levels import (
    DEFAULT_MAX_BYTES,
    ImagesAt,
    prepare_levels,
    usable_cores,
)
from progan.data.loader import PREFETCH_CHUNKS, RealImageStream
from progan.presets import preset
from progan.schedule import Schedule

SCHEMA = "progan-data-rate-1"
PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos"
RESOLUTIONS = [4, 8, 16, 32, 64, 128, 256, 512, 1024]


# --------------------------------------------------------------------------------------------
# the dataset


def _photo_like(args: tuple[int, int, int]) -> bytes:
    """PNG bytes of image ``index``: a random crop of a photo, resized, with noise."""
    from PIL import Image

    index, resolution, seed = args
    rng = np.random.default_rng([seed, index])
    photos = sorted(PHOTOS.glob("*.*")) if PHOTOS.is_dir() else []
    if photos:
        with Image.open(photos[index % len(photos)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = int(min(w, h) * rng.uniform(0.5, 1.0))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = im.crop((x, y, x + side, y + side)).resize((resolution, resolution))
        arr = np.asarray(crop, dtype=np.float32)
    else:
        from progan.data.synthetic import render_shape

        arr = np.asarray(render_shape(seed, index, resolution)[0], dtype=np.float32)
    arr = arr + rng.normal(0.0, 4.0, arr.shape)  # sensor noise: photo-like PNG sizes
    chw = np.clip(np.rint(arr), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return encode_png(chw)


def make_dataset(path: Path, count: int, resolution: int, seed: int) -> ImageDataset:
    if path.exists():
        ds = ImageDataset(path)
        if len(ds) == count and ds.resolution == resolution:
            return ds
        path.unlink()
    tasks = [(i, resolution, seed) for i in range(count)]
    with multiprocessing.get_context().Pool(usable_cores()) as pool:
        pngs = pool.map(_photo_like, tasks, chunksize=4)
    with DatasetWriter(path, resolution, 3, source="benchmarks/data_rate.py") as w:
        for data in pngs:
            w.add_png(data)
    return ImageDataset(path)


# --------------------------------------------------------------------------------------------
# measurements


def stream_rate(ds, resolution, workers, levels, batch, seconds) -> float:
    """Steady img/s of ``next(batch)``: timed after as many images as the loader can hold
    ahead (all workers' prefetched chunks) have been taken, so neither the workers' start nor
    images read ahead while it waited count."""
    with RealImageStream(ds, seed=1, mirror=True, num_workers=workers, resolution=resolution,
                         levels=levels) as s:  # fmt: skip
        ahead = workers * PREFETCH_CHUNKS * s.chunk_size + batch
        for _ in range(-(-ahead // batch)):
            s.next(batch)
        n, t0 = 0, time.perf_counter()
        while n < 4 * batch or time.perf_counter() - t0 < seconds:
            s.next(batch)
            n += batch
        return n / (time.perf_counter() - t0)


def measure_streams(
    ds, levels, workers_list, schedule, seconds, label, resolutions
) -> list[dict[str, Any]]:
    rows = []
    for res in resolutions:
        source = "level" if levels is not None and res in levels.resolutions else "decode"
        if res == ds.resolution:
            source = "png"
        for w in workers_list:
            ips = stream_rate(ds, res, w, levels, schedule.batch_size(res), seconds)
            rows.append({"prepared": levels is not None, "resolution": res, "workers": w,
                         "batch": schedule.batch_size(res), "source": source,
                         "img_per_s": round(ips, 1)})  # fmt: skip
            print(f"  {label:<7} {res:>5}x{res:<5} workers {w}  {source:<6} {ips:10.1f} img/s")
    return rows


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure_preparation(ds, budget, workers_list, folder) -> list[dict[str, Any]]:
    """Wall and CPU seconds of ``prepare_levels`` with each worker count; the CPU seconds (all
    processes) do not depend on the machine's other load, so they project to N free cores."""
    rows = []
    for w in workers_list:
        path = folder / f"levels-w{w}"
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        store = prepare_levels(ds, max_bytes=budget, workers=w, progress=False, path=path)
        sec, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        rows.append({"workers": w, "seconds": round(sec, 2),
                     "seconds_per_1000": round(1000 * sec / len(ds), 1),
                     "cpu_seconds_per_1000": round(1000 * cpu / len(ds), 1),
                     "bytes": store.nbytes(), "levels": store.resolutions})  # fmt: skip
        print(f"  prepare with {w} worker process(es): {sec:.1f} s ({1000 * sec / len(ds):.0f} "
              f"s per 1,000 images; {1000 * cpu / len(ds):.0f} CPU-s per 1,000), "
              f"{store.nbytes() / 2**20:.1f} MiB")  # fmt: skip
    return rows


def open_levels_at(path: Path, ds: ImageDataset):
    from progan.data.levels import LevelStore

    return LevelStore(path, json.loads((path / "levels.json").read_text()))


def _trainer(data: Path, out: Path, device: str, paper_network: bool):
    """The ``paper`` preset's trainer on ``device``; its network shrunk (64/16 feature maps,
    latent 16) unless ``paper_network``, so that on a CPU the step is fast enough for the
    data path to show. Data not cached whole (``data_cache="none"``, as for 30,000 images)."""
    from progan.train.api import configure
    from progan.train.trainer import Trainer

    cfg = configure(data, out, "paper", data_cache="none", num_workers=-1, device=device)
    if not paper_network:
        cfg.network.fmap_base, cfg.network.fmap_max, cfg.network.latent_size = 64, 16, 16
    cfg.validate()
    return Trainer(cfg, out, progress=False)


def _step_rate(trainer, st, steps: int, stream, seconds: float = 0.0) -> float:
    """img/s of at least ``steps`` training steps (and ``seconds``) fed by ``stream``, after
    two warm-up steps."""
    trainer.stream = stream
    for _ in range(2):  # warm-up (cuDNN autotuning, the stream's first chunks)
        trainer.train_step(st)
    _sync(trainer.device)
    n, t0 = 0, time.perf_counter()
    while n < steps or time.perf_counter() - t0 < seconds:
        trainer.train_step(st)
        n += 1
        if n % 8 == 0:
            _sync(trainer.device)
    _sync(trainer.device)
    return n * st.batch_size / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training(ds, folder: Path, steps: int, device: str, paper_network: bool, seconds):
    """Step img/s at 4..32: levels vs the images stored at the phase's own resolution vs the
    full-size stream (today's path)."""
    if device == "cpu":
        torch.set_num_threads(1)
    trainer = _trainer(ds.path, folder / "run", device, paper_network)
    trainer._open_stream_at(0)
    rows = []
    for res in [r for r in (4, 8, 16, 32) if r < ds.resolution]:
        seg = next(s for s in trainer.schedule.segments() if s.resolution == res and not s.fading)
        trainer.images = int(seg.start_kimg * 1000)
        st = trainer.schedule.at(trainer.images)
        trainer._enter_phase(st)
        small = folder / f"own{res}.zip"
        with DatasetWriter(small, res, 3) as w:
            for img in ImagesAt(ds, res, trainer.levels).read_all():
                w.add(np.ascontiguousarray(img))
        levels_stream = trainer.stream
        own_cache = "device" if trainer.device.type == "cuda" else "cpu"
        own = RealImageStream(ImageDataset(small), trainer.device, seed=1, num_workers=0,
                              cache=own_cache)  # fmt: skip
        # Six back-to-back pairs: the ratio is the median of the pairs' ratios (each pair sees
        # about the same load from the machine's other jobs), the rates the best of each.
        pairs = [
            (
                _step_rate(trainer, st, steps, levels_stream, seconds / 2),
                _step_rate(trainer, st, steps, own, seconds / 2),
            )
            for _ in range(6)
        ]
        levels_ips, own_ips = max(p[0] for p in pairs), max(p[1] for p in pairs)
        ratio = float(np.median([a / b for a, b in pairs]))
        # today's path: the full-size images, downscaled every step
        full = RealImageStream(ds, trainer.device, seed=1)
        full_ips = _step_rate(trainer, st, max(2, steps // 4), full)
        full.close()
        trainer.stream = levels_stream
        row = {"resolution": res, "batch": st.batch_size, "levels_img_per_s": round(levels_ips, 1),
               "own_resolution_img_per_s": round(own_ips, 1),
               "full_size_img_per_s": round(full_ips, 1),
               "levels_vs_own": round(ratio, 3),
               "pair_ratios": [round(a / b, 3) for a, b in pairs]}  # fmt: skip
        rows.append(row)
        print(f"  train {res:>3}x{res:<3} levels {levels_ips:8.1f}  own resolution "
              f"{own_ips:8.1f}  full size {full_ips:8.1f} img/s  (ratio "
              f"{ratio:.2f})")  # fmt: skip
    trainer.stream.close()
    return rows


# --------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import progan

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__,
            "progan": getattr(progan, "__version__", "?")}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    """The tables of docs/PERFORMANCE.md "Data rate" from a result (or its JSON)."""
    streams = result["streams"]
    workers = sorted({r["workers"] for r in streams})
    rate = {(r["prepared"], r["resolution"], r["workers"]): r for r in streams}
    head = "| resolution | " + " | ".join(
        f"{when}, {w} workers" for when in ("before", "after") for w in workers
    )
    lines = [head + " | after: read from |", "|---:" * (2 * len(workers) + 1) + "|---|"]
    for res in sorted({r["resolution"] for r in streams}):
        cells = [
            f"{rate[(p, res, w)]['img_per_s']:,.0f}" if (p, res, w) in rate else "-"
            for p in (False, True)
            for w in workers
        ]
        source = rate.get((True, res, workers[-1]), {}).get("source", "-")
        lines.append(f"| {res} | " + " | ".join(cells) + f" | {source} |")
    if result.get("training"):
        lines += [
            "",
            "| phase | levels img/s | own-resolution img/s | levels / own | full-size img/s |",
            "|---:|---:|---:|---:|---:|",
        ]
        for t in result["training"]:
            lines.append(
                f"| {t['resolution']}x{t['resolution']} | {t['levels_img_per_s']:,.0f} | "
                f"{t['own_resolution_img_per_s']:,.0f} | {t['levels_vs_own']:.2f} | "
                f"{t['full_size_img_per_s']:,.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=200, help="images of the 1024 dataset")
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--resolutions", default=None, help="stream resolutions [4 ... --resolution]")
    p.add_argument("--workers", default=None, help="worker counts, e.g. 0,1,2 [0..cores]")
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement (at least)")
    p.add_argument("--train-steps", type=int, default=16, help="timed steps per phase (0: skip)")
    p.add_argument("--device", default="cpu", help="training steps' device (step 4)")
    p.add_argument(
        "--paper-network",
        action="store_true",
        help="step 4 with the paper's network (default: shrunk, for CPUs)",
    )
    p.add_argument("--project-count", type=int, default=30000)
    p.add_argument("--work", type=Path, default=None, help="folder kept between runs")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    cores = usable_cores()
    workers = [int(w) for w in args.workers.split(",")] if args.workers else list(range(cores + 1))
    started = datetime.now(timezone.utc)
    work = args.work or Path(tempfile.mkdtemp(prefix="progan-data-rate-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"dataset: {args.count} images of {args.resolution}x{args.resolution} in {work}")
    t0 = time.perf_counter()
    ds = make_dataset(work / f"photos{args.resolution}.zip", args.count, args.resolution, 0)
    ds_bytes = ds.path.stat().st_size
    print(f"  {ds_bytes / 2**20:.0f} MiB ({ds_bytes / len(ds) / 2**20:.2f} MiB per image), "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    schedule = Schedule(preset("paper", args.resolution).schedule, args.resolution)
    # The levels a --project-count dataset keeps under the default budget.
    budget = int(DEFAULT_MAX_BYTES * len(ds) / args.project_count)
    if args.resolutions:
        resolutions = [int(r) for r in args.resolutions.split(",")]
    else:
        resolutions = [r for r in RESOLUTIONS if r <= args.resolution]
    before = measure_streams(ds, None, workers, schedule, args.seconds, "before", resolutions)
    prep = measure_preparation(ds, budget, sorted({0, cores}), work)
    store_path = work / f"levels-w{cores}"
    levels = open_levels_at(store_path, ds)
    after = measure_streams(ds, levels, workers, schedule, args.seconds, "after", resolutions)
    training = []
    if args.train_steps:
        beside = Path(str(ds.path) + ".levels")  # where the trainer looks
        shutil.rmtree(beside, ignore_errors=True)
        shutil.move(str(store_path), str(beside))
        training = measure_training(
            ds, work, args.train_steps, args.device, args.paper_network, args.seconds
        )
    scale = args.project_count / len(ds)
    best = min(prep, key=lambda r: r["seconds"])
    projection = {
        "count": args.project_count,
        "dataset_gb": round(ds_bytes * scale / 1e9, 2),
        "levels_gb": round(levels.nbytes() * scale / 1e9, 2),
        "levels": levels.resolutions,
        "prepare_hours_all_cores": round(best["seconds"] * scale / 3600, 2),
        "prepare_hours_one_process": round(
            next(r for r in prep if r["workers"] == 0)["seconds"] * scale / 3600, 2
        ),
        "prepare_cpu_hours": round(
            min(r["cpu_seconds_per_1000"] for r in prep) * args.project_count / 1000 / 3600, 2
        ),
    }
    print(f"projected to {args.project_count} images: {projection}")
    result = {
        "schema": SCHEMA,
        "date_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python", "benchmarks/data_rate.py", *(argv or sys.argv[1:])]),
        "device": args.device,
        "device_name": device_name(torch.device(args.device)),
        "cpu_name": device_name(torch.device("cpu")),
        "paper_network": args.paper_network,
        "usable_cores": cores,
        "versions": versions(),
        "dataset": {
            "count": len(ds),
            "resolution": ds.resolution,
            "bytes": ds_bytes,
            "photos": PHOTOS.is_dir(),
        },
        "streams": before + after,
        "preparation": prep,
        "training": training,
        "projection": projection,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }
    print()
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
