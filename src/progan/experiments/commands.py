"""``progan experiment ablation|convergence``: the paper's Table 1 and Figure 4 studies.

progan experiment ablation --data DEST --kimg K --outdir DIR [--configs a,b,c,...]
progan experiment convergence --data DEST --minutes M --outdir DIR [--phase-kimg P]
"""

from __future__ import annotations

import argparse
from typing import Any

from progan.cli_options import add_device, add_seed
from progan.config import PRESETS, TrainConfig

__all__ = ["add_command", "base_config"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset made by `progan dataset create`")
    p.add_argument("--outdir", required=True, help="folder for the runs, tables and plots")
    p.add_argument("--resolution", type=int, help="target resolution [the dataset's]")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="paper",
        help="base settings (EMA, ticks, workers) and full network width [paper]",
    )
    p.add_argument("--fmap-base", type=int, help="full-width fmap_base [preset's]")
    p.add_argument("--fmap-max", type=int, help="full-width fmap_max [preset's]")
    p.add_argument("--latent", type=int, help="full latent size [preset's]")
    p.add_argument(
        "--phase-kimg",
        type=float,
        help="kimg per stabilization and per fade-in phase when growing [ablation: "
        "kimg * 600 / 10000 (the paper's 600 at --kimg 10000), at most kimg / (2L - 1) for L "
        "resolutions; convergence: 600, as the paper's Figure 4]",
    )
    p.add_argument("--tick-kimg", type=float, help="kimg per tick (log line) [preset's]")
    p.add_argument(
        "--num", type=int, help="images per metric [SWD 16384 (capped by the data), MS-SSIM 20000]"
    )
    add_seed(p)
    add_device(p)
    p.add_argument("--workers", type=int, help="data loading worker processes [preset's]")
    p.add_argument("--progress", action="store_true", help="show training progress bars")


def add_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``progan experiment`` with its actions ``ablation`` and ``convergence``."""
    exp = subparsers.add_parser(
        "experiment",
        help="the paper's studies: Table 1 ablation, Figure 4 convergence",
        description="Reproduce the paper's ablation (Table 1) and convergence study (Figure 4).",
    )
    sub = exp.add_subparsers(dest="experiment", required=True, metavar="STUDY")
    a = sub.add_parser(
        "ablation",
        help="train Table 1's configurations (a)-(h) at an equal budget and tabulate metrics",
        description="Train configurations (a)-(h) of Table 1 (or a subset) for the same kimg "
        "((h): twice) and write DIR/ablation.md and .csv (SWD x1e3 per level, average, "
        "MS-SSIM) and DIR/<config>-samples.png. Rows (a)-(g) use fmap_base / 4, (h) the full "
        "width. See progan.experiments.ablation for what each row switches.",
    )
    _common(a)
    a.add_argument(
        "--kimg",
        type=float,
        default=10_000.0,
        help="budget per configuration ((h): twice) [10000: the paper's 10M real images, "
        "Section 6.1]",
    )
    a.add_argument(
        "--configs",
        default="all",
        help="comma-separated rows: a,b,c,d,e*,e,f,g,h (e-star for e*) [all]",
    )
    a.add_argument("--grid", type=int, default=64, help="samples per configuration grid [64]")
    a.set_defaults(func=_run_ablation)

    c = sub.add_parser(
        "convergence",
        help="SWD against wall-clock time with and without progressive growing",
        description="Train Table 1 row (g) (or --config) with and without progressive growing "
        "for the same training time each, evaluating SWD per level after each of --evals "
        "chunks; write DIR/convergence.png, throughput.png and convergence.csv.",
    )
    _common(c)
    c.add_argument("--minutes", type=float, required=True, help="training time per arm")
    c.add_argument("--evals", type=int, default=10, help="SWD evaluations per arm [10]")
    c.add_argument("--config", default="g", help="Table 1 row used by both arms [g]")
    c.add_argument(
        "--arms",
        default="growing,no-growing",
        help="which arms to run, comma-separated [growing,no-growing]",
    )
    c.set_defaults(func=_run_convergence)

    m = sub.add_parser(
        "convergence-merge",
        help="combine convergence arms run separately into one CSV and plot",
        description="Combine the convergence.json of arms run separately (--arms growing in "
        "one folder, --arms no-growing in another) into OUTDIR/convergence.csv, "
        "convergence.png and throughput.png.",
    )
    m.add_argument("folders", nargs="+", help="folders written by `experiment convergence`")
    m.add_argument("--outdir", required=True, help="where the combined files go")
    m.set_defaults(func=_run_convergence_merge)
    return exp


def _run_convergence_merge(args: argparse.Namespace) -> int:
    from progan.experiments.convergence import merge_convergence

    out = merge_convergence(args.folders, args.outdir)
    print(f"Wrote {out['convergence_png']}, {out['throughput_png']} and {out['csv']}")
    return 0


def base_config(args: argparse.Namespace, outdir: str) -> TrainConfig:
    """The full-width configuration both studies start from."""
    from progan.train.api import configure

    overrides: dict[str, Any] = {"seed": args.seed, "device": args.device}
    if args.workers is not None:
        overrides["num_workers"] = args.workers
    if args.tick_kimg is not None:
        overrides["tick_kimg"] = args.tick_kimg
    cfg = configure(args.data, outdir, args.preset, args.resolution, **overrides)
    if args.fmap_base is not None:
        cfg.network.fmap_base = args.fmap_base
    if args.fmap_max is not None:
        cfg.network.fmap_max = args.fmap_max
    if args.latent is not None:
        cfg.network.latent_size = args.latent
    cfg.validate()
    return cfg


def _run_ablation(args: argparse.Namespace) -> int:
    from progan.experiments.ablation import parse_config_keys, run_ablation

    rows = parse_config_keys(args.configs)
    base = base_config(args, args.outdir)
    run_ablation(
        base,
        rows,
        args.kimg,
        phase_kimg=args.phase_kimg,
        num=args.num,
        grid_size=args.grid,
        progress=args.progress,
    )
    print(f"Wrote {args.outdir}/ablation.md and ablation.csv")
    return 0


def _run_convergence(args: argparse.Namespace) -> int:
    from progan.errors import ConfigError
    from progan.experiments.ablation import parse_config_keys
    from progan.experiments.convergence import ARMS, run_convergence

    row = parse_config_keys(args.config)
    if len(row) != 1:
        raise ConfigError("--config takes one Table 1 row, e.g. g")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        raise ConfigError(f"--arms: choose from {', '.join(ARMS)}")
    base = base_config(args, args.outdir)
    phase = args.phase_kimg if args.phase_kimg is not None else 600.0
    out = run_convergence(
        base,
        args.minutes,
        phase,
        evals=args.evals,
        num=args.num,
        config_key=row[0].key,
        tick_kimg=args.tick_kimg or 0,
        arms=arms,
        progress=args.progress,
    )
    print(f"Wrote {out['convergence_png']}, {out['throughput_png']} and {out['csv']}")
    return 0
