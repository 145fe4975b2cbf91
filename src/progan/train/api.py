"""The Python API of training: ``configure`` a run for a dataset, ``train`` it.

``train`` creates (or, on resume, locks and reads) the run folder, builds the
:class:`~progan.train.trainer.Trainer`, loads the checkpoint when resuming, appends the
session to ``run.json`` (:mod:`progan.train.provenance`) and runs the session
(:mod:`progan.train.run_loop`). Launched by torchrun it is one rank of a data-parallel
job (:mod:`progan.train.distributed`): only rank 0 touches the run folder and shares the
config and training state with the others.

``progan.train.loop`` re-exports these names (their home before the trainer was split).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from progan.config import TrainConfig, from_dict, load_config, save_config, to_dict
from progan.errors import ConfigError
from progan.presets import default_mirror, preset
from progan.train import checkpoint as ckpt
from progan.train import provenance
from progan.train.distributed import DEFAULT_TIMEOUT_S, Dist, on_main_shared, run_as_rank
from progan.train.run_dir import RunLock, new_run_dir
from progan.train.trainer import Trainer


def configure(
    data: str | Path,
    outdir: str | Path = "runs",
    preset_name: str = "paper",
    resolution: int | None = None,
    conditional: bool = False,
    init_from: str | Path | None = None,
    **overrides: Any,
) -> TrainConfig:
    """A validated :class:`TrainConfig` for a dataset: network shape from the dataset
    (resolution, channels, classes) and a preset; ``overrides`` set top-level fields
    (``kimg`` sets ``schedule.total_kimg``, ``loss`` the loss name, ``growing``
    ``schedule.growing``).

    ``mirror`` defaults, as in the official configs, from the dataset's ``source_kind``
    (:func:`progan.presets.default_mirror`: on for CelebA, CelebA-HQ and LSUN) and
    ``mirror_from`` records ``"dataset:KIND"``; an explicit ``mirror=`` wins and records
    ``"option"``."""
    from progan.data.dataset import ImageDataset

    ds = ImageDataset(data)
    res = resolution or ds.resolution
    if res > ds.resolution or ds.resolution % res:
        raise ConfigError(
            f"--resolution {res} is not available from {data} (its images are "
            f"{ds.resolution}x{ds.resolution})"
        )
    if conditional and not ds.num_classes:
        raise ConfigError(f"--cond needs a labelled dataset; {data} has no labels")
    cfg = preset(preset_name, res, ds.channels, ds.num_classes if conditional else 0)
    cfg.data, cfg.outdir = str(data), str(outdir)
    if "mirror" in overrides:
        overrides.setdefault("mirror_from", "option")
    else:
        kind = ds.source_kind
        cfg.mirror, cfg.mirror_from = default_mirror(kind), f"dataset:{kind or 'unknown'}"
    kimg = overrides.pop("kimg", None)
    if kimg is not None:
        cfg.schedule.total_kimg = float(kimg)
    loss = overrides.pop("loss", None)
    if loss is not None:
        cfg.loss.name = loss
    growing = overrides.pop("growing", None)
    if growing is not None:
        cfg.schedule.growing = bool(growing)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"unknown training option {key!r}")
        setattr(cfg, key, value)
    if init_from:
        from progan.train.init_from import apply_init, read_init

        cfg.init_from = str(init_from)
        apply_init(cfg, read_init(init_from), ds.channels, res)
    cfg.validate()
    return cfg


def _describe(cfg: TrainConfig) -> str:
    name = Path(cfg.data).name.split(".")[0] or "data"
    return f"{name}-{cfg.preset}-{cfg.network.resolution}"


def train(
    cfg: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    total_kimg: float | None = None,
    progress: bool = True,
    max_ticks: int | None = None,
    max_seconds: float | None = None,
    dist_timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Train a new run (``cfg``) or continue one (``resume``: a run folder or a
    ``state-*.pt`` file). ``total_kimg`` may extend a resumed run; ``max_ticks`` and
    ``max_seconds`` end this session early (with a checkpoint). Returns the run folder.

    Launched by torchrun (``WORLD_SIZE`` > 1) this process is one rank of a data-parallel job
    (:mod:`progan.train.distributed`; collectives time out after ``dist_timeout`` seconds):
    rank 0 creates or locks the run folder and reads the config and checkpoint, and shares
    them with the other ranks, which need no access to the run folder.
    """
    return run_as_rank(
        lambda ctx: _train(ctx, cfg, resume, total_kimg, progress, max_ticks, max_seconds),
        dist_timeout,
    )


def _train(
    ctx: Dist | None,
    cfg: TrainConfig | None,
    resume: str | Path | None,
    total_kimg: float | None,
    progress: bool,
    max_ticks: int | None,
    max_seconds: float | None,
) -> Path:
    main = ctx is None or ctx.is_main
    started = provenance.utc_now()
    resume = Path(resume) if resume is not None else None
    with contextlib.ExitStack() as stack:

        def prepare() -> tuple[str, dict[str, Any]]:
            """Rank 0: the config and the (new or locked) run folder."""
            nonlocal cfg
            if resume is not None:
                run_dir = resume if resume.is_dir() else resume.parent
                cfg = load_config(run_dir / "config.json")
                if total_kimg is not None:
                    cfg.schedule.total_kimg = float(total_kimg)
                cfg.validate()
            else:
                if cfg is None:
                    raise ConfigError("train() needs a config or resume=")
                if total_kimg is not None:
                    cfg = replace(cfg, schedule=replace(cfg.schedule, total_kimg=float(total_kimg)))
                cfg.validate()
                run_dir = new_run_dir(cfg.outdir, _describe(cfg))
            stack.enter_context(RunLock(run_dir))
            save_config(cfg, run_dir / "config.json")
            return str(run_dir), to_dict(cfg)

        run_dir_str, cfg_dict = on_main_shared(ctx, prepare, "preparing the run folder")
        run_dir = Path(run_dir_str)
        cfg = from_dict(TrainConfig, cfg_dict)
        trainer = Trainer(cfg, run_dir, progress=progress, dist=ctx)
        source = None
        if resume is not None:

            def load() -> tuple[dict[str, Any], str]:
                if resume.is_dir():
                    entry, state = ckpt.newest_valid_checkpoint(run_dir)
                    return state, str(run_dir / entry["state"])
                return ckpt.load_training_state(resume), str(resume)

            state, source = on_main_shared(ctx, load, "loading the checkpoint")
            trainer.load_state_dict(state, source=source)
            del state
            if progress and main:
                tqdm.write(f"Resuming {run_dir} at {trainer.images / 1000:.3f} kimg from {source}")
        elif cfg.init_from:
            from progan.train.init_from import read_init

            def load_init() -> dict[str, Any]:
                init = read_init(cfg.init_from)
                return {"G": init.G, "D": init.D, "G_ema": init.G_ema}

            trainer.init_weights(on_main_shared(ctx, load_init, "loading --init-from"))
            if progress and main:
                tqdm.write(f"Starting from the weights of {cfg.init_from}")
        provenance.record_session(run_dir, ctx, trainer.device, started, resumed_from=source)
        trainer.run(max_ticks=max_ticks, max_seconds=max_seconds)
        if trainer.stop_requested and main:
            tqdm.write(f"Stopped; checkpoint written. Resume with: progan train --resume {run_dir}")
    return run_dir
