"""Load a trained generator and make images from integer seeds.

Every seed maps to one fixed latent vector (drawn from N(0, I) by a CPU generator seeded with
the seed), so ``progan generate --seeds 0-63`` gives the same images on any machine and batch
size, up to floating-point differences between devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from progan.errors import CheckpointError
from progan.nn.generator import Generator
from progan.train.checkpoint import (
    load_generator_snapshot,
    newest_snapshot,
    raw_snapshot_for,
    read_best,
)


def snapshot_path(path: str | Path, best: bool = False, raw: bool = False) -> Path:
    """The snapshot file that ``path`` names: a ``.safetensors`` file as it is, a run folder's
    newest snapshot, or with ``best=True`` a run folder's best one (``best.json``); ``raw=True``
    gives the raw generator's snapshot beside it (``raw-snapshot-*.safetensors``). Raises
    CheckpointError when there is none."""
    path = Path(path)
    if best:
        record = read_best(path) if path.is_dir() else None
        if record is None:
            raise CheckpointError(f"{path}: no best.json (train with --metrics to rank snapshots)")
        path = path / record["snapshot"]
    elif path.is_dir():
        path = newest_snapshot(path, raw=raw)
    return raw_snapshot_for(path) if raw else path


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", best: bool = False, raw: bool = False
) -> Generator:
    """A generator in eval mode from a ``.safetensors`` snapshot, a run folder (its newest
    snapshot, or with ``best=True`` the best one by the training metric, see ``best.json``),
    or an official network pickle (``karras2018iclr-*.pkl``: its Gs, read without running
    anything, :mod:`progan.official`).

    ``raw=True`` loads the raw generator (the network being trained, not its moving average):
    the one saved beside the chosen snapshot (``raw-snapshot-*.safetensors``; see
    :func:`snapshot_path`), or an official pickle's G. A snapshot taken before the network was
    fully grown loads with ``default_depth`` and ``default_alpha`` set to the depth and fade it
    was trained to (an official pickle: those of its ``lod``).
    """
    from progan.official.load import build_generator, is_official_pickle, read_official

    if not best and is_official_pickle(Path(path)):
        G = build_generator(read_official(Path(path)), "G" if raw else "Gs")
        return G.eval().requires_grad_(False).to(device)
    path = snapshot_path(path, best=best, raw=raw)
    snap = load_generator_snapshot(path)
    legacy = snap.state_dict.get("blocks.0.dense.bias")
    if legacy is not None and "blocks.0.bias" not in snap.state_dict:
        # written before G's first layer took the official form: build G in that older form
        snap.network.g_first_bias = "per-unit"
    G = Generator(snap.network)
    try:
        G.load_state_dict(snap.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match the stored network config: {exc}"
        ) from exc
    G.default_depth, G.default_alpha = snap.depth, snap.alpha
    return G.eval().requires_grad_(False).to(device)


def parse_seeds(text: str) -> list[int]:
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11] (non-negative integers and inclusive ranges)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad seed list {text!r}: use e.g. 0-63 or 1,5,9-12")
        seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    if not seeds:
        raise ValueError(f"no seeds in {text!r}")
    return seeds


def latents_for_seeds(seeds: Sequence[int], latent_size: int) -> torch.Tensor:
    """(N, latent_size) float32 on the CPU: latent i is N(0, I) drawn with seed ``seeds[i]``."""
    out = torch.empty(len(seeds), latent_size)
    for i, seed in enumerate(seeds):
        gen = torch.Generator().manual_seed(int(seed))
        out[i] = torch.randn(latent_size, generator=gen)
    return out


def balanced_labels(seeds: Sequence[int], label_size: int) -> list[int]:
    """The default class of each seed for a conditional generator: ``seed % label_size``, so
    that any run of consecutive seeds covers the classes evenly. ``progan generate``, ``video``,
    ``explore``, ``metrics`` and ``neighbors`` all use this rule when no class is given."""
    if label_size < 1:
        raise ValueError(f"label_size must be >= 1, got {label_size}")
    return [int(seed) % label_size for seed in seeds]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 [0, 255] (round to nearest, clamp), same shape."""
    return (images.float() * 127.5 + 128.0).clamp(0, 255).to(torch.uint8)


def upscale_nearest(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """NCHW images (any dtype) enlarged by nearest neighbour, each pixel repeated, to
    ``resolution``; unchanged when they are that size already. This is how the official code
    evaluates a generator before it is fully grown (its output is upscaled to the full size)."""
    factor = resolution // images.shape[-1]
    if factor * images.shape[-1] != resolution:
        raise ValueError(f"cannot upscale {images.shape[-1]}px images to {resolution}px")
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


@torch.no_grad()
def generate_images(
    G: Generator,
    seeds: Sequence[int],
    labels: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 NCHW images (on the CPU) for the given seeds; labels (one per seed) for
    conditional generators, by default balanced classes (``seed % label_size``, see
    :func:`balanced_labels`)."""
    device = torch.device(device) if device is not None else next(G.parameters()).device
    z_all = latents_for_seeds(seeds, G.latent_size)
    if G.label_size:
        if labels is None:
            labels = balanced_labels(seeds, G.label_size)
        lab_all = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if lab_all.numel() != len(seeds):
            raise ValueError(f"{lab_all.numel()} labels for {len(seeds)} seeds")
        if lab_all.min() < 0 or lab_all.max() >= G.label_size:
            raise ValueError(f"labels must be in [0, {G.label_size - 1}]")
    out = []
    for start in range(0, len(seeds), batch_size):
        z = z_all[start : start + batch_size].to(device)
        lab = lab_all[start : start + batch_size].to(device) if G.label_size else None
        out.append(to_uint8(G(z, lab)).cpu())
    return torch.cat(out)
