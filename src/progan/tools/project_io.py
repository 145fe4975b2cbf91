"""Inputs and outputs of ``progan project``: target images in, latents and reports out.

Targets come from image files, folders or zips of images, CelebA's ``img_align_celeba``
(cut like the official dataset tool) or progan datasets; each image goes through the
``progan dataset create`` path (:func:`progan.data.images.to_uint8_hwc` and
:func:`progan.data.images.fit_to_square`: centre crop, Lanczos down-scaling) to the network's
resolution and channel count.

Per target ``NAME`` (the file name without extension) :func:`write_projection` writes into the
output folder:

* ``NAME-latent.safetensors``: tensor ``z`` (1, L) float32 (on the sphere of radius sqrt(L),
  ready for ``G(z)``), and ``label`` (1,) int64 for conditional generators; metadata
  ``format = "progan-latent"``, the network file, the final PSNR and perceptual distance;
* ``NAME-compare.png``: target | reconstruction at the network's resolution;
* ``NAME-loss.json``: the per-step ``loss``, ``pixel`` (MSE in [-1, 1] units) and
  ``perceptual`` values and the start kept;
* ``NAME-optimisation.mp4`` (optional): target | reconstruction as the optimisation goes.

and ``projection.json``: one record per image (name, psnr_db, perceptual, pixel_mse).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from progan.errors import DatasetError, ProganError

__all__ = ["LATENT_FORMAT", "load_latent", "load_targets", "write_projection"]

LATENT_FORMAT = "progan-latent"


def _fit(arr_or_img, resolution: int, channels: int, name: str) -> np.ndarray:
    """Any image -> uint8 (channels, R, R) via the dataset-creation path (centre crop)."""
    from progan.data.images import fit_to_square, to_uint8_hwc

    arr = to_uint8_hwc(arr_or_img, channels, name)
    return fit_to_square(arr, resolution, "center-crop", name).transpose(2, 0, 1)


def _is_dataset(path: Path) -> bool:
    from progan.data.dataset import META_NAME

    if path.is_dir():
        return (path / META_NAME).is_file()
    if path.suffix.lower() == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                return META_NAME in zf.namelist()
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"{path}: not a readable zip file ({exc})") from None
    return False


def load_targets(
    paths: list[str | os.PathLike],
    resolution: int,
    channels: int,
    max_images: int | None = None,
) -> tuple[list[str], torch.Tensor]:
    """Names and uint8 (N, channels, R, R) target images from ``paths`` (image files, folders,
    zips, CelebA folders, progan datasets), in the given order, at most ``max_images``."""
    from progan.data.dataset import ImageDataset
    from progan.data.images import decode_image, has_image_extension
    from progan.data.sources import open_source

    names: list[str] = []
    images: list[np.ndarray] = []
    for path in map(Path, paths):
        if max_images is not None and len(images) >= max_images:
            break
        if not path.exists():
            raise DatasetError(f"image or folder not found: {path}")
        if path.is_file() and has_image_extension(path.name):
            names.append(path.stem)
            images.append(_fit(decode_image(path, path.name), resolution, channels, path.name))
            continue
        if _is_dataset(path):
            ds = ImageDataset(path)
            count = len(ds) if max_images is None else min(len(ds), max_images - len(images))
            for i in range(count):
                chw = ds.read_image(i)
                names.append(f"{ds.name}-{i:06d}")
                images.append(_fit(chw.transpose(1, 2, 0), resolution, channels, names[-1]))
            continue
        for entry in open_source(path).entries():
            if max_images is not None and len(images) >= max_images:
                break
            names.append(Path(entry.name).stem)
            images.append(_fit(entry.read(), resolution, channels, entry.name))
    if not images:
        raise DatasetError(f"no images found in {', '.join(map(str, paths))}")
    if len(set(names)) != len(names):
        names = [f"{i:06d}-{name}" for i, name in enumerate(names)]  # keep outputs apart
    return names, torch.from_numpy(np.stack(images))


def _upscale_for_display(images: torch.Tensor, min_size: int = 128) -> torch.Tensor:
    from progan.generate import upscale_nearest

    size = images.shape[-1]
    factor = max(1, -(-min_size // size))
    return upscale_nearest(images, size * factor)


def write_projection(
    outdir: str | os.PathLike,
    names: list[str],
    targets: torch.Tensor,
    result,
    network: str,
    labels: torch.Tensor | None = None,
    perceptual_final: torch.Tensor | None = None,
    video_fps: float = 0.0,
) -> list[dict]:
    """Write the per-image files (see the module docstring); returns the records for
    ``projection.json``, which the caller writes once all batches are done. ``result`` is a
    :class:`progan.tools.project.ProjectionResult`; ``perceptual_final`` the (N,) perceptual
    distances of the final reconstructions."""
    from safetensors.torch import save as save_safetensors

    from progan.fileio import atomic_write_bytes, atomic_write_json
    from progan.tools.grid import make_grid, write_png
    from progan.tools.mp4 import write_mp4
    from progan.tools.project import native_targets, psnr

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    size = result.images.shape[-1]
    shown = targets
    if targets.shape[-1] != size:  # a snapshot before full growth: compare at its size
        shown = (native_targets(targets, size) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    scores = psnr(result.images, shown)
    records = []
    for i, name in enumerate(names):
        record = {
            "name": name,
            "psnr_db": float(scores[i]),
            "pixel_mse": float(result.pixel[i, -1]),
            "perceptual": None if perceptual_final is None else float(perceptual_final[i]),
            "start": int(result.start[i]),
        }
        tensors = {"z": result.latents[i : i + 1].contiguous()}
        if labels is not None:
            tensors["label"] = labels[i : i + 1].to(torch.int64).contiguous()
            record["label"] = int(labels[i])
        meta = {"format": LATENT_FORMAT, "network": str(network), "record": json.dumps(record)}
        atomic_write_bytes(out / f"{name}-latent.safetensors", save_safetensors(tensors, meta))
        pair = torch.stack([shown[i], result.images[i]])
        write_png(make_grid(_upscale_for_display(pair), cols=2, pad=2), out / f"{name}-compare.png")
        curve = {k: getattr(result, k)[i].tolist() for k in ("loss", "pixel", "perceptual")}
        curve["start"] = int(result.start[i])
        atomic_write_json(out / f"{name}-loss.json", curve)
        if video_fps > 0 and result.frames is not None:
            frames = (
                make_grid(_upscale_for_display(torch.stack([shown[i], f])), cols=2, pad=2)
                for f in result.frames[i]
            )
            write_mp4(out / f"{name}-optimisation.mp4", frames, video_fps)
        records.append(record)
    return records


def load_latent(path: str | os.PathLike) -> tuple[torch.Tensor, int | None]:
    """(z (L,) float32, label or None) from a ``NAME-latent.safetensors`` of ``progan project``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            z = f.get_tensor("z") if "z" in keys else None
            label = f.get_tensor("label") if "label" in keys else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProganError(f"{path}: not a readable latent file ({exc})") from exc
    if meta.get("format") != LATENT_FORMAT or z is None:
        raise ProganError(f"{path}: not a latent written by `progan project` (no tensor z)")
    return z.reshape(-1).float(), None if label is None else int(label.reshape(-1)[0])
