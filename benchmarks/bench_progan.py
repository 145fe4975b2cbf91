"""progan's own training step as the throughput benchmark runs it: the config and synthetic
dataset of a row, the ``--variants`` settings, and :class:`ProganStep` (``Trainer.train_step``
plus the run loop's per-step bookkeeping). Also used by ``benchmarks/scaling.py``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from progan.config import TrainConfig
from progan.presets import preset
from progan.schedule import PhaseState

TOKENS = (
    "fp32", "tf32", "bf16", "channels_last", "explicit", "compile", "compile_g", "lazy-gp4",
)  # fmt: skip
CUDA_ONLY_TOKENS = ("tf32", "bf16", "channels_last")
# The issue-16 variants (benchmarks/gpu_issue16.sh): native vs explicit convolutions in each
# precision and layout, the trainer's torch.compile and the lazy penalty (every 4th D step).
ISSUE16_VARIANTS = (
    "tf32", "bf16", "channels_last", "bf16+channels_last",
    "explicit", "explicit+bf16", "explicit+channels_last", "explicit+bf16+channels_last",
    "explicit+compile", "explicit+bf16+lazy-gp4",
)  # fmt: skip


def network_config(preset_name: str, resolution: int, channels: int = 3) -> TrainConfig:
    """The preset's TrainConfig for networks fully grown at ``resolution`` (>= 8 is built; the
    4x4 case runs the 8x8 networks at depth 0)."""
    return preset(preset_name, max(resolution, 8), channels)


def make_dataset(folder: Path, resolution: int, batch: int) -> Path:
    """A small synthetic shapes dataset at ``resolution`` in ``folder`` (a zip)."""
    from progan.data.create import create_dataset

    count = max(2 * batch, 16 if resolution >= 512 else 64)
    path = folder / f"shapes-{resolution}.zip"
    if not path.exists():
        create_dataset("synthetic:shapes", path, resolution, max_images=count, progress=False)
    return path


def variant_settings(name: str) -> dict[str, Any]:
    """``TOKENS`` joined by ``+``: ``fp32`` (TF32 off; else on), ``tf32``, ``bf16`` (autocast),
    ``channels_last``, ``explicit`` (``conv_impl="explicit"``), ``compile``
    (``TrainConfig.compile``: G and the G step's D), ``compile_g`` (the whole of G wrapped in
    torch.compile), ``lazy-gp4`` (``gp_every=4``)."""
    tokens = [t for t in name.split("+") if t]
    bad = [t for t in tokens if t not in TOKENS]
    if bad or not tokens:
        raise ValueError(f"unknown variant {name!r}; use {', '.join(TOKENS)} joined by '+'")
    compile_mode = "trainer" if "compile" in tokens else ("G" if "compile_g" in tokens else None)
    return {
        "tf32": "fp32" not in tokens,
        "amp": "bf16" if "bf16" in tokens else "none",
        "channels_last": "channels_last" in tokens,
        "compile": compile_mode,
        "conv_impl": "explicit" if "explicit" in tokens else "native",
        "gp_every": 4 if "lazy-gp4" in tokens else 1,
    }


def make_trainer(
    cfg: TrainConfig, data: Path, run_dir: Path, device: torch.device, settings: dict[str, Any]
) -> Any:
    """A Trainer on ``data`` with its stream open at position 0 (as ``Trainer.run`` opens it)."""
    from progan.train.trainer import Trainer

    cfg = copy.deepcopy(cfg)
    cfg.data, cfg.outdir, cfg.device = str(data), str(run_dir), str(device)
    cfg.num_workers = 0
    cfg.tf32 = settings.get("tf32", True)
    cfg.amp = settings.get("amp", "none")
    cfg.channels_last = settings.get("channels_last", False)
    cfg.network.conv_impl = settings.get("conv_impl", "native")
    cfg.loss.gp_every = settings.get("gp_every", 1)
    cfg.compile = settings.get("compile") == "trainer"
    trainer = Trainer(cfg, run_dir, progress=False)
    if settings.get("compile") == "G":
        trainer.G = torch.compile(trainer.G)
    trainer._open_stream_at(0)
    return trainer


class ProganStep:
    """``Trainer.train_step`` plus the per-step bookkeeping of ``Trainer.run`` (loss sums on the
    device; every ``loss_log_every`` steps the read-back of the losses and the check that all
    weights are finite, ``Trainer._read_back``)."""

    def __init__(self, trainer: Any, st: PhaseState) -> None:
        self.trainer, self.st = trainer, st
        trainer._enter_phase(st)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def __call__(self) -> None:
        t, st = self.trainer, self.st
        stats = t.train_step(st)
        t.images += st.batch_size
        t.steps += 1
        for k, v in stats.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1
        if self.count >= t.cfg.loss_log_every:
            read_back = getattr(t, "_read_back", None)  # losses + finite-weights check
            if read_back is not None:
                read_back(self.sums, self.count, False)
            else:
                _ = {k: v.item() / self.count for k, v in self.sums.items()}
            self.sums, self.count = {}, 0
