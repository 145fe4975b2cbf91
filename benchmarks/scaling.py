"""Data-parallel scaling: training img/s and snapshot-metric time with 1, 2, ... ranks.

    python benchmarks/scaling.py [--ranks 1,2] [--preset small] [--resolutions 16,32]
        [--batch 32] [--warmup 3] [--steps 10] [--metrics swd] [--metrics-num 256]
        [--device auto|cpu|cuda] [--json benchmarks/results/scaling-<device>.json]

For every entry of ``--ranks`` the job is started as ``progan train --gpus N`` starts it
(``progan.train.launch.launch_local``: N local processes, NCCL between GPUs or gloo on
the CPU; N = 1 is a plain single process). Each rank builds the real ``Trainer`` on a small
synthetic dataset, with networks fully grown at each resolution and the same **global**
minibatch ``--batch`` for every N, and times ``Trainer.train_step`` plus the loop's loss
read-backs (``ProganStep`` of benchmarks/bench_progan.py) between two barriers: img/s counts
the global batch. Then it times the snapshot metrics (``Trainer.evaluate_metrics``, the code
training runs) twice: the first call includes the real images' pass, the second only the
generated images (the real summary is cached, as during a run).

On a CPU the ranks share the machine's cores (``launch_local`` gives each rank cores / N
threads), so the table shows the cost of splitting the work, not a speed-up from more
hardware. On GPUs each rank has its own GPU: the speed-up over 1 rank is the scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SCHEMA = "progan-scaling/1"


def _rank_main(opts: dict[str, Any], result_path: str) -> int:
    """One rank: train steps and metrics at each resolution; rank 0 writes the rows."""
    sys.path.insert(0, str(HERE))
    from bench_device import PeakMemory, synchronize
    from bench_progan import ProganStep, network_config
    from progan.schedule import PhaseState
    from progan.train.distributed import init_from_env
    from progan.train.trainer import Trainer

    comm = init_from_env(600.0)
    rank = 0 if comm is None else comm.rank
    world = 1 if comm is None else comm.world_size

    def barrier() -> None:
        if comm is not None:
            comm.all_gather_object(None, "barrier")

    rows = []
    try:
        for res in opts["resolutions"]:
            cfg = network_config(opts["preset"], res)
            cfg.data, cfg.outdir = opts["data"][str(res)], opts["outdir"]
            cfg.device = opts["device"]
            cfg.num_workers, cfg.seed = 0, 0
            cfg.metrics, cfg.metrics_num = opts["metrics"], opts["metrics_num"]
            trainer = Trainer(cfg, Path(opts["outdir"]), progress=False, dist=comm)
            dev = trainer.device
            trainer._open_stream_at(0)
            depth = res.bit_length() - 3
            batch = opts["batch"]
            st = PhaseState(depth, 1.0, batch, cfg.schedule.learning_rate_default)
            step = ProganStep(trainer, st)
            mem = PeakMemory(dev)
            mem.reset()
            for _ in range(opts["warmup"]):
                step()
            synchronize(dev)
            barrier()
            t0 = time.perf_counter()
            for _ in range(opts["steps"]):
                step()
            synchronize(dev)
            barrier()
            seconds = time.perf_counter() - t0
            row = {
                "ranks": world, "resolution": res, "global_batch": batch,
                "img_per_s": round(opts["steps"] * batch / seconds, 2),
                "ms_per_step": round(1000 * seconds / opts["steps"], 2),
                "peak_mem_gib_rank0": round(mem.read_gib(), 3),
            }  # fmt: skip
            if opts["metrics"]:
                first = trainer.evaluate_metrics(st)
                again = trainer.evaluate_metrics(st)
                row["metrics_first_s"] = first.get("metric/seconds")
                row["metrics_s"] = again.get("metric/seconds")
            trainer.stream.close()
            rows.append(row)
        if rank == 0:
            Path(result_path).write_text(json.dumps(rows))
    finally:
        if comm is not None:
            comm.close()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="numbers of ranks to compare")
    p.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    p.add_argument("--resolutions", default="16,32")
    p.add_argument("--batch", type=int, default=32, help="global minibatch (all rank counts)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--metrics", default="swd", help="snapshot metrics to time ('' = none)")
    p.add_argument("--metrics-num", type=int, default=256, help="images per metric")
    p.add_argument("--device", default="auto", help="auto (GPUs when present), cpu or cuda")
    p.add_argument("--json", help="output file (default benchmarks/results/scaling-<dev>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from bench_device import device_name, slug
    from bench_progan import make_dataset
    from progan.fileio import atomic_write_json
    from progan.train.launch import launch_local

    args = parse_args(argv)
    ranks = [int(x) for x in args.ranks.split(",") if x]
    resolutions = [int(x) for x in args.resolutions.split(",") if x]
    cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda and max(ranks) > torch.cuda.device_count():
        raise SystemExit(
            f"--ranks {max(ranks)} needs that many GPUs; {torch.cuda.device_count()} visible"
        )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = {str(r): str(make_dataset(folder, r, args.batch)) for r in resolutions}
        opts = {
            "resolutions": resolutions, "preset": args.preset, "batch": args.batch,
            "warmup": args.warmup, "steps": args.steps, "device": args.device, "data": data,
            "outdir": str(folder / "run"),
            "metrics": [m for m in args.metrics.split(",") if m], "metrics_num": args.metrics_num,
        }  # fmt: skip
        for n in ranks:
            out = folder / f"rows-{n}.json"
            code = launch_local(n, _rank_main, opts, str(out), grace_s=10)
            if code != 0:
                raise SystemExit(f"the {n}-rank job failed (exit status {code})")
            rows += json.loads(out.read_text())
    base = {r["resolution"]: r["img_per_s"] for r in rows if r["ranks"] == ranks[0]}
    for r in rows:
        r["speedup_vs_first"] = round(r["img_per_s"] / base[r["resolution"]], 3)
    dev_name = device_name(device)
    result = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": dev_name,
        "device_count": torch.cuda.device_count() if cuda else 1,
        "cpu_count": os.cpu_count(),
        "backend": "nccl" if cuda else "gloo",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": "python benchmarks/scaling.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "rows": rows,
    }
    print(
        f"{dev_name}, torch {torch.__version__}, backend {result['backend']}, preset {args.preset}"
    )
    print(f"{'ranks':>5} {'res':>5} {'batch':>5} {'img/s':>9} {'ms/step':>9} {'speedup':>8} "
          f"{'metrics 1st s':>13} {'metrics s':>9}")  # fmt: skip
    nan = float("nan")
    for r in rows:
        print(f"{r['ranks']:>5} {r['resolution']:>5} {r['global_batch']:>5} "
              f"{r['img_per_s']:>9.2f} {r['ms_per_step']:>9.1f} {r['speedup_vs_first']:>8.2f} "
              f"{r.get('metrics_first_s', nan):>13.2f} "
              f"{r.get('metrics_s', nan):>9.2f}")  # fmt: skip
    path = Path(args.json or HERE / "results" / f"scaling-{slug(dev_name)}.json")
    atomic_write_json(path, result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
