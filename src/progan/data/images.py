"""Decoding, colour conversion and geometric transforms for dataset images.

Conventions (all functions in this module):

* arrays are uint8 HWC (``(H, W, C)``, C = 1 or 3) with values in [0, 255];
* colour conversion rules used everywhere in progan.data:

  - palette (``P``/``PA``) images are expanded to RGB (or RGBA when they carry transparency);
  - images with alpha (``RGBA``, ``LA``, ``PA``, palette transparency) are **composited over
    black**, so fully transparent pixels become black, exactly like the zero padding of the
    ``pad`` transform;
  - 16-bit and 32-bit integer grayscale (``I;16``, ``I``) is scaled from [0, 65535] to
    [0, 255]; float (``F``) grayscale is taken as [0, 1];
  - ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and 1-bit images are converted with Pillow;
  - grayscale images become 3 identical channels when the dataset is RGB, colour images
    become luma (ITU-R 601-2, Pillow's ``convert("L")``) when the dataset is grayscale.

Pillow's decompression-bomb limit is raised to :data:`MAX_IMAGE_PIXELS` (Pillow refuses images
with more than twice that many pixels); larger images are reported as bad files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from progan.errors import DatasetError

#: Pillow warns above this many pixels and refuses twice as many (2**28 = 16384 x 16384).
MAX_IMAGE_PIXELS = 2**27

#: File extensions read as images by the folder and zip sources (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

#: The geometric transforms understood by :func:`fit_to_square`.
TRANSFORMS = ("center-crop", "resize", "pad")

ImageLike = Image.Image | np.ndarray

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class BadImageError(DatasetError):
    """One source image cannot be used (unreadable, truncated, too small, wrong size).

    ``name`` is the file (or archive member) concerned; ``reason`` the short problem.
    ``create_dataset(..., skip_bad=True)`` skips such images and counts them.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def configure_pil() -> None:
    """Raise Pillow's decompression-bomb limit to :data:`MAX_IMAGE_PIXELS` (never lower it)."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


configure_pil()


def has_image_extension(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def decode_image(data: bytes | Path | str, name: str) -> Image.Image:
    """Fully decode an encoded image (bytes or a file path) into a loaded PIL image.

    EXIF orientation is applied. Raises :class:`BadImageError` naming ``name`` for empty,
    truncated, non-image or oversized files.
    """
    if isinstance(data, Path | str):
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise BadImageError(name, f"cannot read the file ({e.strerror or e})") from None
    if len(data) == 0:
        raise BadImageError(name, "empty file (0 bytes)")
    try:
        source = io.BytesIO(data)
        with Image.open(source) as img:
            img.load()
            out = ImageOps.exif_transpose(img)
            out.load()
            return out
    except Image.UnidentifiedImageError:
        raise BadImageError(name, "not a readable image file") from None
    except Image.DecompressionBombError as e:
        raise BadImageError(name, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImageError(name, f"truncated or corrupt image ({e})") from None


def natural_channels(img: ImageLike) -> int:
    """1 for grayscale images (PIL modes 1, L, LA, I, I;16, F or 2-D arrays), else 3."""
    if isinstance(img, np.ndarray):
        return 1 if img.ndim == 2 or img.shape[2] in (1, 2) else 3
    if img.mode in _GRAY_MODES:
        return 1
    if img.mode in ("P", "PA"):
        return 3
    return 3


def _array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    if arr.dtype != np.uint8:
        raise BadImageError(name, f"array image must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr), "L")
    if arr.ndim == 3 and arr.shape[2] in (2, 3, 4):
        mode = {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        return Image.fromarray(np.ascontiguousarray(arr), mode)
    raise BadImageError(name, f"array image must be HW or HWC with C in 1..4, got {arr.shape}")


def _high_depth_gray_to_l(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255)
    else:
        scaled = np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _composite_over_black(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def to_uint8_hwc(img: ImageLike, channels: int | None = None, name: str = "image") -> np.ndarray:
    """Convert a PIL image or uint8 array to a uint8 ``(H, W, channels)`` array.

    ``channels=None`` keeps the image's :func:`natural_channels`. See the module docstring for
    the conversion rules (alpha is composited over black).
    """
    if isinstance(img, np.ndarray):
        img = _array_to_pil(img, name)
    if channels is None:
        channels = natural_channels(img)
    if channels not in (1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels}")
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        img = _high_depth_gray_to_l(img)
    elif mode == "P" and "transparency" in img.info:
        img = _composite_over_black(img)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        gray = mode in ("LA", "La")
        img = _composite_over_black(img)
        if gray:
            img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("L" if natural_channels(img) == 1 else "RGB")
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def required_side(width: int, height: int, transform: str) -> int:
    """The side that must reach the target resolution: the short side, or the long one for pad."""
    check_transform(transform)
    return max(width, height) if transform == "pad" else min(width, height)


def check_transform(transform: str) -> None:
    """Raise :class:`DatasetError` unless ``transform`` is one of :data:`TRANSFORMS`."""
    if transform not in TRANSFORMS:
        choices = ", ".join(TRANSFORMS)
        raise DatasetError(f"unknown transform {transform!r}; choose one of {choices}")


def fit_to_square(arr: np.ndarray, resolution: int, transform: str, name: str) -> np.ndarray:
    """Turn a uint8 ``(H, W, C)`` array into a uint8 ``(resolution, resolution, C)`` array.

    * ``center-crop``: the central ``min(H, W)`` square, then Lanczos down-scaling;
    * ``resize``: the whole image stretched to a square with Lanczos (aspect ratio not kept);
    * ``pad``: the image centred on a black ``max(H, W)`` square, then Lanczos down-scaling.

    Images whose relevant side (see :func:`required_side`) is smaller than ``resolution``
    raise :class:`BadImageError` (progan never up-samples source images).
    """
    h, w, c = arr.shape
    side = required_side(w, h, transform)
    if side < resolution:
        need = "longer" if transform == "pad" else "shorter"
        raise BadImageError(
            name,
            f"image is {w}x{h}; its {need} side is smaller than the target resolution "
            f"{resolution} (transform {transform}); choose a smaller --resolution or --skip-bad",
        )
    if transform == "pad" and h != w:
        square = np.zeros((side, side, c), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = arr
        arr, h, w = square, side, side
    if transform == "center-crop":
        top, left = (h - side) // 2, (w - side) // 2
        arr = arr[top : top + side, left : left + side]  # crop first: no bleeding from outside
    if arr.shape[:2] == (resolution, resolution):
        return np.ascontiguousarray(arr)
    pil = Image.fromarray(np.ascontiguousarray(arr[:, :, 0] if c == 1 else arr))
    out = np.asarray(pil.resize((resolution, resolution), Image.Resampling.LANCZOS), np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def encode_png(chw: np.ndarray) -> bytes:
    """Encode a uint8 CHW array (C = 1 or 3) as PNG bytes (mode L or RGB)."""
    if chw.shape[0] == 1:
        img = Image.fromarray(np.ascontiguousarray(chw[0]), "L")
    else:
        img = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
