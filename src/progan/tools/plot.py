"""Plots of a training run: losses, throughput and metrics against kimg and wall-clock time.

``progan plot RUN --out run.png`` reads ``RUN/log.jsonl`` (one JSON line per tick, see
:mod:`progan.train.run_loop`) and draws a grid of panels: the top row against kimg (thousands of
real images shown to D), the bottom row against training time in minutes; the columns are
the losses (D/loss, G/loss), images per second, and one column per metric family logged at
snapshots (SWD x1e3 per pyramid level on a log scale, FID, MS-SSIM, Inception Score).

matplotlib is optional (``pip install progan[plot]``); it is imported only when plotting, with
the non-interactive Agg canvas (no display needed, no global pyplot state).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from progan.errors import ConfigError, ProganError

__all__ = [
    "DPI",
    "PANEL_SIZE",
    "add_command",
    "metric_families",
    "new_figure",
    "plot_run",
    "read_log",
    "save_figure",
]

DPI = 100
PANEL_SIZE = (4.0, 3.0)  # inches per panel of plot_run (400 x 300 pixels at DPI)


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The tick records of ``run_dir/log.jsonl`` in order (torn lines are skipped)."""
    path = Path(run_dir)
    path = path / "log.jsonl" if path.is_dir() else path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProganError(f"{path}: cannot read the training log: {exc}") from exc
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "plotting needs matplotlib: pip install matplotlib (or progan[plot])"
        ) from exc
    return Figure, FigureCanvasAgg


def new_figure(width_in: float, height_in: float):
    """A matplotlib Figure of ``width_in`` x ``height_in`` inches at :data:`DPI` with an Agg
    canvas attached (so the PNG is exactly ``round(width_in * DPI)`` pixels wide)."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically (same pixel size as the figure; no tight cropping)."""
    from progan.fileio import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))


def metric_families(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Logged metric keys grouped by metric: ``{"swd": ["metric/swd/32", ...,
    "metric/swd/avg"], "fid": ["metric/fid"], ...}`` (SWD levels highest resolution first,
    ``metric/seconds`` left out). The raw generator's values (``metric-raw/...``, logged since
    issue 24) join their metric's family after the EMA generator's."""
    keys: list[str] = []
    for rec in records:
        for k in rec:
            prefix, _, rest = k.partition("/")
            if prefix in ("metric", "metric-raw") and rest != "seconds" and k not in keys:
                keys.append(k)
    families: dict[str, list[str]] = {}
    for k in keys:
        families.setdefault(k.split("/")[1], []).append(k)

    def order(key: str) -> tuple[bool, int, float]:
        last = key.rsplit("/", 1)[-1]
        raw = key.startswith("metric-raw/")
        return (raw, 0, -float(last)) if last.isdigit() else (raw, 1, 0.0)

    return {name: sorted(ks, key=order) for name, ks in families.items()}


def _series(records: Sequence[dict[str, Any]], x_key: str, y_key: str) -> tuple[list, list]:
    xs, ys = [], []
    for rec in records:
        x, y = rec.get(x_key), rec.get(y_key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(y):
            xs.append(x / 60.0 if x_key == "seconds" else x)
            ys.append(y)
    return xs, ys


def plot_run(run_dir: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Draw ``run_dir``'s log as a PNG at ``out``; returns the path.

    Layout: 2 rows (x = kimg, x = minutes of training) by 2 + M columns (losses, images/s,
    one per metric family), each panel :data:`PANEL_SIZE` inches at :data:`DPI`: e.g. a run
    with SWD logged gives a 1200 x 600 pixel image.
    """
    records = read_log(run_dir)
    if not records:
        raise ProganError(f"{run_dir}: log.jsonl has no ticks to plot")
    families = metric_families(records)
    columns: list[tuple[str, list[str]]] = [
        ("loss", [k for k in ("D/loss", "G/loss") if any(k in r for r in records)]),
        ("images / second", ["images_per_sec"]),
    ]
    labels = {"swd": "SWD x1e3", "fid": "FID", "ms-ssim": "MS-SSIM", "is": "Inception Score"}
    columns += [(labels.get(name, name), keys) for name, keys in families.items()]
    w, h = PANEL_SIZE
    fig = new_figure(w * len(columns), h * 2)
    axes = fig.subplots(2, len(columns), squeeze=False)
    for row, (x_key, x_label) in enumerate((("kimg", "kimg"), ("seconds", "minutes"))):
        for col, (y_label, keys) in enumerate(columns):
            ax = axes[row][col]
            for key in keys:
                xs, ys = _series(records, x_key, key)
                if xs:
                    style = "--" if key.startswith("metric-raw/") else "-"  # raw G dashed
                    marker = "." if len(xs) < 40 else None
                    ax.plot(xs, ys, style, marker=marker, label=key)
            if y_label.startswith("SWD") and all(
                y > 0 for key in keys for y in _series(records, x_key, key)[1]
            ):
                ax.set_yscale("log")
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            ax.grid(True, alpha=0.3)
            if len(keys) > 1:
                ax.legend(fontsize=7)
    fig.suptitle(title or str(run_dir), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------------------------
# command line


def add_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``progan plot RUN --out PNG``."""
    p = subparsers.add_parser(
        "plot",
        help="plot a run's losses, images/s and metrics against kimg and time",
        description="Draw a run's log.jsonl as a PNG: losses, images/second and the metrics "
        "logged at snapshots, against kimg (top row) and minutes of training (bottom row).",
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder (with log.jsonl)")
    p.add_argument("--out", help="PNG to write [RUN/plot.png]")
    p.add_argument("--title", help="figure title [the run folder]")
    p.set_defaults(func=_run_plot)
    return p


def _run_plot(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.run_dir) / "plot.png"
    path = plot_run(args.run_dir, out, title=args.title)
    print(f"Wrote {path}")
    return 0
