"""CelebA-HQ-style oriented face crops from five facial landmarks (paper Appendix C).

The crop is an oriented square derived from the eye and mouth positions, following the geometry
of the official ``create_celebahq``:

* ``eye_avg`` / ``mouth_avg``: midpoints of the eyes / mouth corners; ``eye_to_eye`` and
  ``eye_to_mouth`` the vectors between them;
* the crop's x axis is ``eye_to_eye - rot90(eye_to_mouth)`` (a blend of the eye line and the
  perpendicular of the eye-mouth line, robust to either being short), normalised and scaled to
  half the side length ``max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``; the y axis is the x
  axis turned by +90 degrees; the centre is ``eye_avg + 0.1 * eye_to_mouth``;
* very large faces are first shrunk (box filter) so the crop is at most ~2x the output;
* the image is cropped to the quad plus a border; where the quad leaves the image it is padded
  by mirror reflection, and the padded area is progressively blurred and faded toward the
  image's median colour so that no hard seams or mirrored features stand out;
* the quad is resampled (bilinear) to a 4x oversized square, then downsampled with a Lanczos
  filter to ``resolution``.

Out of scope (the paper's other CelebA-HQ steps): the JPEG-artifact-removal and 4x
super-resolution networks, and the frequency-based selection of the best 30 000 images. The
official "simulated super-resolution" upscaling is replaced by resampling straight from the
source image.

Coordinates: landmarks are pixel indices (x right, y down) as in ``list_landmarks_celeba.txt``;
internally pixel ``i`` covers the continuous interval [i, i + 1), so its centre is ``i + 0.5``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image

from progan.errors import DatasetError

__all__ = [
    "LANDMARK_NAMES",
    "align_face",
    "align_faces_to_dataset",
    "crop_quad",
    "read_celeba_landmarks",
]

LANDMARK_NAMES = ("lefteye", "righteye", "nose", "leftmouth", "rightmouth")
"""Order of the five (x, y) points of a landmark array (CelebA's column order)."""


def _rot90(v: np.ndarray) -> np.ndarray:
    """Turn a 2-vector by +90 degrees in image coordinates (y down): (x, y) -> (-y, x)."""
    return np.array([-v[1], v[0]])


def crop_quad(landmarks: np.ndarray) -> np.ndarray:
    """The oriented crop square for five landmarks.

    Args:
        landmarks: float (5, 2) pixel indices (x, y) in :data:`LANDMARK_NAMES` order.

    Returns:
        float64 (4, 2) corners in continuous image coordinates (pixel i spans [i, i+1)), in the
        order top-left, bottom-left, bottom-right, top-right of the output image.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {lm.shape}")
    eye_left, eye_right, mouth_left, mouth_right = lm[0], lm[1], lm[3], lm[4]
    eye_avg = (eye_left + eye_right) * 0.5 + 0.5
    mouth_avg = (mouth_left + mouth_right) * 0.5 + 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    length = np.hypot(*x)
    if not np.isfinite(length) or length < 1e-6:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / length * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _to_rgb_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """PIL image or uint8 HW/HWC/CHW ndarray -> float32 HW3 in [0, 255]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = a.transpose(1, 2, 0)  # CHW -> HWC
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"expected an HW, HWC or CHW image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a.astype(np.float32)


def _shrink(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter downsample an HWC float image by an integer factor (edges cropped)."""
    h, w = img.shape[0] // factor * factor, img.shape[1] // factor * factor
    img = img[:h, :w]
    return img.reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))


def _pad_and_soften(img: np.ndarray, pad: tuple[int, int, int, int], blur: float) -> np.ndarray:
    """Mirror-pad an HWC float image by (left, top, right, bottom) and hide the seams.

    The padded margin is blurred with a Gaussian whose weight rises from 0 inside the image to
    1 a third of the way into the margin, and blended toward the median colour in proportion
    to the distance into the margin, reaching it at the outer edge.
    """
    left, top, right, bottom = pad
    h0, w0 = img.shape[:2]
    # np.pad "reflect" needs pad < size; repeat reflection for huge margins
    while max(left, right) >= w0 or max(top, bottom) >= h0:
        step = (min(left, w0 - 1), min(top, h0 - 1), min(right, w0 - 1), min(bottom, h0 - 1))
        img = np.pad(img, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="reflect")
        left, top, right, bottom = (
            p - s for p, s in zip((left, top, right, bottom), step, strict=True)
        )
        h0, w0 = img.shape[:2]
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    lt, tp, rt, bt = (max(p, 1) for p in pad)  # the total margins, for the mask
    inside = np.minimum(
        np.minimum(xs / lt, ys / tp), np.minimum((w - 1 - xs) / rt, (h - 1 - ys) / bt)
    )
    mask = (1.0 - inside)[:, :, None]  # <= 0 inside the image, up to 1 at the outer edge
    blurred = scipy.ndimage.gaussian_filter(img, [blur, blur, 0])
    img = img + (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img = img + (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return img


def align_face(
    image: Image.Image | np.ndarray, landmarks: np.ndarray, resolution: int = 1024
) -> np.ndarray:
    """Cut the CelebA-HQ-style oriented face crop out of ``image``.

    Args:
        image: PIL image (any mode) or uint8 HW / HWC / CHW ndarray; grayscale becomes RGB.
        landmarks: (5, 2) pixel coordinates (x, y) of left eye, right eye, nose, left and right
            mouth corner (the nose is not used). "Left" is the left side of the picture.
        resolution: output side length in pixels (the paper uses 1024).

    Returns:
        uint8 (resolution, resolution, 3) RGB image: face upright, eyes horizontal, with the
        eye midpoint at x = 0.5 * resolution.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    img = _to_rgb_float(image)
    quad = crop_quad(landmarks)
    zoom = resolution / np.hypot(*(quad[3] - quad[0]))  # output pixels per source pixel

    # Shrink: average-pool images that are more than 2x larger than needed.
    shrink = int(np.floor(0.5 / zoom))
    if shrink > 1:
        img = _shrink(img, shrink)
        quad = quad / shrink
        zoom *= shrink

    # Crop to the quad's bounding box plus a border.
    border = max(round(resolution * 0.1 / zoom), 3)
    h, w = img.shape[:2]
    x0 = max(int(np.floor(quad[:, 0].min())) - border, 0)
    y0 = max(int(np.floor(quad[:, 1].min())) - border, 0)
    x1 = min(int(np.ceil(quad[:, 0].max())) + border, w)
    y1 = min(int(np.ceil(quad[:, 1].max())) + border, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError("the face crop lies outside the image")
    img = img[y0:y1, x0:x1]
    quad = quad - [x0, y0]

    # Pad by reflection where the quad (plus border) leaves the image.
    h, w = img.shape[:2]
    pad = (
        max(border - int(np.floor(quad[:, 0].min())), 0),
        max(border - int(np.floor(quad[:, 1].min())), 0),
        max(int(np.ceil(quad[:, 0].max())) - w + border, 0),
        max(int(np.ceil(quad[:, 1].max())) - h + border, 0),
    )
    if max(pad) > border - 4:
        pad = tuple(max(p, round(resolution * 0.3 / zoom)) for p in pad)
        img = _pad_and_soften(img, pad, blur=resolution * 0.02 / zoom)
        quad = quad + pad[:2]

    # Resample the quad to a 4x oversized square, then filter down to the output size.
    pil = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
    big = 4 * resolution
    pil = pil.transform(
        (big, big), Image.Transform.QUAD, tuple(quad.flatten()), Image.Resampling.BILINEAR
    )
    pil = pil.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(pil)


def read_celeba_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse CelebA's ``list_landmarks_celeba.txt`` (or ``list_landmarks_align_celeba.txt``).

    Format: line 1 = image count, line 2 = the ten column names
    (``lefteye_x lefteye_y righteye_x ... rightmouth_y``), then ``filename x1 y1 ... x5 y5``.

    Returns:
        ``{filename: float64 (5, 2) array}`` in file order.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read landmark file {path}: {e}") from e
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line")
    header = lines[1].split()
    expected = [f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy"]
    if header != expected:
        raise DatasetError(f"{path}: unexpected header {header}, expected {expected}")
    result: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 11:
            raise DatasetError(f"{path}:{lineno}: expected a file name and 10 numbers")
        try:
            result[fields[0]] = np.array(fields[1:], dtype=np.float64).reshape(5, 2)
        except ValueError as e:
            raise DatasetError(f"{path}:{lineno}: {e}") from e
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError) as e:
        raise DatasetError(f"{path}: the first line must be the image count") from e
    if count != len(result):
        raise DatasetError(f"{path}: header says {count} images, found {len(result)}")
    return result


def align_faces_to_dataset(
    images_dir: str | os.PathLike,
    landmarks_path: str | os.PathLike,
    dest: str | os.PathLike,
    resolution: int = 1024,
    max_images: int | None = None,
    progress: bool = True,
) -> tuple[Path, int, int]:
    """Align every face listed in a CelebA landmark file and write a progan dataset.

    Args:
        images_dir: folder holding the images named in the landmark file (e.g. ``img_celeba``).
        landmarks_path: ``list_landmarks_celeba.txt``-format file (see
            :func:`read_celeba_landmarks`); use the landmarks of the *unaligned* images.
        dest: dataset destination (``.zip`` or a new folder), written by
            ``progan.data.dataset.DatasetWriter`` (atomically).
        resolution: output resolution, a power of two (the paper: 1024).
        max_images: stop after this many images (None = all), in landmark-file order.
        progress: show a progress bar.

    Returns:
        ``(dest, written, missing)``: images written and listed images not found (skipped).
    """
    from progan.data.dataset import DatasetWriter  # lazy: the data package is optional here

    images_dir = Path(images_dir)
    entries = list(read_celeba_landmarks(landmarks_path).items())
    if max_images is not None:
        entries = entries[:max_images]
    missing = 0
    source = f"align-faces {images_dir} ({Path(landmarks_path).name}), CelebA-HQ-style crop"
    with DatasetWriter(dest, resolution, 3, source=source, source_kind="celeba-hq") as writer:
        iterator = entries
        if progress:
            from tqdm import tqdm

            iterator = tqdm(entries, desc="align-faces", unit="img")
        for name, lm in iterator:
            path = images_dir / name
            if not path.is_file():
                missing += 1
                continue
            try:
                with Image.open(path) as im:
                    aligned = align_face(im, lm, resolution)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{path}: {e}") from e
            writer.add(np.ascontiguousarray(aligned.transpose(2, 0, 1)))
        if writer.count == 0:
            raise DatasetError(f"none of the {len(entries)} listed images exist in {images_dir}")
        written = writer.count
    return Path(dest), written, missing
