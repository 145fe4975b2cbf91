"""FID, SWD and colour statistics of a run's raw and EMA generators at several instants.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/ema_fid.py RUN_DIR --data celeba32.zip \\
        --names raw,ema,r005 --num 1000 --out RUN_DIR/ema_fid.json

``RUN_DIR`` is an output folder of ``benchmarks/ema_dynamics.py`` run with ``--save-at``: every
``at-KKK.K/`` subfolder (and the folder itself: the end of the run) holds one
``<name>.safetensors`` per generator of the same instant (``raw`` = the trained G, ``ema`` =
the trainer's EMA, ``r005`` ... = other EMA windows of the same G trajectory). For each instant
and name: FID (NVIDIA's Inception, TF convention) and SWD x1e3 of ``--num`` generated images
(seeds 0 ...) against as many training images (the real side is computed once and cached), and
the mean colour and per-image std of seeds 0-499 in uint8 levels.

Why several instants: the raw G hops between colourings within tens of steps (docs/RESULTS.md,
"The EMA generator"), so its FID at one instant is one draw from a trajectory that swings; a
user's snapshot is taken at whatever instant the run stops. The table gives each instant and
the mean over instants. The JSON is rewritten after every evaluation and finished entries are
skipped when the command is run again (a long CPU job can be resumed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from progan.generate import generate_images, load_generator
from progan.metrics.api import evaluate
from progan.metrics.sources import GeneratorSource


def colour_stats(G, n: int = 500) -> dict[str, list[float]]:
    """Mean colour and mean per-image std (uint8 levels, per channel) of seeds 0 .. n-1."""
    seeds = list(range(n))
    labels = torch.tensor([s % G.label_size for s in seeds]) if G.label_size else None
    x = generate_images(G, seeds, labels=labels).float()
    return {
        "mean_rgb": [round(v, 1) for v in x.mean(dim=(0, 2, 3)).tolist()],
        "per_image_std_rgb": [round(v, 1) for v in x.std(dim=(2, 3)).mean(0).tolist()],
    }


def instants(run: Path) -> list[tuple[str, Path]]:
    """[(label, folder)] of the saved instants, in kimg order; the run's end last."""
    found = sorted(run.glob("at-*/"), key=lambda p: float(p.name[3:]))
    out = [(p.name[3:].lstrip("0") or "0", p) for p in found]
    final = run / "final.json"
    if final.exists():
        out.append((f"{json.loads(final.read_text())['kimg']:.1f}", run))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--names", default="raw,ema")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--metrics", default="fid,swd")
    p.add_argument("--cache-dir", default=None, help="FID statistics cache of the real images")
    p.add_argument("--at", default="", help="only these instants (kimg labels, e.g. 10,11,12)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = a.out or a.run / "ema_fid.json"
    res = json.loads(out.read_text()) if out.exists() else {}
    res.setdefault("run", str(a.run))
    res.setdefault("num_images", a.num)
    res["torch"] = torch.__version__
    table = res.setdefault("instants", {})
    names = [n.strip() for n in a.names.split(",") if n.strip()]
    wanted = {float(t) for t in a.at.split(",") if t.strip()}
    for label, folder in instants(a.run):
        if wanted and float(label) not in wanted:
            continue
        for name in names:
            if name in table.get(label, {}) or not (folder / f"{name}.safetensors").exists():
                continue
            G = load_generator(folder / f"{name}.safetensors")
            r = evaluate(a.metrics, GeneratorSource(G), a.data, a.num, device="cpu", seed=0,
                         cache_dir=a.cache_dir)  # fmt: skip
            entry = {"fid": r.get("fid"), "swd": r.get("swd"), "seconds": round(r["seconds"])}
            entry.update(colour_stats(G))
            table.setdefault(label, {})[name] = entry
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=1))
            tmp.replace(out)
            print(label, name, json.dumps(entry), flush=True)
    print_table(table, names)


def print_table(table: dict, names: list[str]) -> None:
    """FID and SWD avg per instant and their means, one row per generator."""
    labels = list(table)
    print("| generator | " + " | ".join(f"{k} kimg FID / SWD" for k in labels) + " | mean |")
    print("|---" * (len(labels) + 2) + "|")
    for name in names:
        fids, swds, cells = [], [], []
        for k in labels:
            e = table[k].get(name)
            if e is None:
                cells.append("-")
                continue
            f, s = e.get("fid"), (e.get("swd") or {}).get("avg")
            fids += [f] if f is not None else []
            swds += [s] if s is not None else []
            cells.append(f"{f:.1f} / {s:.1f}" if f is not None and s is not None else "?")
        mean = "-"
        if fids and swds:
            mean = f"{statistics.mean(fids):.1f} / {statistics.mean(swds):.1f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {mean} |")


if __name__ == "__main__":
    main()
