"""``--init-from``: the weights a new run starts from (fine-tuning, transfer learning).

:func:`read_init` accepts

* an official network pickle (``karras2018iclr-*.pkl``): its G, D and Gs (as the EMA
  generator), read without running anything (:mod:`progan.official`);
* ``networks.pt`` from ``progan convert``, or a progan training state (``state-*.pt``) or run
  folder (its newest good checkpoint): G, D and the EMA generator;
* a progan generator snapshot (``.safetensors``): G and the EMA generator both start from
  it; D starts from fresh random weights (a snapshot holds no D).

and returns the network configuration, the three state dicts and the depth and fade the
weights were trained to. :func:`apply_init` puts the network and the starting phase into a
:class:`~progan.config.TrainConfig`: a fully grown network trains at its resolution from the
start (``schedule.growing = False``); one taken at a lower depth starts growing from there
(``schedule.start_resolution``). A network caught in the middle of a fade-in is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from progan.config import NetworkConfig, TrainConfig, from_dict
from progan.errors import CheckpointError, ConfigError
from progan.schedule import Schedule
from progan.train import checkpoint as ckpt


@dataclass
class InitWeights:
    """Starting weights: state dicts of G, D (None: fresh D) and the EMA generator; the
    network they fit; the depth and fade they were trained to."""

    network: NetworkConfig
    G: dict[str, torch.Tensor]
    D: dict[str, torch.Tensor] | None
    G_ema: dict[str, torch.Tensor]
    depth: int
    alpha: float
    kind: str  # "official", "networks", "training-state", "snapshot"


def read_init(path: str | Path) -> InitWeights:
    """The weights in ``path`` (see the module docstring); CheckpointError naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: --init-from file not found")
    from progan.official.load import is_official_pickle, read_official

    if is_official_pickle(path):
        off = read_official(path)
        sds = off.state_dicts
        return InitWeights(off.network, sds["G"], sds["D"], sds["Gs"], off.depth["G"],
                           off.alpha["G"], "official")  # fmt: skip
    if path.suffix == ".safetensors":
        snap = ckpt.load_generator_snapshot(path)
        sd = snap.state_dict
        return InitWeights(snap.network, sd, None, sd, snap.depth, snap.alpha, "snapshot")
    if path.is_dir():
        _, state = ckpt.newest_valid_checkpoint(path)
    else:
        from progan.official.convert import load_networks_state

        state = load_networks_state(path)
    try:
        cfg = from_dict(TrainConfig, state["config"])
        if "depth" in state:  # networks.pt of progan convert
            depth, alpha, kind = int(state["depth"]["G"]), float(state["alpha"]["G"]), "networks"
        else:
            phase = Schedule(cfg.schedule, cfg.network.resolution).at(int(state["images"]))
            depth, alpha, kind = phase.depth, phase.alpha, "training-state"
        return InitWeights(cfg.network, state["G"], state["D"], state["G_ema"], depth, alpha, kind)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: not usable for --init-from ({exc})") from exc


def apply_init(cfg: TrainConfig, init: InitWeights, channels: int, resolution: int) -> None:
    """Give ``cfg`` the network and starting phase of ``init``; the dataset (``channels``,
    ``resolution``: the run's training resolution) must fit the network."""
    net = init.network
    source = cfg.init_from
    if resolution != net.resolution or channels != net.channels:
        raise ConfigError(
            f"--init-from {source}: the network makes {net.resolution}x{net.resolution} images "
            f"with {net.channels} channel(s) but the dataset gives {resolution}x{resolution} "
            f"with {channels}; use a dataset of the network's resolution and channels"
        )
    if cfg.network.label_size != net.label_size:
        raise ConfigError(
            f"--init-from {source}: the network has {net.label_size} classes but this run "
            f"{cfg.network.label_size} (--cond and the dataset's labels must match it)"
        )
    if init.alpha < 1.0:
        raise ConfigError(
            f"--init-from {source}: the network is in the middle of a fade-in (depth "
            f"{init.depth}, alpha {init.alpha:.3f}); start from a network at a stable phase"
        )
    cfg.network = replace(net, conv_impl=cfg.network.conv_impl)
    max_depth = cfg.network.max_depth
    if init.depth >= max_depth:
        cfg.schedule.growing = False
    else:
        cfg.schedule.start_resolution = 4 * 2**init.depth
        cfg.schedule.growing = True
    assert math.log2(cfg.schedule.start_resolution).is_integer()
