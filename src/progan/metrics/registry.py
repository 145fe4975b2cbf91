"""The available metrics and how each is accumulated while streaming.

``SPECS[name]`` describes a metric: default image count, whether real images are needed, whether
it uses the Inception network, and the per-set accumulator. :mod:`progan.metrics.api` is
built on it (``evaluate`` and the one-metric functions ``METRICS[name]``); this module does not
import it.

Names: ``"swd"``, ``"ms-ssim"``, ``"fid"``, ``"is"`` (aliases ``"ms_ssim"``, ``"inception_score"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from progan.metrics import fid as fid_mod
from progan.metrics import inception_score as is_mod
from progan.metrics import ms_ssim as ms_ssim_mod
from progan.metrics import swd as swd_mod
from progan.metrics.parallel import Collectives

__all__ = ["ALIASES", "SPECS", "Context", "MetricSpec", "resolve_names"]


@dataclass
class Context:
    """Options shared by the accumulators of one evaluation."""

    device: torch.device
    resolution: int
    channels: int
    seed: int = 0
    fid_method: str = "eigh"
    is_splits: int = 10
    swd_store_device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


class _SWDState:
    def __init__(self, ctx: Context) -> None:
        self.desc = swd_mod.PatchDescriptors(
            ctx.resolution,
            ctx.channels,
            seed=ctx.seed,
            device=ctx.device,
            store_device=ctx.swd_store_device,
        )

    def feed(self, images: torch.Tensor, inception: dict | None, start: int) -> None:
        self.desc.feed(images, start)

    def merge(self, comm: Collectives, total: int) -> None:
        """Rank 0 gets every rank's descriptors, in rank order (= image order). Level by
        level, releasing each rank's copy as it goes (they can take gigabytes)."""
        levels = []
        for i in range(len(self.desc.resolutions)):
            parts = comm.gather_rows(self.desc.take_level(i).cpu(), "gathering SWD descriptors")
            if parts is not None:
                levels.append(parts[0] if len(parts) == 1 else torch.cat(parts))
            del parts
        if comm.rank == 0:
            self.desc.replace_descriptors(levels, total)


class _FIDState:
    def __init__(self, ctx: Context) -> None:
        self.stats = fid_mod.FeatureStats()

    def feed(self, images: torch.Tensor, inception: dict | None, start: int) -> None:
        self.stats.feed(inception["pool"])

    def merge(self, comm: Collectives, total: int) -> None:
        """Feature sums about rank 0's shift, added up over the ranks."""
        center = comm.broadcast_object(
            None if self.stats.shift is None else self.stats.shift.cpu(), "sharing FID's shift"
        )
        if center is None:  # no rank has features (rank 0 always has some when any has)
            return
        total_sum, outer = self.stats.sums_about(center)
        count = torch.tensor([float(self.stats.num)], dtype=torch.float64)
        comm.sum_tensors([count, total_sum, outer], "adding up FID statistics")
        self.stats.load_sums(int(count.item()), center, total_sum, outer)


class _ISState:
    def __init__(self, ctx: Context) -> None:
        self.acc = is_mod.LogitsAccumulator()
        self.splits = ctx.is_splits
        self.start: int | None = None
        self.sums: torch.Tensor | None = None

    def feed(self, images: torch.Tensor, inception: dict | None, start: int) -> None:
        if self.start is None:
            self.start = start
        self.acc.feed(inception["logits"])

    def merge(self, comm: Collectives, total: int) -> None:
        """Per-split sums (by global image index), added up over the ranks."""
        logits = self.acc.logits()
        classes = comm.broadcast_object(logits.shape[1], "sharing the number of IS classes")
        if self.start is not None:
            self.sums = is_mod.split_sums(logits, self.splits, total, self.start)
        else:  # a rank without images (rank 0 always has some)
            self.sums = torch.zeros(self.splits, classes + 2, dtype=torch.float64)
        comm.sum_tensors([self.sums], "adding up Inception Score sums")


class _MSSSIMState:
    def __init__(self, ctx: Context) -> None:
        self.acc = ms_ssim_mod.MSSSIMAccumulator(ctx.device)

    def feed(self, images: torch.Tensor, inception: dict | None, start: int) -> None:
        self.acc.feed(images)

    def merge(self, comm: Collectives, total: int) -> None:
        """Pair-score sums and pair counts, added up over the ranks (each rank's block starts
        at an even image index, so its pairs are one process's pairs)."""
        sums = torch.tensor([self.acc.total, float(self.acc.num_pairs)], dtype=torch.float64)
        comm.sum_tensors([sums], "adding up MS-SSIM scores")
        self.acc.total, self.acc.num_pairs = float(sums[0]), int(sums[1])


def _swd_summary(state: _SWDState) -> Any:
    return (state.desc.resolutions, state.desc.finalize())


def _swd_result(fake: _SWDState, real_summary: Any, ctx: Context) -> dict[str, float]:
    resolutions, real_desc = real_summary
    return swd_mod.swd_from_descriptors(
        fake.desc.finalize(), real_desc, resolutions, seed=ctx.seed, device=ctx.device
    )


def _fid_summary(state: _FIDState) -> Any:
    return (state.stats.mean(), state.stats.cov())


def _fid_result(fake: _FIDState, real_summary: Any, ctx: Context) -> float:
    mu_r, sigma_r = real_summary
    return fid_mod.frechet_distance(
        fake.stats.mean(), fake.stats.cov(), mu_r, sigma_r, method=ctx.fid_method
    )


def _is_result(fake: _ISState, real_summary: Any, ctx: Context) -> dict[str, float]:
    mean, std = is_mod.score_from_split_sums(fake.sums)
    return {"mean": mean, "std": std}


def _ms_ssim_result(fake: _MSSSIMState, real_summary: Any, ctx: Context) -> float:
    return fake.acc.value()


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is computed.

    ``new_state(ctx)`` makes a per-set accumulator with ``feed(images, inception_outputs,
    start)`` (``start``: the set index of ``images[0]``) and ``merge(comm, total)``, which
    combines the accumulators of the ranks that shared the set of ``total`` images (see
    ``progan.metrics.parallel``; it is called once, also in a single process, and rank 0's
    state is the whole set's afterwards); ``summarize(state)`` turns the real set's
    accumulator into a cacheable summary (metrics with ``needs_real``);
    ``result(fake_state, real_summary, ctx)`` gives the metric value.
    """

    name: str
    default_num: int
    needs_real: bool
    uses_inception: bool
    new_state: Callable[[Context], Any]
    result: Callable[[Any, Any, Context], Any]
    summarize: Callable[[Any], Any] | None = None
    description: str = ""
    min_resolution: int = 1  # smallest image size (pixels) the metric is defined for


SPECS: dict[str, MetricSpec] = {
    "swd": MetricSpec(
        "swd", 16384, True, False, _SWDState, _swd_result, _swd_summary,
        "sliced Wasserstein distance x1e3 per Laplacian level and average (lower is better)",
        8,
    ),
    "ms-ssim": MetricSpec(
        "ms-ssim", 20000, False, False, _MSSSIMState, _ms_ssim_result, None,
        "mean MS-SSIM over pairs of images of the evaluated set (lower = more variation)",
        16,
    ),
    "fid": MetricSpec(
        "fid", 50000, True, True, _FIDState, _fid_result, _fid_summary,
        "Frechet Inception distance (lower is better)",
    ),
    "is": MetricSpec(
        "is", 50000, False, True, _ISState, _is_result, None,
        "Inception Score mean and std over 10 splits (higher is better)",
    ),
}  # fmt: skip

ALIASES = {"ms_ssim": "ms-ssim", "msssim": "ms-ssim", "inception_score": "is", "inception": "is"}


def resolve_names(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """Normalize ``"swd,fid"`` or a list of names (aliases allowed) to canonical names."""
    from progan.errors import ConfigError

    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in SPECS:
            raise ConfigError(f"unknown metric {item!r}; choose from {', '.join(SPECS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no metric given")
    return out
