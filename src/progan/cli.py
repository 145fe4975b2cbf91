"""The ``progan`` command: a thin argparse layer over the Python API.

Sub-commands: ``dataset create|info|align-faces``, ``train``, ``generate``, ``metrics``,
``video``, ``timelapse``, ``grid``, ``neighbors``, ``experiment ablation|convergence``, ``plot``,
``convert`` (official network pickles), ``project`` and ``explore`` (the web explorer, optional
extra ``progan[explore]``).
Each one parses its options, calls one API function and prints the result. A
:class:`progan.errors.ProganError` is printed as ``Error: ...`` with exit status 2; Ctrl-C exits
with status 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from progan.cli_options import add_device, add_fid_preprocess, add_seed
from progan.config import CONV_IMPLS, LOSSES, PRESETS, TrainConfig, to_dict
from progan.errors import ProganError
from progan.presets import preset


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a progressive GAN (or resume a run)",
        description="Train a progressive GAN on a prepared dataset.",
    )
    p.add_argument("--data", help="dataset made by `progan dataset create` (zip or folder)")
    p.add_argument("--outdir", default="runs", help="parent folder of run folders [runs]")
    p.add_argument("--resolution", type=int, help="target resolution [the dataset's]")
    p.add_argument(
        "--kimg",
        type=float,
        help="total length in kimg (thousands of real images "
        "shown to D) [preset's]; on --resume it may extend the run",
    )
    p.add_argument("--preset", choices=PRESETS, default="paper", help="[paper]")
    p.add_argument("--loss", choices=LOSSES, help="[wgan-gp]")
    p.add_argument("--cond", action="store_true", help="label-conditional model (AC-GAN D)")
    p.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips of reals [as the official configs: on for CelebA, "
        "CelebA-HQ and LSUN datasets (dataset.json source_kind), off otherwise]",
    )
    add_seed(p)
    p.add_argument(
        "--no-growing",
        action="store_true",
        help="train the full-resolution networks from the start (no progressive growing)",
    )
    p.add_argument(
        "--phase-kimg",
        type=float,
        help="kimg per stabilization and per fade-in phase [preset's: paper 800]",
    )
    p.add_argument("--batch", type=int, help="one minibatch size for every resolution")
    p.add_argument("--d-steps", type=int, help="D steps per G step (n_critic) [1, as in the paper]")
    p.add_argument("--lr", type=float, help="one learning rate for every resolution [0.001]")
    p.add_argument(
        "--ema-rampup",
        type=float,
        help="cap the generator EMA's half-life at this fraction of the images shown; 0 = the "
        "paper's fixed decay [preset's: cpu and quickstart 0.01, tiny 0.1, others 0]",
    )
    p.add_argument(
        "--gp-target",
        type=float,
        help="gradient penalty target gamma: lambda * (||grad|| - gamma)^2 / gamma^2 "
        "[preset's: 1; paper-cifar10 750]",
    )
    p.add_argument("--fmap-base", type=int, help="feature maps: fmap_base [preset's]")
    p.add_argument("--fmap-max", type=int, help="feature maps: at most this many [preset's]")
    p.add_argument("--latent-size", type=int, help="latent dimension [preset's]")
    p.add_argument(
        "--max-minutes",
        type=float,
        help="end this session after about this many minutes of wall time (at a tick), "
        "with a snapshot and a checkpoint; --resume continues",
    )
    p.add_argument("--tick-kimg", type=float, help="kimg between progress lines [preset's]")
    p.add_argument("--snapshot-ticks", type=int, help="ticks between snapshots [preset's]")
    p.add_argument(
        "--metrics",
        default="",
        help="comma-separated metrics evaluated at every snapshot, e.g. swd,fid; the first "
        "one picks the best snapshot (best.json)",
    )
    add_fid_preprocess(p, default=None)
    p.add_argument(
        "--metrics-num",
        type=int,
        help="images per metric at each snapshot [each metric's default, e.g. SWD 16384]",
    )
    add_device(p)
    p.add_argument(
        "--workers", type=int, help="data loading worker processes (default -1: all usable cores)"
    )
    p.add_argument(
        "--data-cache",
        choices=["auto", "none", "cpu", "device"],
        help="reals cached whole (cpu, device), or read each phase from the dataset's levels "
        "(none); auto: cached when they fit [auto]",
    )
    p.add_argument("--amp", choices=["none", "bf16"], help="mixed precision on CUDA [none]")
    p.add_argument(
        "--conv-impl",
        choices=list(CONV_IMPLS),
        help="D's convolutions: native (F.conv2d) or explicit (backward as ordinary "
        "convolutions, for a faster gradient-penalty double backward; same values) [native]",
    )
    p.add_argument(
        "--gp-every",
        type=int,
        help="lazy gradient penalty (not the paper's method): compute it on every K-th D step "
        "only, with its weight multiplied by K [1 = every step, as in the paper]",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="NHWC memory format end to end on CUDA (reals, G, D, every layer) [off]",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile G's forward and D's forward in the G step (never the gradient "
        "penalty's D); falls back to eager with a warning where compiling fails [off]",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_OR_CHECKPOINT",
        help="continue a run folder (newest good checkpoint) or a state-*.pt file",
    )
    p.add_argument(
        "--init-from",
        metavar="FILE",
        help="start from these weights (fine-tuning): an official karras2018iclr-*.pkl, "
        "progan convert's networks.pt, a state-*.pt or run folder (G, D, EMA G), or a "
        "snapshot (G; fresh D). The network and its depth come from the file; fresh optimizers",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="data-parallel on N local GPUs: starts N worker processes (CPU processes with "
        "gloo when there is no CUDA or with --device cpu); not needed under torchrun. With "
        "--preset official-v2, N (or torchrun's world size) picks the official "
        "preset-v2-Ngpus minibatch and learning-rate table",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        help="multi-GPU/node: seconds after which a stuck collective ends the job [300]",
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from progan.train.api import configure, train
    from progan.train.distributed import env_rank, env_world_size
    from progan.train.launch import launch_local

    if args.gpus > 1 and env_world_size() == 1 and not args.dry_run:
        return launch_local(args.gpus, _run_train, argparse.Namespace(**{**vars(args), "gpus": 0}))
    dist_kw = {"progress": not args.no_progress, "dist_timeout": args.dist_timeout}
    max_seconds = None if args.max_minutes is None else 60.0 * args.max_minutes
    if args.resume and args.init_from:
        raise ProganError("--init-from starts a new run; --resume continues one: give one of them")
    if args.resume:
        run_dir = train(
            resume=args.resume, total_kimg=args.kimg, max_seconds=max_seconds, **dist_kw
        )
        if env_rank() == 0:
            print(f"Run folder: {run_dir}")
        return 0
    if not args.data:
        raise ProganError("--data is required (or --resume RUN)")
    overrides: dict = {"seed": args.seed, "device": args.device}
    if args.mirror is not None:
        overrides["mirror"] = args.mirror
    for flag, key in (
        ("kimg", "kimg"),
        ("loss", "loss"),
        ("workers", "num_workers"),
        ("data_cache", "data_cache"),
        ("amp", "amp"),
        ("tick_kimg", "tick_kimg"),
        ("snapshot_ticks", "snapshot_ticks"),
        ("metrics_num", "metrics_num"),
        ("d_steps", "d_steps"),
        ("fid_preprocess", "fid_preprocess"),
        ("ema_rampup", "ema_rampup"),
    ):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.no_growing:
        overrides["growing"] = False
    if args.metrics:
        overrides["metrics"] = [m.strip() for m in args.metrics.split(",") if m.strip()]
    # mirror: configure() defaults it from the dataset's source kind (official configs)
    if args.init_from:
        for flag in ("fmap_base", "fmap_max", "latent_size"):
            if getattr(args, flag) is not None:
                raise ProganError(f"--{flag.replace('_', '-')} does not apply with --init-from")
        overrides["init_from"] = args.init_from
    cfg = configure(args.data, args.outdir, args.preset, args.resolution, args.cond, **overrides)
    if args.preset == "official-v2" and (args.batch is None or args.lr is None):
        world = args.gpus if args.gpus > 1 else env_world_size()
        _use_official_v2_table(cfg, world)
    if args.gp_target is not None:
        cfg.loss.gp_target = args.gp_target
    if args.phase_kimg is not None:
        cfg.schedule.stabilize_kimg = cfg.schedule.fade_kimg = args.phase_kimg
    if args.batch is not None:
        cfg.schedule.minibatch, cfg.schedule.minibatch_default = {}, args.batch
    if args.lr is not None:
        cfg.schedule.learning_rate, cfg.schedule.learning_rate_default = {}, args.lr
    for flag in ("fmap_base", "fmap_max", "latent_size"):
        if getattr(args, flag) is not None:
            setattr(cfg.network, flag, getattr(args, flag))
    if args.conv_impl is not None:
        cfg.network.conv_impl = args.conv_impl
    if args.gp_every is not None:
        cfg.loss.gp_every = args.gp_every
    for flag in ("channels_last", "compile"):
        if getattr(args, flag):
            setattr(cfg, flag, True)
    cfg.validate()
    if args.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    run_dir = train(cfg, max_seconds=max_seconds, **dist_kw)
    if env_rank() == 0:
        print(f"Run folder: {run_dir}")
    return 0


def _use_official_v2_table(cfg: TrainConfig, num_gpus: int) -> None:
    """Give ``cfg`` the official preset-v2 minibatch and learning-rate table for
    ``num_gpus`` processes (preset-v2-1gpu/2gpus/4gpus/8gpus)."""
    table = preset("official-v2", cfg.network.resolution, num_gpus=num_gpus).schedule
    sched = cfg.schedule
    sched.minibatch, sched.minibatch_default = table.minibatch, table.minibatch_default
    sched.learning_rate = table.learning_rate
    sched.learning_rate_default = table.learning_rate_default


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="images from a trained generator",
        description="Generate images from a snapshot (.safetensors), a run folder or an "
        "official network pickle (karras2018iclr-*.pkl).",
    )
    p.add_argument(
        "checkpoint",
        help="snapshot-*.safetensors, a run folder (newest snapshot) or an official .pkl (Gs)",
    )
    p.add_argument("--seeds", default="0-63", help="e.g. 0-63 or 1,5,9-12 [0-63]")
    p.add_argument("--grid", help="write one grid PNG here")
    p.add_argument("--outdir", help="write one PNG per seed into this folder")
    p.add_argument(
        "--label",
        type=int,
        help="class for every image (conditional models) [balanced: seed mod number of "
        "classes, as `progan metrics`]",
    )
    p.add_argument(
        "--rows-per-label",
        action="store_true",
        help="conditional models: one grid row per class, seeds along the row",
    )
    p.add_argument("--best", action="store_true", help="a run folder's best snapshot (best.json)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="the raw generator saved beside the snapshot (raw-snapshot-*), not its moving average",
    )
    add_device(p, help=None)
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from progan.generate import balanced_labels, generate_images, load_generator, parse_seeds
    from progan.tools.grid import save_image_grid, write_png
    from progan.train.trainer import resolve_device

    if not args.grid and not args.outdir:
        raise ProganError("give --grid FILE.png and/or --outdir DIR")
    G = load_generator(args.checkpoint, resolve_device(args.device), best=args.best, raw=args.raw)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        raise ProganError(str(exc)) from exc
    labels = None
    cols = None
    if G.label_size:
        if args.rows_per_label:
            labels = [c for c in range(G.label_size) for _ in seeds]
            cols = len(seeds)
            seeds = seeds * G.label_size
        elif args.label is not None:
            labels = [args.label] * len(seeds)
        else:
            labels = balanced_labels(seeds, G.label_size)
    elif args.label is not None or args.rows_per_label:
        raise ProganError("this generator is unconditional: --label/--rows-per-label do not apply")
    try:
        images = generate_images(G, seeds, labels)
    except ValueError as exc:  # a class outside the generator's range
        raise ProganError(str(exc)) from exc
    if args.grid:
        save_image_grid(images, args.grid, cols=cols)
        print(f"Wrote {args.grid} ({len(seeds)} images)")
    if args.outdir:
        out = Path(args.outdir)
        for i, (seed, img) in enumerate(zip(seeds, images.numpy(), strict=True)):
            suffix = f"-class{labels[i]}" if labels is not None else ""
            write_png(
                np.ascontiguousarray(img.transpose(1, 2, 0)), out / f"seed{seed:06d}{suffix}.png"
            )
        print(f"Wrote {len(seeds)} images to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="progan",
        description="Progressive Growing of GANs (Karras et al., ICLR 2018) in PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dataset = sub.add_parser("dataset", help="prepare and inspect datasets")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    from progan.data.commands import add_commands as add_dataset_commands

    add_dataset_commands(dataset_sub)
    _add_train(sub)
    _add_generate(sub)
    from progan.metrics.commands import add_command as add_metrics_command
    from progan.tools.commands import add_commands as add_tool_commands

    add_metrics_command(sub)
    add_tool_commands(sub, dataset_sub)
    from progan.experiments.commands import add_command as add_experiment_command
    from progan.official.commands import add_command as add_convert_command
    from progan.tools.plot import add_command as add_plot_command

    add_experiment_command(sub)
    add_plot_command(sub)
    add_convert_command(sub)
    from progan.tools.project_cli import add_command as add_project_command

    add_project_command(sub)
    from progan.explore.commands import add_command as add_explore_command

    add_explore_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ProganError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk while writing images or logs
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
