"""The presets: named starting configurations, and which official configuration each one
reproduces (docs/ARCHITECTURE.md, "Presets and the official configurations").

``preset(name, resolution, channels, label_size, num_gpus)`` returns a :class:`TrainConfig`;
:func:`default_mirror` gives the official mirror-augmentation default for a dataset's source
kind. Split from :mod:`progan.config` (which keeps the dataclasses and the JSON round trip) so
that each module reads in one sitting.
"""

from __future__ import annotations

import math

from progan.config import PRESETS, NetworkConfig, TrainConfig
from progan.errors import ConfigError

__all__ = ["MIRROR_SOURCE_KINDS", "OFFICIAL_V2_TABLES", "PRESETS", "default_mirror", "preset"]

# The official code's preset-v2 tables (tkarras/progressive_growing_of_gans, config.py,
# preset-v2-1gpu/2gpus/4gpus/8gpus): number of GPUs -> (minibatch_base, minibatch_dict,
# G/D lrate_dict); the learning rate is 0.001 elsewhere. Minibatch sizes are global (split
# evenly over the GPUs), as ours are.
OFFICIAL_V2_TABLES: dict[int, tuple[int, dict[int, int], dict[int, float]]] = {
    1: (
        4,
        {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        {1024: 0.0015},
    ),
    2: (
        8,
        {4: 256, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8},
        {512: 0.0015, 1024: 0.002},
    ),
    4: (
        16,
        {4: 512, 8: 256, 16: 128, 32: 64, 64: 32, 128: 16},
        {256: 0.0015, 512: 0.002, 1024: 0.003},
    ),
    8: (
        32,
        {4: 512, 8: 256, 16: 128, 32: 64, 64: 32},
        {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003},
    ),
}

# Mirror augmentation by dataset source, as the official configs set it (config.py:
# train.mirror_augment = True for CelebA, CelebA-HQ and every LSUN category; off, the
# default, for CIFAR-10/100, SVHN and MNIST).
MIRROR_SOURCE_KINDS = frozenset({"celeba", "celeba-hq", "lsun"})


def default_mirror(source_kind: str | None) -> bool:
    """Whether the official configs train with mirror augmentation on data from
    ``source_kind`` (``dataset.json``'s ``source_kind``: "celeba", "celeba-hq", "lsun",
    "cifar10", "mnist", "folder", "zip", "synthetic", or None for datasets made before the
    field existed). True for CelebA, CelebA-HQ and LSUN; False for everything else (CIFAR,
    SVHN and MNIST in the official code; unknown sources: the official default, off)."""
    return source_kind in MIRROR_SOURCE_KINDS


def preset(
    name: str,
    resolution: int = 1024,
    channels: int = 3,
    label_size: int = 0,
    num_gpus: int = 1,
) -> TrainConfig:
    """A :class:`TrainConfig` for one of the presets.

    * ``paper``: the official code's ``preset-v1-1gpu``, the configuration of the paper's
      CelebA-HQ and LSUN results (Appendix A.1): 800 kimg per stabilization and per fade-in
      phase, minibatch 16 up to 128x128 then 14, 6, 3 at 256, 512, 1024; learning rate 0.001;
      minibatch-stddev group size 16 (the layer uses ``min(16, minibatch)``, so each whole
      minibatch forms one group); 19,000 kimg in total at every target resolution, as the
      official ``train.total_kimg`` (fully grown at 1600 * (log2(R) - 2) kimg: 12,800 at
      1024x1024, which then trains for 6,200 kimg).
    * ``official-v2``: the official code's default, ``preset-v2-Ngpu(s)``, for ``num_gpus`` 1,
      2, 4 or 8 (:data:`OFFICIAL_V2_TABLES`): 600 kimg phases, the larger minibatches and
      learning rates of that table, group size 4, 12,000 kimg in total.
    * ``paper-cifar10``: Section 6.5: the ``paper`` network and training setup limited to
      32x32 (``resolution`` must be 32), with the gradient penalty's target gamma = 750.
    * ``small``: narrower networks (at most 256 feature maps, latent 256), 300 kimg phases, for a
      single modest GPU.
    * ``cpu``: a real-data run of 30-45 minutes on a 2-core CPU at 32x32 (docs/RESULTS.md): at
      most 128 feature maps (fmap_base 1024: 128 at 4x4 ... 16x16, 64 at 32x32), latent 128,
      minibatch 32, learning rate 0.002, 8 kimg phases, EMA half-life capped at 0.01 x the
      images shown (``ema_rampup``; 0.05 until issue 24: that average spans more steps than
      this fast-moving G stays the same, and lost per-image contrast, docs/RESULTS.md);
      2 kimg ticks, a snapshot every 5 ticks.
    * ``quickstart``: README command 1, a 32x32 run of about 3 minutes on a 2-core CPU
      (12 kimg): small networks (fmap_base 256: 64 feature maps at 4x4 and 8x8, 32 at 16x16,
      16 at 32x32; latent 64), minibatch 8 and learning rate 0.004 (many small steps: 1,500
      in all), 1.5 kimg phases, 1.5 kimg more at the target; EMA ramp-up 0.01 (0.05 before
      issue 24). **Not the
      paper's method in one respect**: the gradient penalty is lazy (``gp_every`` 4, weight
      x4; ``--gp-every 1`` restores the paper's), which makes a step about 1.3x faster on a
      CPU. Tuned on the built-in shapes (docs/RESULTS.md, "Quickstart").
    * ``tiny``: a few-minute CPU run for demos and tests (at most 32 feature maps, latent 32,
      2 kimg phases, minibatch 16).

    ``num_gpus`` only changes ``official-v2`` (the other presets' minibatch sizes are global
    whatever the number of processes).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    if name == "paper-cifar10" and resolution != 32:
        raise ConfigError(
            f"the paper-cifar10 preset is for 32x32 images, not {resolution}x{resolution}"
        )
    net = NetworkConfig(resolution=resolution, channels=channels, label_size=label_size)
    cfg = TrainConfig(preset=name, network=net)
    sched = cfg.schedule
    levels = int(math.log2(resolution)) - 1  # number of resolutions from 4x4 up
    if name in ("paper", "paper-cifar10"):
        net.mbstd_group_size = 16
        sched.stabilize_kimg = sched.fade_kimg = 800.0
        sched.minibatch, sched.minibatch_default = {256: 14, 512: 6, 1024: 3}, 16
        sched.learning_rate, sched.learning_rate_default = {}, 0.001
        sched.total_kimg = 19000.0
        if name == "paper-cifar10":
            cfg.loss.gp_target = 750.0
    elif name == "official-v2":
        if num_gpus not in OFFICIAL_V2_TABLES:
            raise ConfigError(
                f"the official code has preset-v2 tables for 1, 2, 4 or 8 GPUs, not {num_gpus}; "
                "pick one of those or give --batch and --lr"
            )
        base, batches, rates = OFFICIAL_V2_TABLES[num_gpus]
        net.mbstd_group_size = 4
        sched.stabilize_kimg = sched.fade_kimg = 600.0
        sched.minibatch, sched.minibatch_default = dict(batches), base
        sched.learning_rate, sched.learning_rate_default = dict(rates), 0.001
        sched.total_kimg = 12000.0
    elif name == "small":
        net.fmap_base, net.fmap_max, net.latent_size = 4096, 256, 256
        sched.stabilize_kimg = sched.fade_kimg = 300.0
        sched.minibatch = {
            4: 64,
            8: 64,
            16: 64,
            32: 32,
            64: 32,
            128: 16,
            256: 8,
            512: 4,
            1024: 2,
        }
        sched.total_kimg = 300.0 * (2 * levels - 1) + 1200.0
    elif name == "cpu":
        net.fmap_base, net.fmap_max, net.latent_size = 1024, 128, 128
        sched.stabilize_kimg = sched.fade_kimg = 8.0
        sched.minibatch = {}
        sched.minibatch_default = 32
        sched.learning_rate_default = 0.002
        sched.total_kimg = 8.0 * (2 * levels - 1) + 40.0
        cfg.tick_kimg = 2.0
        cfg.snapshot_ticks = 5
        cfg.num_workers = 0
        cfg.ema_rampup = 0.01  # issue 24: 0.05 averaged over a G that changes within the window
    elif name == "quickstart":
        net.fmap_base, net.fmap_max, net.latent_size = 256, 64, 64
        sched.stabilize_kimg = sched.fade_kimg = 1.5
        sched.minibatch = {}
        sched.minibatch_default = 8
        sched.learning_rate_default = 0.004
        sched.total_kimg = 1.5 * (2 * levels - 1) + 1.5
        cfg.loss.gp_every = 4  # the lazy penalty (not the paper's): 1.3x the steps per second
        cfg.tick_kimg = 2.0
        cfg.snapshot_ticks = 5
        cfg.num_workers = 0
        cfg.ema_rampup = 0.01  # as cpu (issue 24)
    elif name == "tiny":
        net.fmap_base, net.fmap_max, net.latent_size = 256, 32, 32
        sched.stabilize_kimg = sched.fade_kimg = 2.0
        sched.minibatch = {}
        sched.minibatch_default = 16
        sched.total_kimg = 2.0 * (2 * levels - 1) + 2.0
        cfg.tick_kimg = 1.0
        cfg.snapshot_ticks = 2
        cfg.grid_size = 16
        cfg.num_workers = 0
        cfg.ema_rampup = 0.1
    return cfg
