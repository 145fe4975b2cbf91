"""The progressive growing schedule: images shown so far -> what to train now.

This follows the official code's "level of detail" formulation: one float, the *depth*
(0 = 4x4, ``max_depth`` = target), grows by one over each fade-in. Training alternates a
stabilization phase (``stabilize_kimg``: the current resolution alone) and a fade-in phase
(``fade_kimg``: the next resolution's block fades in, alpha rising linearly 0 -> 1). Once the
target resolution is reached, training stabilizes there until ``total_kimg``.

Units: ``images`` counts real images shown to D; ``kimg`` = images / 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from progan.config import ScheduleConfig


@dataclass(frozen=True)
class PhaseState:
    """What to train at one moment.

    depth: index of the newest active block (resolution = 4 * 2**depth).
    alpha: fade-in weight of that block in [0, 1]; 1 when not fading.
    batch_size: minibatch size (images per step, per D and per G step).
    learning_rate: Adam's learning rate for G and D.
    """

    depth: int
    alpha: float
    batch_size: int
    learning_rate: float

    @property
    def resolution(self) -> int:
        return 4 * 2**self.depth

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0

    @property
    def phase_key(self) -> tuple[int, bool]:
        """Changes exactly when a fade starts or ends (and when a resolution is entered)."""
        return (self.depth, self.fading)

    @property
    def name(self) -> str:
        return f"{'fade' if self.fading else 'stable'}-{self.resolution}"


@dataclass(frozen=True)
class Segment:
    """One phase of the schedule: [start_kimg, end_kimg) at a resolution, fading or not."""

    resolution: int
    fading: bool
    start_kimg: float
    end_kimg: float
    batch_size: int

    @property
    def kimg(self) -> float:
        return self.end_kimg - self.start_kimg


class Schedule:
    """Maps images shown to :class:`PhaseState` for a target resolution."""

    def __init__(self, cfg: ScheduleConfig, target_resolution: int) -> None:
        cfg.validate()
        self.cfg = cfg
        self.max_depth = int(math.log2(target_resolution)) - 2
        start = min(cfg.start_resolution, target_resolution)
        self.start_depth = int(math.log2(start)) - 2 if cfg.growing else self.max_depth
        if not 0 <= self.start_depth <= self.max_depth:
            raise ValueError(f"start_resolution {cfg.start_resolution} is not a power of two >= 4")

    @property
    def total_images(self) -> int:
        return round(self.cfg.total_kimg * 1000)

    def depth_at(self, images: int) -> float:
        """Continuous depth (the official code's max_depth - lod) after ``images`` reals."""
        cfg = self.cfg
        if not cfg.growing:
            return float(self.max_depth)
        kimg = images / 1000.0
        period = cfg.stabilize_kimg + cfg.fade_kimg
        index = math.floor(kimg / period)
        within = kimg - index * period
        depth = float(self.start_depth + index)
        if cfg.fade_kimg > 0:
            depth += min(max(within - cfg.stabilize_kimg, 0.0) / cfg.fade_kimg, 1.0)
        return min(depth, float(self.max_depth))

    def at(self, images: int) -> PhaseState:
        """The phase after ``images`` real images have been shown."""
        depth_float = self.depth_at(images)
        depth = math.ceil(depth_float)
        alpha = 1.0 - (depth - depth_float)
        resolution = 4 * 2**depth
        return PhaseState(
            depth=depth,
            alpha=alpha,
            batch_size=self.batch_size(resolution),
            learning_rate=self.cfg.learning_rate.get(resolution, self.cfg.learning_rate_default),
        )

    def batch_size(self, resolution: int) -> int:
        return self.cfg.minibatch.get(resolution, self.cfg.minibatch_default)

    def segments(self) -> list[Segment]:
        """The phases of the whole run in order, each with its kimg range."""
        cfg = self.cfg
        out: list[Segment] = []
        t = 0.0
        depth = self.start_depth
        while t < cfg.total_kimg:
            res = 4 * 2**depth
            last = depth == self.max_depth
            end = cfg.total_kimg if last else min(t + cfg.stabilize_kimg, cfg.total_kimg)
            if end > t:
                out.append(Segment(res, False, t, end, self.batch_size(res)))
            t = end
            if last or t >= cfg.total_kimg:
                break
            end = min(t + cfg.fade_kimg, cfg.total_kimg)
            if end > t:
                out.append(Segment(res * 2, True, t, end, self.batch_size(res * 2)))
            t = end
            depth += 1
        return out
