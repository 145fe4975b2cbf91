"""The paper's convergence study (Figure 4): SWD per level against wall-clock time, with and
without progressive growing, and the training throughput as the resolution grows.

Both arms use the same configuration (by default Table 1's row (g), the paper's full method
at the lower capacity used in Section 6.1) and differ only in ``schedule.growing``. Each arm
trains for the same wall-clock time, in ``evals`` chunks: ``train(cfg, max_seconds=...)``,
then ``train(resume=run, max_seconds=...)``; every chunk ends with a snapshot, which is
evaluated (outside the training clock) before the next chunk starts. The arms run one after
the other, never at the same time, so that they do not share the machine.

Time is the run's own training clock (``seconds`` in ``log.jsonl``: the steps, per-tick
bookkeeping and periodic snapshots, but not process start-up or the evaluations here).
Before the generator reaches the target resolution its images are upscaled to it by nearest
neighbour (as the official code's generator output is), so every SWD level is defined from
the start; levels are named by resolution, x1e3.

Outputs in ``outdir``: ``growing/`` and ``no-growing/`` (run folders), ``convergence.csv``
(arm, minutes, kimg, resolution, alpha, SWD per level and average), ``convergence.json``,
``convergence.png`` (Figure 4a/b: SWD per level against minutes, solid with growing, dashed
without) and ``throughput.png`` (Figure 4c: images/second against minutes).
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from progan.config import TrainConfig
from progan.errors import ProganError
from progan.fileio import atomic_write_bytes, atomic_write_json

__all__ = [
    "ARMS",
    "CONVERGENCE_FIGSIZE",
    "THROUGHPUT_FIGSIZE",
    "ConvergencePoint",
    "arm_config",
    "merge_convergence",
    "plot_convergence",
    "plot_throughput",
    "run_convergence",
    "write_csv",
]

ARMS = ("growing", "no-growing")
CONVERGENCE_FIGSIZE = (8.0, 5.0)  # inches; 800 x 500 pixels at progan.tools.plot.DPI
THROUGHPUT_FIGSIZE = (8.0, 4.0)  # 800 x 400 pixels
_ENDLESS_KIMG = 1e9  # the arms stop on time, never on kimg


@dataclass
class ConvergencePoint:
    """SWD of one arm's snapshot after ``seconds`` of training."""

    arm: str
    seconds: float
    kimg: float
    resolution: int  # the generator's resolution at the snapshot (before upscaling)
    alpha: float
    swd: dict[str, float]  # "32", "16", ..., "avg" -> SWD x1e3

    @property
    def minutes(self) -> float:
        return self.seconds / 60.0


def arm_config(
    base: TrainConfig, arm: str, phase_kimg: float, config_key: str = "g", tick_kimg: float = 0
) -> TrainConfig:
    """Table 1 row ``config_key`` from ``base`` (full width), growing on or off by ``arm``,
    with phases of ``phase_kimg``, no end in kimg, snapshots only where a chunk ends, into
    ``base.outdir/<arm>``."""
    from progan.experiments.ablation import ABLATION_CONFIGS, build_config

    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    cfg = build_config(base, ABLATION_CONFIGS[config_key], _ENDLESS_KIMG, phase_kimg)
    cfg = copy.deepcopy(cfg)
    cfg.schedule.growing = arm == "growing"
    cfg.schedule.total_kimg = _ENDLESS_KIMG
    cfg.outdir = str(Path(base.outdir) / arm)
    cfg.snapshot_ticks = 10**9
    cfg.keep_checkpoints = 1
    cfg.metrics = []
    if tick_kimg:
        cfg.tick_kimg = tick_kimg
    cfg.validate()
    return cfg


def _evaluate_snapshot(
    path: Path, arm: str, seconds: float, data: str, num: int | None, device, seed: int
) -> ConvergencePoint:
    from progan.generate import load_generator
    from progan.metrics.api import evaluate
    from progan.metrics.sources import GeneratorSource
    from progan.train.checkpoint import load_generator_snapshot

    snap = load_generator_snapshot(path)
    G = load_generator(path, device)
    source = GeneratorSource(G, device=device)  # upscaled to G.resolution before growing
    result = evaluate(["swd"], source, data, num=num, device=device, seed=seed)
    return ConvergencePoint(
        arm=arm,
        seconds=float(seconds),
        kimg=float(snap.extra.get("kimg", 0.0)),
        resolution=4 * 2**snap.depth,
        alpha=float(snap.alpha),
        swd={k: float(v) for k, v in result["swd"].items()},
    )


def run_arm(
    cfg: TrainConfig,
    seconds: float,
    evals: int,
    num: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[ConvergencePoint]]:
    """Train ``cfg`` for ``seconds`` of training time in ``evals`` chunks, evaluating SWD at
    the start and after every chunk. Returns the run folder and the points."""
    from progan.tools.plot import read_log
    from progan.train.api import train
    from progan.train.checkpoint import newest_snapshot, snapshot_name
    from progan.train.trainer import resolve_device

    arm = "growing" if cfg.schedule.growing else "no-growing"
    device = resolve_device(cfg.device)
    interval = seconds / max(1, evals)
    run: Path | None = None
    points: list[ConvergencePoint] = []
    done = 0.0
    while done < seconds - 0.1 * interval:
        budget = max(1e-3, min(interval, seconds - done))
        if run is None:
            run = train(cfg, progress=progress, max_seconds=budget)
            first = run / snapshot_name(0.0)
            points.append(_evaluate_snapshot(first, arm, 0.0, cfg.data, num, device, cfg.seed))
        else:
            run = train(resume=run, progress=progress, max_seconds=budget)
        records = read_log(run)
        if not records or records[-1].get("seconds", 0.0) <= done:
            raise ProganError(f"{run}: training made no progress in a chunk of {budget:.0f} s")
        done = float(records[-1]["seconds"])
        point = _evaluate_snapshot(newest_snapshot(run), arm, done, cfg.data, num, device, cfg.seed)
        points.append(point)
        log(
            f"[convergence] {arm}: {point.minutes:.2f} min, {point.kimg:.1f} kimg, "
            f"{point.resolution}px, SWD avg {point.swd['avg']:.2f}"
        )
    assert run is not None
    return run, points


def _levels(points: Sequence[ConvergencePoint]) -> list[str]:
    levels = {k for p in points for k in p.swd if k != "avg"}
    return sorted(levels, key=lambda k: -int(k))


def write_csv(points: Sequence[ConvergencePoint], path: str | Path) -> Path:
    """``arm, minutes, kimg, resolution, alpha, swd_<res>... (highest first), swd_avg``."""
    levels = _levels(points)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["arm", "minutes", "kimg", "resolution", "alpha"]
    w.writerow(head + [f"swd_{lv}" for lv in levels] + ["swd_avg"])
    for p in points:
        w.writerow(
            [p.arm, f"{p.minutes:.3f}", f"{p.kimg:.3f}", p.resolution, f"{p.alpha:.3f}"]
            + [f"{p.swd[lv]:.3f}" for lv in levels]
            + [f"{p.swd['avg']:.3f}"]
        )
    return atomic_write_bytes(path, buf.getvalue().encode())


def plot_convergence(points: Sequence[ConvergencePoint], path: str | Path) -> Path:
    """Figure 4a/b in one panel: SWD x1e3 per level (log scale) against minutes; one colour
    per level, solid lines with progressive growing, dashed without."""
    from progan.tools.plot import new_figure, save_figure

    fig = new_figure(*CONVERGENCE_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    levels = _levels(points)
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    positive = all(v > 0 for p in points for v in p.swd.values())
    for i, lv in enumerate([*levels, "avg"]):
        for arm, style in zip(ARMS, ("-", "--"), strict=True):
            pts = [p for p in points if p.arm == arm and lv in p.swd]
            if not pts:
                continue
            color = "black" if lv == "avg" else colors[i % len(colors)]
            name = "average" if lv == "avg" else f"{lv}x{lv}"
            ax.plot(
                [p.minutes for p in pts],
                [p.swd[lv] for p in pts],
                style,
                color=color,
                marker="o" if len(pts) < 30 else None,
                markersize=3,
                label=f"{name}, {arm}",
            )
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("SWD x1e3 per level")
    ax.set_title("SWD vs time: solid = progressive growing, dashed = fixed full resolution")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_throughput(runs: dict[str, Path], path: str | Path) -> Path:
    """Figure 4c: training images per second against minutes for each arm (from log.jsonl),
    with the growing arm's resolution marked where it changes."""
    from progan.tools.plot import new_figure, read_log, save_figure

    fig = new_figure(*THROUGHPUT_FIGSIZE)
    ax = fig.add_subplot(1, 1, 1)
    for arm, style in zip(ARMS, ("-", "--"), strict=True):
        if arm not in runs:
            continue
        records = [r for r in read_log(runs[arm]) if "images_per_sec" in r and "seconds" in r]
        ax.plot(
            [r["seconds"] / 60 for r in records],
            [r["images_per_sec"] for r in records],
            style,
            label=arm,
        )
        if arm == "growing":
            last = None
            for r in records:
                if r.get("resolution") != last:
                    last = r.get("resolution")
                    ax.annotate(
                        f"{last}px",
                        (r["seconds"] / 60, r["images_per_sec"]),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(2, 4),
                    )
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("images / second")
    ax.set_title("Training throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def run_convergence(
    base: TrainConfig,
    minutes: float,
    phase_kimg: float,
    evals: int = 10,
    num: int | None = None,
    config_key: str = "g",
    tick_kimg: float = 0,
    arms: Sequence[str] = ARMS,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train each arm for ``minutes`` of training time and write the CSV and the plots.

    Args:
        base: full-width configuration (data, preset, device, seed, ...), outdir = DIR.
        minutes: training time per arm (wall clock of the training loop).
        phase_kimg: kimg per stabilization and per fade-in phase of the growing arm.
        evals: chunks per arm (SWD is evaluated after each, and at the start).
        num: images for SWD (None: 16384 capped by the dataset).
        config_key: Table 1 row whose switches both arms use.
        tick_kimg: log/tick granularity (0: the preset's); chunks end on tick boundaries.

    Returns ``{"points": [...], "runs": {arm: run folder}, "csv", "convergence_png",
    "throughput_png"}``.
    """
    outdir = Path(base.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    points: list[ConvergencePoint] = []
    runs: dict[str, Path] = {}
    for arm in arms:
        cfg = arm_config(base, arm, phase_kimg, config_key, tick_kimg)
        log(f"[convergence] {arm}: {minutes:g} min in {evals} chunks into {cfg.outdir}")
        run, arm_points = run_arm(cfg, minutes * 60.0, evals, num, progress, log)
        runs[arm] = run
        points += arm_points
        write_csv(points, outdir / "convergence.csv")
    csv_path = write_csv(points, outdir / "convergence.csv")
    conv = plot_convergence(points, outdir / "convergence.png")
    thr = plot_throughput(runs, outdir / "throughput.png")
    atomic_write_json(
        outdir / "convergence.json",
        {
            "minutes_per_arm": minutes,
            "phase_kimg": phase_kimg,
            "config": config_key,
            "runs": {k: str(v) for k, v in runs.items()},
            "points": [asdict(p) for p in points],
        },
    )
    return {
        "points": points,
        "runs": runs,
        "csv": csv_path,
        "convergence_png": conv,
        "throughput_png": thr,
    }


def merge_convergence(folders: Sequence[str | Path], outdir: str | Path) -> dict[str, Any]:
    """Combine arms run separately (``--arms growing`` in one folder, ``--arms no-growing`` in
    another, e.g. on two machines or as two processes) into one CSV and one pair of plots in
    ``outdir``; each folder holds the ``convergence.json`` of its run. An arm found twice is
    an error."""
    points: list[ConvergencePoint] = []
    runs: dict[str, Path] = {}
    for folder in folders:
        path = Path(folder) / "convergence.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProganError(f"{path}: cannot read the convergence results: {exc}") from exc
        for arm, run in data["runs"].items():
            if arm in runs:
                raise ProganError(f"{path}: arm {arm!r} is already in {runs[arm]}")
            runs[arm] = Path(run)
        points += [ConvergencePoint(**p) for p in data["points"]]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return {
        "points": points,
        "runs": runs,
        "csv": write_csv(points, outdir / "convergence.csv"),
        "convergence_png": plot_convergence(points, outdir / "convergence.png"),
        "throughput_png": plot_throughput(runs, outdir / "throughput.png"),
    }
