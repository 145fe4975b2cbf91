"""Atomic MP4 writing through the ffmpeg binary bundled with ``imageio-ffmpeg``.

Frames are piped to ffmpeg as raw RGB (``rgb24``) and encoded with libx264 in ``yuv420p`` (the
pixel format every player understands). yuv420p needs even frame sizes, so odd frames are padded
with one black row/column. ffmpeg writes to a temporary file beside the destination, which is
renamed over it only after ffmpeg has finished successfully.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["even_pad", "to_rgb_frame", "write_mp4"]


def to_rgb_frame(image: np.ndarray) -> np.ndarray:
    """Return a uint8 HW, HW1 or HW3 image as a contiguous uint8 HW3 (RGB) frame."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an HW, HW1 or HW3 frame, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def even_pad(frame: np.ndarray) -> np.ndarray:
    """Pad an HWC frame with black at the bottom/right so that H and W are even."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
) -> Path:
    """Encode ``frames`` (uint8 HW/HW1/HW3 arrays, all the same size) into an H.264 MP4 file.

    Args:
        path: destination ``.mp4``; written atomically (temp file in the same folder + rename).
        frames: iterable of frames; consumed lazily, so long videos need not fit in memory.
        fps: frames per second (> 0).
        crf: x264 constant rate factor (0 = lossless luma, 18 ~ visually lossless, 51 = worst).

    Returns:
        The path written. Raises ``ValueError`` when there are no frames or sizes differ.
    """
    import imageio_ffmpeg  # heavy-ish import: only when a video is written

    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.mp4", dir=path.parent)
    os.close(fd)
    writer = None
    size = None
    count = 0
    try:
        for frame in frames:
            frame = even_pad(to_rgb_frame(frame))
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = imageio_ffmpeg.write_frames(
                    tmp_name,
                    size,
                    pix_fmt_in="rgb24",
                    pix_fmt_out="yuv420p",
                    fps=fps,
                    codec="libx264",
                    quality=None,
                    macro_block_size=1,  # never let imageio-ffmpeg rescale the frames
                    output_params=["-crf", str(crf), "-movflags", "+faststart"],
                    ffmpeg_log_level="error",
                )
                writer.send(None)  # start the generator (launches ffmpeg)
            elif (frame.shape[1], frame.shape[0]) != size:
                raise ValueError(f"frame {count} has size {frame.shape[1::-1]}, expected {size}")
            writer.send(frame)
            count += 1
        if writer is None:
            raise ValueError("cannot write a video with zero frames")
        writer.close()
        writer = None
        os.replace(tmp_name, path)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return path
