"""Typed configuration: networks, schedule, loss, training; presets; JSON round trip.

Every run writes its resolved :class:`TrainConfig` as ``config.json`` in its folder, and every
generator snapshot carries its :class:`NetworkConfig`, so a model can always be rebuilt
without the code that trained it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from progan.errors import ConfigError

T = TypeVar("T")

LOSSES = ("wgan-gp", "lsgan", "logistic")
PRESETS = ("paper", "official-v2", "paper-cifar10", "small", "cpu", "quickstart", "tiny")

CONV_IMPLS = ("native", "explicit")  # NetworkConfig.conv_impl (progan.nn.conv_ops)
# The FID/IS Inception's input conventions (progan.metrics.inception_net): "tf" = the TensorFlow
# graph's resize and scaling (the paper's, NVIDIA's, torch-fidelity's), "pytorch-fid".
FID_PREPROCESS = ("tf", "pytorch-fid")


@dataclass
class NetworkConfig:
    """Shape of G and D (paper Appendix A.1).

    Feature maps at a block of resolution 2**k are ``min(fmap_base / 2**((k-1) * fmap_decay),
    fmap_max)``: with the defaults 512 up to 32x32, then 256, 128, 64, 32 and 16 at 1024x1024.
    """

    resolution: int = 1024  # target (final) resolution, a power of two in [8, 1024]
    channels: int = 3  # image channels, 1 or 3
    label_size: int = 0  # number of classes for conditioning; 0 = unconditional
    latent_size: int = 512
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    mbstd_group_size: int = 4  # minibatch stddev group size; 0 disables the layer
    pixelnorm: bool = True  # pixelwise feature normalization in G
    equalized_lr: bool = True  # run-time He scaling of all weights
    normalize_latents: bool = True  # pixel-normalize the (latent, label) input of G
    # Switches for the paper's ablation (Table 1); the defaults are the paper's final networks.
    batchnorm_g: bool = False  # batch norm before every activation of G (Table 1 (a)-(c))
    layernorm_d: bool = False  # layer norm before every hidden activation of D ((a)-(c))
    mbdisc_kernels: int = 0  # minibatch discrimination in D: kernels B (Table 1 (e*)); 0 = off
    mbdisc_dims: int = 5  # minibatch discrimination: dimensions C of each kernel
    # G's first dense layer: "per-map" = one bias per 4x4 feature map (the official code);
    # "per-unit" = one per output unit, the form of progan snapshots written before 2026-12-02,
    # kept so that those snapshots still load (set automatically by load_generator).
    g_first_bias: str = "per-map"
    # D's convolutions and dense layers: "native" (F.conv2d/F.linear) or "explicit" (same
    # values; backward written as ordinary convolutions so that the gradient penalty's double
    # backward avoids PyTorch's generic one; nn/conv_ops.py). A speed option, not a model change.
    conv_impl: str = "native"
    # D's second convolution of each block: False = convolution, bias, leaky ReLU, then 2x2
    # average pooling (the paper's order); True = pooling before the bias and activation, as
    # the official code's fused Conv1_down (fused_scale=True) computes (set by progan.official).
    d_pool_before_activation: bool = False

    def validate(self) -> None:
        log2 = math.log2(self.resolution) if self.resolution > 0 else -1
        if log2 != int(log2) or not 8 <= self.resolution <= 1024:
            raise ConfigError(
                f"resolution must be a power of two in [8, 1024], got {self.resolution}"
            )
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.label_size < 0 or self.latent_size < 1:
            raise ConfigError("label_size must be >= 0 and latent_size >= 1")
        if self.mbstd_group_size < 0:
            raise ConfigError("mbstd_group_size must be >= 0")
        if self.g_first_bias not in ("per-map", "per-unit"):
            raise ConfigError(
                f"g_first_bias must be per-map or per-unit, got {self.g_first_bias!r}"
            )
        if self.mbdisc_kernels < 0 or self.mbdisc_dims < 1:
            raise ConfigError("mbdisc_kernels must be >= 0 and mbdisc_dims >= 1")
        if self.conv_impl not in CONV_IMPLS:
            raise ConfigError(
                f"conv_impl must be one of {', '.join(CONV_IMPLS)}, got {self.conv_impl!r}"
            )

    @property
    def max_depth(self) -> int:
        """Index of the last block: 0 is the 4x4 block, ``max_depth`` the target resolution."""
        return int(math.log2(self.resolution)) - 2

    def num_features(self, depth: int) -> int:
        """Feature maps of the block at ``depth`` (resolution 4 * 2**depth)."""
        stage = depth + 1
        # at least one feature map, so narrow presets still build at high resolutions
        return max(1, int(min(self.fmap_base / 2.0 ** (stage * self.fmap_decay), self.fmap_max)))


@dataclass
class ScheduleConfig:
    """Progressive growing schedule (paper Section 3 and Appendix A.1), in kimg.

    Training starts at ``start_resolution`` and stabilizes there for ``stabilize_kimg``; then each
    new resolution fades in over ``fade_kimg`` and stabilizes over ``stabilize_kimg``, until the
    target resolution, where training continues to ``total_kimg``.
    """

    stabilize_kimg: float = 800.0
    fade_kimg: float = 800.0
    total_kimg: float = 19000.0  # paper preset (official preset-v1-1gpu): 19,000 kimg
    start_resolution: int = 4
    # Per-resolution minibatch size and Adam learning rate; keys are resolutions.
    minibatch: dict[int, int] = field(
        default_factory=lambda: {
            4: 16,
            8: 16,
            16: 16,
            32: 16,
            64: 16,
            128: 16,
            256: 14,
            512: 6,
            1024: 3,
        }
    )
    minibatch_default: int = 16
    learning_rate: dict[int, float] = field(default_factory=dict)
    learning_rate_default: float = 0.001
    growing: bool = True  # False: train the full-resolution networks from the start
    reset_optimizer: bool = True  # reset Adam's state when a fade starts and when it ends

    def validate(self) -> None:
        if self.stabilize_kimg < 0 or self.fade_kimg < 0 or self.total_kimg <= 0:
            raise ConfigError("stabilize_kimg and fade_kimg must be >= 0 and total_kimg > 0")
        if self.stabilize_kimg + self.fade_kimg <= 0 and self.growing:
            raise ConfigError("a growing schedule needs stabilize_kimg + fade_kimg > 0")
        for table in (self.minibatch, self.learning_rate):
            for key, value in table.items():
                if value <= 0:
                    raise ConfigError(f"schedule table entry {key}: {value} must be positive")


@dataclass
class LossConfig:
    """Loss function and its constants (paper Appendix A.1; Gulrajani et al. 2017)."""

    name: str = "wgan-gp"  # one of LOSSES
    gp_lambda: float = 10.0
    gp_target: float = 1.0
    drift: float = 0.001  # epsilon_drift: weight of E[D(x)^2] on reals
    label_weight: float = 1.0  # weight of the auxiliary classifier's cross-entropy
    # Lazy gradient penalty (NOT the paper's method; StyleGAN2's lazy R1 regularization): the
    # penalty is computed only on every gp_every-th D step, with its weight multiplied by
    # gp_every. 1 = every step, as in the paper. See losses.gp_due / discriminator_loss(apply_gp).
    gp_every: int = 1

    def validate(self) -> None:
        if self.name not in LOSSES:
            raise ConfigError(f"unknown loss {self.name!r}; choose from {', '.join(LOSSES)}")
        if not isinstance(self.gp_every, int) or self.gp_every < 1:
            raise ConfigError(f"gp_every must be an integer >= 1, got {self.gp_every!r}")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    data: str = ""
    outdir: str = "runs"
    preset: str = "paper"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adam_betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = 1e-8
    # D steps per G step (n_critic). Each D step takes a fresh real minibatch, counted in kimg.
    # The paper uses 1; WGAN-GP's authors (and Table 1's baseline rows) used 5.
    d_steps: int = 1
    ema_beta: float = 0.999  # per-step decay of the generator's moving average (0 = off)
    # Optional warm-up (not in the paper): the EMA's half-life, in images, is capped at
    # ema_rampup * images shown so far, so short runs are not dominated by the initial weights.
    # Short CPU runs need a small one (cpu/quickstart presets: 0.01; issue 24, docs/RESULTS.md
    # "EMA generator"): their G changes within tens of steps, and a longer average of it loses
    # per-image contrast.
    ema_rampup: float | None = None
    seed: int = 0
    mirror: bool = False  # random horizontal flips of real images
    # How ``mirror`` was chosen, for the record in config.json: "option" (--mirror or
    # --no-mirror), "dataset:KIND" (the official configs' default for that source kind, see
    # default_mirror), "" (set directly, e.g. by the Python API or a preset).
    mirror_from: str = ""
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    num_workers: int = -1  # DataLoader worker processes; -1 = the cores this process may use
    data_cache: str = "auto"  # "none" | "cpu" | "device" | "auto" (cache small datasets)
    tick_kimg: float = 4.0  # progress report and log line every tick
    snapshot_ticks: int = 10  # image grid + generator snapshot + checkpoint every N ticks
    keep_checkpoints: int = 3  # most recent full training states kept
    grid_size: int = 64  # fixed latents shown in the snapshot grids
    metrics: list[str] = field(default_factory=list)  # evaluated at every snapshot
    metrics_num: int = 0  # images per metric during training (0 = each metric's default)
    loss_log_every: int = 16  # read losses back from the device every N steps
    tf32: bool = True  # TF32 matmuls/convolutions on CUDA (no effect on CPU)
    amp: str = "none"  # "none" | "bf16": autocast for the networks on CUDA
    channels_last: bool = False  # NHWC memory format on CUDA
    # torch.compile of G's forward and of D's forward in the G step (never the penalty's D
    # call, which needs the double backward); eager with a warning where compiling fails.
    compile: bool = False
    deterministic: bool = False  # deterministic algorithms (for exact-resume checks)
    # FID and IS at snapshots: the Inception's input convention (FID_PREPROCESS); "tf" gives
    # numbers comparable with the paper's (configs written before this option load with it)
    fid_preprocess: str = "tf"
    # Starting weights of a new run (fine-tuning): an official .pkl, progan's networks.pt,
    # training state, run folder or snapshot (progan.train.init_from); "" = random weights.
    init_from: str = ""

    def validate(self) -> None:
        self.network.validate()
        self.schedule.validate()
        self.loss.validate()
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.data_cache not in ("none", "cpu", "device", "auto"):
            raise ConfigError(
                f"data_cache must be none, cpu, device or auto; got {self.data_cache!r}"
            )
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        if self.d_steps < 1:
            raise ConfigError(f"d_steps must be >= 1, got {self.d_steps}")
        if self.fid_preprocess not in FID_PREPROCESS:
            raise ConfigError(
                f"fid_preprocess must be one of {', '.join(FID_PREPROCESS)}, "
                f"got {self.fid_preprocess!r}"
            )
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        if self.ema_rampup is not None and not self.ema_rampup >= 0.0:
            raise ConfigError(f"ema_rampup must be >= 0 (0 = off), got {self.ema_rampup}")
        if self.tick_kimg <= 0 or self.snapshot_ticks < 1 or self.keep_checkpoints < 1:
            raise ConfigError("tick_kimg must be > 0; snapshot_ticks and keep_checkpoints >= 1")


# --------------------------------------------------------------------------------------------
# JSON round trip


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (dict keys become strings)."""
    return json.loads(json.dumps(asdict(obj)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output; unknown keys are an error and
    missing keys take their defaults (so configs written before an option existed still load).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name)  # type: ignore[call-arg]
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value)
        elif isinstance(default, dict):
            kwargs[name] = {int(k): v for k, v in value.items()}
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write ``cfg`` as JSON atomically."""
    from progan.fileio import atomic_write_json

    atomic_write_json(path, to_dict(cfg))


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``config.json`` written by :func:`save_config`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc}") from exc
    try:
        return from_dict(TrainConfig, data)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
