"""README command 1 as a new user runs it: wall time (install included) and the quality of
its ``samples.png``.

    python benchmarks/quickstart.py [--workdir DIR] [--skip-install] [--num 2000]
                                    [--json benchmarks/results/quickstart-cpu.json]

Steps: copy the checkout's tracked files into ``DIR/progan`` (a clean tree, no build
outputs); make a fresh virtual environment ``DIR/venv``; run command 1, exactly as README.md
gives it (the line after ``# 1.``), with ``bash -c`` in ``DIR/progan`` and the venv first on
``PATH``, timing the whole line and each of its ``&&`` steps. pip runs with
``--no-cache-dir``, so the PyTorch wheel is downloaded as on a new machine.
``--skip-install`` drops the ``pip install`` step and uses the current environment (timing
training only).

Then quality, computed here with progan's own sliced Wasserstein distance (paper Appendix D;
x1e3, per Laplacian level and average): the run's final EMA generator makes ``--num`` images
(seeds 0..num-1); SWD of them against the dataset's ``--num`` reals; and, as a yardstick, SWD
of a Gaussian-blurred copy of the reals (sigma 1 px, each channel, scipy) against the reals.
A generator that draws the shapes about as sharply as the data scores near the blurred copy
or below. Prints a table and writes JSON with the machine, PyTorch version and every time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from progan.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def command_one(readme: Path) -> str:
    """The shell line after ``# 1.`` in README.md's Quickstart block."""
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# 1."):
            return lines[i + 1].strip()
    raise SystemExit(f"{readme}: no line starting with '# 1.'")


def run_paths(tree: Path, line: str) -> tuple[Path, Path]:
    """(dataset, run folder) that command 1 ``line`` writes, inside ``tree``."""
    data = re.search(r"--data (\S+)", line)
    outdir = re.search(r"--outdir (\S+)", line)
    if data is None or outdir is None:
        raise SystemExit(f"command 1 has no --data or --outdir: {line}")
    return tree / data.group(1), tree / outdir.group(1)


def copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        rel = name.decode()
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)


def swd_table(run_dir: Path, data: Path, num: int) -> dict[str, dict[str, float]]:
    from progan.data.dataset import ImageDataset
    from progan.generate import generate_images, load_generator
    from progan.metrics.swd import PatchDescriptors, swd_from_descriptors, swd_resolutions

    with ImageDataset(data) as ds:
        n = min(num, len(ds))
        reals_t = torch.from_numpy(np.stack([ds.read_image(i) for i in range(n)]))  # NCHW uint8
        labels = None if ds.labels is None else ds.labels[:n].tolist()
    blurred = scipy.ndimage.gaussian_filter(reals_t.numpy().astype(np.float64), (0, 0, 1, 1))
    blurred_t = torch.from_numpy(np.clip(np.rint(blurred), 0, 255).astype(np.uint8))
    G = load_generator(run_dir, torch.device("cpu"))
    # a conditional G draws the reals' classes (the same class frequencies as the data)
    fakes_t = generate_images(G, list(range(n)), labels if G.label_size else None, 100)
    res, ch = reals_t.shape[2], reals_t.shape[1]

    def descriptors(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        pd = PatchDescriptors(res, ch, seed=seed)
        for s in range(0, images.shape[0], 250):
            pd.feed(images[s : s + 250], start=s)
        return pd.finalize()

    ref = descriptors(reals_t, 1)
    out = {}
    for name, images in (("generated", fakes_t), ("blurred_reals", blurred_t)):
        out[name] = swd_from_descriptors(descriptors(images, 2), ref, swd_resolutions(res))
    out["num_images"] = {"each_side": float(n)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="where to copy, install and run (default: a temp dir)")
    ap.add_argument("--skip-install", action="store_true")
    ap.add_argument(
        "--measure-only", action="store_true", help="only the SWD of an earlier --workdir's run"
    )
    ap.add_argument("--num", type=int, default=2000, help="images per side for SWD [2000]")
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/quickstart-cpu.json"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="progan-quickstart-"))
    tree = work / "progan"
    line = command_one(REPO / "README.md")
    data, run_dir = run_paths(tree, line)
    if args.measure_only:
        print(json.dumps(swd_table(run_dir, data, args.num), indent=2))
        return
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    copy_tree(tree)
    steps = [s.strip() for s in line.split("&&")]
    env = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    if args.skip_install:
        steps = [s for s in steps if not s.startswith("pip ")]
    else:
        venv = work / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(venv)
    times = []
    t_all = time.perf_counter()
    for step in steps:
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-c", step], cwd=tree, env=env)
        times.append({"step": step, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[{times[-1]['seconds']:7.1f} s] {step}", flush=True)
        if proc.returncode:
            raise SystemExit(f"step failed (rc {proc.returncode}): {step}")
    total = time.perf_counter() - t_all
    quality = swd_table(run_dir, data, args.num)
    result = {
        "command": line if not args.skip_install else " && ".join(steps),
        "install_included": not args.skip_install,
        "total_seconds": round(total, 1),
        "steps": times,
        "swd_x1e3": quality,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "workdir": str(work),
    }
    install = "excluded" if args.skip_install else "included"
    print(f"\ntotal wall time {total:.1f} s (install {install})")
    print(f"{'SWD x1e3 vs reals':22s}" + "".join(f"{k:>9s}" for k in quality["generated"]))
    for name in ("generated", "blurred_reals"):
        print(f"{name:22s}" + "".join(f"{v:9.1f}" for v in quality[name].values()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.json), result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
