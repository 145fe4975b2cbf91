"""A built-in synthetic dataset (no download): bold coloured shapes on plain backgrounds.

Each image shows one shape -- its class label -- among :data:`CLASSES`, drawn in a bright
colour from :data:`SHAPE_COLORS` on a plain near-black background (:data:`BACKGROUND_COLORS`).
The shape is large (radius :data:`SHAPE_RADIUS` of the image size), near the centre (offset up
to :data:`CENTRE_JITTER`) and upright (axis-aligned squares and crosses, triangles pointing up);
its colour, size and position vary. The content is deliberately simple -- flat colours, sharp
edges, a handful of modes -- so that a small GAN trained for three CPU minutes (README
Quickstart) draws it recognisably: a random rotation and five background colours, as this
dataset had before, left such a run with soft blobs on murky backgrounds. Image ``i``
depends only on ``(seed, i)``: the same seed gives the same images whatever ``count`` is.
Shapes are drawn as a mask at 4x the resolution and box-filtered down (anti-aliased edges),
then blended over the background.

Use it as the source ``synthetic:shapes`` (``progan dataset create synthetic:shapes DEST
--resolution 32 --max-images 2000``) or through
:func:`progan.data.create.make_synthetic_dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from progan.data.dataset import is_power_of_two
from progan.data.source_base import Entry, Source
from progan.errors import DatasetError

CLASSES = ("circle", "square", "triangle", "ring", "cross")
SHAPE_COLORS = (
    (230, 40, 40),  # red
    (40, 200, 60),  # green
    (60, 110, 255),  # blue
    (250, 220, 40),  # yellow
    (240, 240, 240),  # white
    (250, 140, 20),  # orange
)
BACKGROUND_COLORS = ((20, 20, 30),)  # one plain near-black background
NAMES = ("shapes",)
DEFAULT_COUNT = 5000
DEFAULT_RESOLUTION = 32
SUPERSAMPLE = 4
SHAPE_RADIUS = (0.28, 0.38)  # range of the shape's radius, as a fraction of the image size
CENTRE_JITTER = 0.06  # the shape's centre moves up to this fraction of the size from the middle
# polygon rotation that makes each shape upright (a vertex of the triangle at the top)
UPRIGHT_ANGLE = {"square": math.pi / 4, "triangle": -math.pi / 2}
# distance of each shape's outermost point from its centre, in units of its radius
EXTENT = {"circle": 1.0, "square": 1.15, "triangle": 1.25, "ring": 1.0, "cross": 1.15}


def shape_label(seed: int, index: int) -> int:
    """The class (index into :data:`CLASSES`) of image ``index``."""
    return int(np.random.default_rng([seed, index, 0]).integers(len(CLASSES)))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float (size, size, 3) plain background in one of :data:`BACKGROUND_COLORS`."""
    color = np.array(BACKGROUND_COLORS[rng.integers(len(BACKGROUND_COLORS))], dtype=np.float64)
    return np.broadcast_to(color, (size, size, 3)).copy()


def _polygon(cx: float, cy: float, r: float, n: int, angle: float) -> list[tuple[float, float]]:
    angles = [angle + 2 * math.pi * k / n for k in range(n)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]


def _rotated_rect(cx, cy, half_w, half_h, angle) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def render_shape(seed: int, index: int, resolution: int) -> tuple[np.ndarray, int]:
    """Render image ``index``: (uint8 ``(resolution, resolution, 3)`` array, class label)."""
    label = shape_label(seed, index)
    rng = np.random.default_rng([seed, index, 1])
    bg = _background(rng, resolution)
    color = np.array(SHAPE_COLORS[rng.integers(len(SHAPE_COLORS))]) + rng.integers(-15, 16, 3)
    color = np.clip(color, 0, 255).astype(np.float64)
    size = resolution * SUPERSAMPLE
    r = size * rng.uniform(*SHAPE_RADIUS)
    name = CLASSES[label]
    # keep the whole shape (its outermost point at EXTENT * r) off the border pixels
    r = min(r, 0.45 * size / EXTENT[name])
    jitter = max(0.0, min(CENTRE_JITTER, 0.45 - EXTENT[name] * r / size))
    cx = size / 2 + rng.uniform(-jitter, jitter) * size
    cy = size / 2 + rng.uniform(-jitter, jitter) * size
    angle = UPRIGHT_ANGLE.get(name, 0.0)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, r * 1.15, 4, angle), fill=255)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.25, 3, angle), fill=255)
    elif name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(1, round(0.4 * r)))
    else:  # cross
        draw.polygon(_rotated_rect(cx, cy, r * 1.1, r * 0.32, angle), fill=255)
        draw.polygon(_rotated_rect(cx, cy, r * 0.32, r * 1.1, angle), fill=255)
    small = mask.resize((resolution, resolution), Image.Resampling.BOX)
    alpha = np.asarray(small, dtype=np.float64)[..., None] / 255.0
    out = bg * (1.0 - alpha) + color * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), label


class SyntheticShapesSource(Source):
    """``count`` rendered shape images of one resolution, labeled by shape (see module doc)."""

    kind = "synthetic"

    def __init__(
        self, count: int = DEFAULT_COUNT, resolution: int = DEFAULT_RESOLUTION, seed: int = 0
    ):
        super().__init__(Path("synthetic:shapes"))
        self.class_names = list(CLASSES)
        if not is_power_of_two(resolution) or resolution < 4:
            raise DatasetError(f"resolution must be a power of two >= 4, got {resolution}")
        if count < 1:
            raise DatasetError(f"count must be >= 1, got {count}")
        self.count, self.resolution, self.seed = int(count), int(resolution), int(seed)

    def __len__(self) -> int:
        return self.count

    def describe(self) -> str:
        return f"synthetic:shapes (seed {self.seed})"

    def entries(self) -> Iterator[Entry]:
        for i in range(self.count):
            yield Entry(
                f"shapes[{i}]",
                shape_label(self.seed, i),
                lambda i=i: render_shape(self.seed, i, self.resolution)[0],
            )


def open_synthetic(
    spec: str, count: int | None = None, resolution: int | None = None, seed: int = 0
) -> SyntheticShapesSource:
    """The source for ``synthetic:shapes`` (defaults: 5000 images of 32x32)."""
    name = spec.split(":", 1)[1] if ":" in spec else spec
    if name not in NAMES:
        raise DatasetError(
            f"unknown synthetic dataset {spec!r}; available: "
            + ", ".join(f"synthetic:{n}" for n in NAMES)
        )
    return SyntheticShapesSource(
        count=DEFAULT_COUNT if count is None else count,
        resolution=DEFAULT_RESOLUTION if resolution is None else resolution,
        seed=seed,
    )
