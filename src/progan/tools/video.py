"""Videos: latent-space interpolation (paper Section 6.3) and training time-lapses.

Interpolation video: every frame gets its own i.i.d. Gaussian latent; the latents are then
blurred along time with a Gaussian of ``smoothing_sec`` seconds (the paper uses 45 frames at
60 Hz = 0.75 s), circularly so the video loops seamlessly, and each latent is rescaled onto the
sphere of radius ``sqrt(latent_size)`` (where a standard normal latent lives), so that blurring
does not shrink latents toward the origin. A grid of several independent streams can be shown
side by side.

Training time-lapse: the fixed-latent snapshot grids ``fakes-{kimg:010.3f}.png`` of a run folder,
in kimg order, with the resolution and kimg printed on every frame.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from progan.errors import ProganError
from progan.tools.grid import make_grid
from progan.tools.mp4 import write_mp4

__all__ = [
    "interpolation_frames",
    "interpolation_latents",
    "make_interpolation_video",
    "make_timelapse",
    "read_timelapse_snapshots",
    "timelapse_frames",
]


# ----------------------------------------------------------------------------------------------
# Interpolation video


def interpolation_latents(
    num_frames: int,
    grid_count: int,
    latent_size: int,
    fps: float = 30.0,
    smoothing_sec: float = 0.75,
    seed: int = 0,
) -> np.ndarray:
    """Smoothly varying, looping latent streams.

    Args:
        num_frames: T, number of video frames (>= 1).
        grid_count: G, number of independent streams (grid cells).
        latent_size: L, latent dimensionality.
        fps: frames per second; the blur's sigma in frames is ``smoothing_sec * fps``.
        smoothing_sec: standard deviation of the temporal Gaussian blur, in seconds (0 = none).
        seed: seed of the i.i.d. normal draws (numpy ``RandomState``), so a seed gives the same
            video at any batch size or device.

    Returns:
        float32 ndarray (T, G, L); every latent has Euclidean norm ``sqrt(L)``. The blur wraps
        around (``mode='wrap'``), so frame T-1 flows into frame 0 as smoothly as any other pair.

    The official code normalises all latents by one global RMS; normalising each latent
    separately keeps every frame on the sphere even where the blur averaged many draws away.
    """
    if num_frames < 1 or grid_count < 1 or latent_size < 1:
        raise ValueError("num_frames, grid_count and latent_size must be >= 1")
    rng = np.random.RandomState(seed)
    z = rng.standard_normal((num_frames, grid_count, latent_size))
    sigma = smoothing_sec * fps
    if sigma > 0:
        z = scipy.ndimage.gaussian_filter1d(z, sigma, axis=0, mode="wrap")
    norm = np.linalg.norm(z, axis=2, keepdims=True)
    z = z / np.maximum(norm, 1e-12) * math.sqrt(latent_size)
    return z.astype(np.float32)


def _grid_labels(G: torch.nn.Module, grid_count: int, labels) -> torch.Tensor | None:
    """Per-cell int64 labels (G,), or None for an unconditional generator."""
    label_size = int(getattr(G, "label_size", 0) or 0)
    if label_size == 0:
        if labels is not None:
            raise ProganError("labels were given but the generator is unconditional")
        return None
    if labels is None:
        values = np.arange(grid_count) % label_size  # one class per cell, cycling
    else:
        values = np.broadcast_to(np.asarray(labels, dtype=np.int64), (grid_count,))
    if values.min() < 0 or values.max() >= label_size:
        raise ProganError(f"labels must lie in [0, {label_size - 1}]")
    return torch.as_tensor(np.array(values), dtype=torch.int64)


def _resize_float(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Resize float NCHW images to R x R: antialiased down, nearest or bicubic up."""
    size = images.shape[-1]
    if resolution is None or resolution == size:
        return images
    if resolution < size:
        return F.interpolate(
            images, (resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
    if resolution % size == 0:
        return F.interpolate(images, (resolution, resolution), mode="nearest")
    return F.interpolate(images, (resolution, resolution), mode="bicubic", align_corners=False)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded to nearest like ``progan.generate.to_uint8``."""
    return (images * 127.5 + 128.0).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def interpolation_frames(
    G: torch.nn.Module,
    latents: np.ndarray,
    grid: tuple[int, int] = (1, 1),
    resolution: int | None = None,
    labels=None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> Iterator[np.ndarray]:
    """Yield one uint8 HWC frame per time step of ``latents`` (T, cols*rows, L).

    Each frame is the grid (``cols`` per row) of the generator's images for that time step,
    every cell resized to ``resolution`` pixels when given.
    """
    cols, rows = grid
    count = cols * rows
    if latents.ndim != 3 or latents.shape[1] != count:
        raise ValueError(f"latents must have shape (T, {count}, L), got {latents.shape}")
    cell_labels = _grid_labels(G, count, labels)
    per_batch = max(1, batch_size // count)
    for t0 in range(0, latents.shape[0], per_batch):
        chunk = latents[t0 : t0 + per_batch]
        z = torch.from_numpy(chunk.reshape(-1, chunk.shape[2])).to(device)
        lab = None if cell_labels is None else cell_labels.repeat(len(chunk)).to(device)
        images = G(z, lab) if lab is not None else G(z)
        images = _to_uint8(_resize_float(images.float(), resolution)).cpu()
        images = images.reshape(len(chunk), count, *images.shape[1:])
        for frame_images in images:
            yield make_grid(frame_images, cols=cols)


def make_interpolation_video(
    G: torch.nn.Module,
    out_path: str | os.PathLike,
    seconds: float,
    fps: float = 30,
    grid: tuple[int, int] = (1, 1),
    seed: int = 0,
    resolution: int | None = None,
    smoothing_sec: float = 0.75,
    labels: int | Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> Path:
    """Render a looping latent-interpolation MP4 of generator ``G``.

    Args:
        G: generator; ``G(z (N, L) float, labels (N,) int64 | None) -> (N, C, R, R)`` in [-1, 1],
            with attributes ``latent_size`` and ``label_size`` (0 = unconditional).
        out_path: destination ``.mp4`` (written atomically).
        seconds: video length in seconds; the frame count is ``round(seconds * fps)``.
        fps: frames per second.
        grid: (columns, rows) of independent latent streams.
        seed: random seed of the latent streams.
        resolution: pixel size of each grid cell (default: the generator's own resolution).
        smoothing_sec: temporal Gaussian sigma in seconds (paper: 0.75 s).
        labels: for conditional generators, one class for all cells or one per cell (row-major);
            default: cell i shows class ``i % label_size``.
        device: where the generator runs.
        batch_size: images per generator call.

    Returns:
        The path written.
    """
    num_frames = round(seconds * fps)
    if num_frames < 1:
        raise ProganError(f"the video would have no frames ({seconds} s at {fps} fps)")
    cols, rows = grid
    if cols < 1 or rows < 1:
        raise ProganError(f"grid must be at least 1x1, got {cols}x{rows}")
    latents = interpolation_latents(
        num_frames, cols * rows, int(G.latent_size), fps, smoothing_sec, seed
    )
    frames = interpolation_frames(G, latents, grid, resolution, labels, device, batch_size)
    return write_mp4(out_path, frames, fps)


# ----------------------------------------------------------------------------------------------
# Training time-lapse

# ``fakes-000002.016.png`` as training writes them (kimg with three decimals), and the older
# ``fakes000002.png`` (whole kimg).
_FAKES_RE = re.compile(r"^fakes-?(\d+(?:\.\d+)?)\.png$")


def read_timelapse_snapshots(
    run_dir: str | os.PathLike,
) -> list[tuple[Path, float, int | None]]:
    """List a run's snapshot grids as ``(png_path, kimg, resolution)``, sorted by kimg.

    ``kimg`` comes from the file name ``fakes-{kimg:010.3f}.png``; ``resolution`` is that of the
    last ``log.jsonl`` record whose ``kimg`` is at most the snapshot's (the first record when
    none is), or None when the run has no readable log.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ProganError(f"run folder not found: {run_dir}")
    snaps = sorted(
        (float(m.group(1)), p)
        for p in run_dir.iterdir()
        if (m := _FAKES_RE.match(p.name)) is not None
    )
    if not snaps:
        raise ProganError(f"no snapshot grids (fakes*.png) in {run_dir}")
    log = _read_log(run_dir / "log.jsonl")
    result = []
    for kimg, path in snaps:
        res = None
        if log:
            earlier = [r for k, r in log if k <= kimg + 1e-6]
            res = earlier[-1] if earlier else log[0][1]
        result.append((path, kimg, res))
    return result


def _read_log(path: Path) -> list[tuple[float, int]]:
    """(kimg, resolution) pairs from a JSON-lines log, sorted by kimg; broken lines skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            records.append((float(rec["kimg"]), int(rec["resolution"])))
        except (ValueError, KeyError, TypeError):
            continue  # a truncated last line or a record of another kind
    records.sort(key=lambda r: r[0])
    return records


def _label(image: Image.Image, text: str) -> Image.Image:
    """Draw ``text`` in white on a black box in the bottom-left corner (Pillow default font)."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = 3
    x, y = margin, image.height - (bottom - top) - 2 * margin
    draw.rectangle(
        (x - margin, y - margin, x + right - left + margin, image.height), fill=(0, 0, 0)
    )
    draw.text((x - left, y - top), text, fill=(255, 255, 255), font=font)
    return image


def timelapse_frames(
    snapshots: Sequence[tuple[Path, float, int | None]], size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Yield one labelled uint8 HW3 frame per snapshot.

    Every grid is resized with nearest-neighbour to ``size`` (width, height), by default the
    size of the last (final-resolution) grid.
    """
    if size is None:
        with Image.open(snapshots[-1][0]) as im:
            size = im.size
    for path, kimg, res in snapshots:
        with Image.open(path) as im:
            image = im.convert("RGB")
        if image.size != size:
            image = image.resize(size, Image.Resampling.NEAREST)
        text = f"{kimg:g} kimg" if res is None else f"{res}x{res}  {kimg:g} kimg"
        yield np.asarray(_label(image, text))


def make_timelapse(
    run_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    fps: float = 30,
    frame_seconds: float = 0.25,
    hold_last_seconds: float = 2.0,
) -> Path:
    """Write an MP4 of a run's snapshot grids over training.

    Args:
        run_dir: run folder with ``fakes-{kimg:010.3f}.png`` grids and (optionally) ``log.jsonl``.
        out_path: destination ``.mp4`` (written atomically).
        fps: video frame rate.
        frame_seconds: how long each snapshot is shown (at least one video frame).
        hold_last_seconds: extra time the final snapshot stays on screen.

    Returns:
        The path written.
    """
    snapshots = read_timelapse_snapshots(run_dir)
    repeat = max(1, round(frame_seconds * fps))
    hold = max(0, round(hold_last_seconds * fps))

    def frames() -> Iterator[np.ndarray]:
        frame = None
        for frame in timelapse_frames(snapshots):
            for _ in range(repeat):
                yield frame
        for _ in range(hold):
            yield frame

    return write_mp4(out_path, frames(), fps)
