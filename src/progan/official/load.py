"""Read an official network pickle into progan's networks: :func:`load_official_networks`.

``read_official(path)`` gives everything the file holds (:class:`OfficialFile`: the three
validated states, one :class:`~progan.config.NetworkConfig`, progan state dicts for G, D and
Gs, and each network's depth and fade from its ``lod``); ``load_official_networks(path)``
builds ``(G, D, Gs)`` from it. Nothing in the file is executed (:mod:`.unpickler`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from progan.config import NetworkConfig, to_dict
from progan.errors import CheckpointError
from progan.nn.discriminator import Discriminator
from progan.nn.generator import Generator
from progan.official import mapping
from progan.official.unpickler import NetworkState, read_pickle

OFFICIAL_SUFFIXES = (".pkl", ".pickle")


def is_official_pickle(path: str | Path) -> bool:
    """True for a file whose name ends in .pkl/.pickle (the official networks' files)."""
    path = Path(path)
    return path.suffix.lower() in OFFICIAL_SUFFIXES and not path.is_dir()


@dataclass
class OfficialFile:
    """An official pickle, read and mapped. State dicts are progan's (CPU float32 tensors);
    ``depth``/``alpha`` are the progan depth and fade of each network's ``lod``."""

    path: Path
    sha256: str
    states: dict[str, NetworkState]  # "G", "D", "Gs"
    network: NetworkConfig
    state_dicts: dict[str, dict[str, torch.Tensor]]
    depth: dict[str, int]
    alpha: dict[str, float]
    dense_gain_factor: float  # 1: gain sqrt(2)/4 in the file's networks.py; 4: sqrt(2)

    def provenance(self) -> dict[str, Any]:
        """A JSON-ready record of where the weights came from (kept with converted files)."""
        return {
            "source": self.path.name,
            "source_sha256": self.sha256,
            "names": {role: s.name for role, s in self.states.items()},
            "static_kwargs": {role: s.static_kwargs for role, s in self.states.items()},
            "lod": {role: float(s.variables["lod"]) for role, s in self.states.items()},
            "dense_gain_factor": self.dense_gain_factor,
            "network": to_dict(self.network),
        }


def read_official(path: str | Path) -> OfficialFile:
    """Read and map an official ``(G, D, Gs)`` pickle; :class:`CheckpointError` (naming the
    file, the network and the variable) when anything does not fit."""
    path = Path(path)
    g, d, gs = read_pickle(path)
    states = {"G": g, "D": d, "Gs": gs}
    cfg = mapping.network_config(path, g, d)
    if mapping.network_config(path, gs, d) != cfg:
        raise CheckpointError(f"{path}: G and Gs have different settings")
    sds = {
        "G": mapping.generator_state_dict(path, g, cfg),
        "Gs": mapping.generator_state_dict(path, gs, cfg),
        "D": mapping.discriminator_state_dict(path, d, cfg),
    }
    depth, alpha = {}, {}
    for role, state in states.items():
        depth[role], alpha[role] = mapping.depth_and_alpha(path, state, cfg.max_depth)
    return OfficialFile(
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        states=states,
        network=cfg,
        state_dicts=sds,
        depth=depth,
        alpha=alpha,
        dense_gain_factor=mapping.dense_gain_factor(path, g),
    )


def build_generator(official: OfficialFile, role: str = "Gs") -> Generator:
    """G or Gs as a progan Generator (CPU, eval mode) that runs at the file's lod."""
    G = Generator(official.network)
    G.load_state_dict(official.state_dicts[role], strict=True)
    G.default_depth, G.default_alpha = official.depth[role], official.alpha[role]
    return G.eval()


def build_discriminator(official: OfficialFile) -> Discriminator:
    """D as a progan Discriminator (CPU, eval mode); run it at ``official.depth['D']`` and
    ``official.alpha['D']`` to compute what the file's lod selects."""
    D = Discriminator(official.network)
    D.load_state_dict(official.state_dicts["D"], strict=True)
    return D.eval()


def load_official_networks(path: str | Path) -> tuple[Generator, Discriminator, Generator]:
    """``(G, D, Gs)`` of an official ``karras2018iclr-*.pkl`` as progan networks (CPU, eval
    mode). G and Gs run by default at the file's depth and fade; for D pass
    ``depth``/``alpha`` from :func:`read_official` when the file's lod is not 0."""
    official = read_official(path)
    return (
        build_generator(official, "G"),
        build_discriminator(official),
        build_generator(official, "Gs"),
    )
