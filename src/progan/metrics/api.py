"""``evaluate``: several metrics in one streaming pass over generated (or second-set) images;
``METRICS[name](fake, real=None, num=None, **options)``: one metric (a thin wrapper of it).

Real-side summaries (SWD descriptors, FID mean/covariance) are cached in memory per dataset
content and options, and FID statistics also on disk (``cache_dir``), so the training loop
can call ``evaluate`` at every snapshot and pay for the real images only once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from progan.errors import ConfigError
from progan.metrics import fid as fid_mod
from progan.metrics.parallel import (
    Collectives,
    SingleProcess,
    from_rank_zero,
    on_every_rank,
    shard_range,
)
from progan.metrics.registry import SPECS, Context, resolve_names
from progan.metrics.sources import ImageSource, as_source

__all__ = ["METRICS", "clear_memory_cache", "default_cache_dir", "evaluate"]

_MEMORY_CACHE: OrderedDict[str, Any] = OrderedDict()
_MEMORY_CACHE_SIZE = 4
_CACHE_VERSION = 2  # 2: the key names the Inception input convention


def default_cache_dir() -> Path:
    """``$PROGAN_CACHE_DIR`` or ``$XDG_CACHE_HOME/progan/metrics`` (``~/.cache/...``)."""
    env = os.environ.get("PROGAN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "progan" / "metrics"


def clear_memory_cache() -> None:
    """Forget the real-data summaries kept in memory."""
    _MEMORY_CACHE.clear()


def _downscale(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Halve uint8 NCHW images by 2x2 averaging (rounded), as the official code, to ``res``."""
    x = images
    while x.shape[-1] > resolution:
        x = (F.avg_pool2d(x.float(), 2)).round().clamp(0, 255).to(torch.uint8)
    return x


def _stream(
    source: ImageSource, start: int, stop: int, batch_size: int, device: torch.device,
    resolution: int, progress: str | None,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Images ``start`` .. ``stop - 1`` of ``source`` at ``resolution``, in batches."""
    it = source.batches(stop, batch_size, device, start=start)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.available(stop) - start, desc=progress, unit="img", leave=False)
    for batch in it:
        if batch.shape[-1] != resolution:
            batch = _downscale(batch, resolution)
        if progress:
            bar.update(batch.shape[0])
        yield batch
    if progress:
        bar.close()


def _run_pass(
    names: list[str], counts: dict[str, int], source: ImageSource, ctx: Context,
    batch_size: int, inception_fn, progress: str | None, comm: Collectives,
) -> dict[str, Any]:  # fmt: skip
    """Feed the first ``counts[name]`` images of ``source`` to a new state of each metric.

    Each rank of ``comm`` feeds its block of the images (``shard_range``); the states are
    then merged, after which rank 0's states hold the whole set."""
    total = max(counts[n] for n in names)
    lo, hi = shard_range(total, batch_size, comm.rank, comm.world_size)

    def local_pass() -> dict[str, Any]:
        states = {n: SPECS[n].new_state(ctx) for n in names}
        pos = lo
        with torch.no_grad():
            for batch in _stream(source, lo, hi, batch_size, ctx.device, ctx.resolution,
                                 progress if comm.rank == 0 else None):  # fmt: skip
                want = {n: min(batch.shape[0], counts[n] - pos) for n in names}
                want = {n: k for n, k in want.items() if k > 0}
                if not want:
                    break
                incep = None
                k_inc = max((k for n, k in want.items() if SPECS[n].uses_inception), default=0)
                if k_inc:
                    incep = inception_fn(batch[:k_inc])
                for n, k in want.items():
                    sub = {key: v[:k] for key, v in incep.items()} if incep is not None else None
                    states[n].feed(batch[:k], sub, pos)
                pos += batch.shape[0]
        for n in names:
            if pos < min(counts[n], hi):
                raise ConfigError(f"{source.name} gave {pos} images, {counts[n]} needed for {n}")
        return states

    states = on_every_rank(comm, local_pass, f"reading {source.name} for the metrics")
    for n in names:
        states[n].merge(comm, counts[n])
    return states


def _cache_key(name: str, source: ImageSource, num: int, ctx: Context, weights: str) -> str:
    opts = {
        "v": _CACHE_VERSION, "metric": name, "source": source.cache_key, "num": num,
        "resolution": ctx.resolution, "seed": ctx.seed, "weights": weights,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:24]


def evaluate(
    metrics: str | Sequence[str],
    fake_source: Any,
    real_source: Any = None,
    num: int | None = None,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    seed: int = 0,
    inception_path: str | os.PathLike | None = None,
    random_inception: bool = False,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    fid_method: str = "eigh",
    is_splits: int = 10,
    progress: bool = False,
    comm: Collectives | None = None,
    fid_preprocess: str = "tf",
    num_real: int | None = None,
) -> dict[str, Any]:
    """Compute ``metrics`` of ``fake_source`` (against ``real_source`` where needed).

    Args:
        metrics: names ("swd", "ms-ssim", "fid", "is") as a list or comma-separated string.
        fake_source: the evaluated images: an ``ImageSource`` (e.g. ``GeneratorSource``), a
            uint8 (N, C, R, R) array/tensor, or a dataset path (real-vs-real).
        real_source: the reference images (same kinds); required for "swd" and "fid". Real
            images larger than the fake ones are 2x2-box downscaled to the fake resolution.
        num: images per metric (None: each metric's default -- SWD 16384, MS-SSIM 20000
            images = 10,000 pairs, FID 50000, IS 50000). Finite sources cap it; SWD uses as
            many fake images as real ones.
        device: torch device (default: CUDA when available).
        batch_size: images per batch.
        seed: dataset order, SWD patch and direction sampling.
        inception_path: FID Inception weights file (see ``progan.metrics.inception``).
        random_inception: use randomly initialized Inception weights (benchmarks/tests only;
            disables the disk cache).
        cache_dir: where dataset FID statistics are cached (default ``default_cache_dir()``).
        use_cache: read/write the in-memory and on-disk caches of real-data summaries.
        fid_method: "eigh" (fast, default) or "sqrtm" (scipy reference).
        is_splits: Inception Score splits (10).
        progress: show tqdm progress bars.
        num_real: real images for the FID statistics (None: as many as the fake side, capped by
            the dataset). Lets a real-vs-real FID use unequal sets, e.g. CIFAR-10's 10,000 test
            images against its 50,000 training images. SWD always uses equal counts.
        fid_preprocess: the Inception's input convention for FID and IS: "tf" (default; the
            TensorFlow graph's resize and scaling, as the paper, TTUR, NVIDIA's metrics and
            torch-fidelity) or "pytorch-fid" (see ``progan.metrics.inception_net``).
        comm: the ranks of a multi-process job (e.g. the trainer's
            ``progan.train.distributed.Dist``; see ``progan.metrics.parallel``). Every rank
            calls ``evaluate`` with the same arguments, its own ``device``, and evaluates its
            block of the images; rank 0 merges the blocks, reads and writes the caches and
            computes the values; every rank returns them. ``batch_size`` must then be even
            for MS-SSIM. None: this process alone.

    Returns:
        ``{"swd": {"128": .., ..., "avg": ..}, "ms-ssim": float, "fid": float,
        "is": {"mean": .., "std": ..}, "num_images": {metric: n}, "seconds": float,
        "device": str}`` with only the requested metrics.
    """
    t0 = time.perf_counter()
    comm = comm if comm is not None else SingleProcess()
    main = comm.rank == 0
    names = resolve_names(metrics)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def prepare() -> tuple[Any, Any, Context, dict[str, int], dict[str, int], str]:
        if batch_size < 1:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        if comm.world_size > 1 and "ms-ssim" in names and batch_size % 2:
            raise ConfigError(
                f"MS-SSIM over {comm.world_size} ranks needs an even batch size (so that no "
                f"image pair straddles two ranks), got {batch_size}"
            )
        fake = as_source(fake_source, seed=seed + 1)
        real = as_source(real_source, seed=seed) if real_source is not None else None
        need_real = [n for n in names if SPECS[n].needs_real]
        if need_real and real is None:
            raise ConfigError(f"{', '.join(need_real)} need real images (real_source / --data)")
        if real is not None and real.channels != fake.channels:
            raise ConfigError(f"channel mismatch: {real.channels} (real) vs {fake.channels}")
        if real is not None and real.resolution < fake.resolution and need_real:
            raise ConfigError(
                f"real images ({real.resolution}px) are smaller than the evaluated ones "
                f"({fake.resolution}px)"
            )
        ctx = Context(dev, fake.resolution, fake.channels, seed=seed, fid_method=fid_method,
                      is_splits=is_splits)  # fmt: skip
        counts = {n: num if num is not None else SPECS[n].default_num for n in names}
        if any(c <= 0 for c in counts.values()):
            raise ConfigError("--num must be positive")
        for n in names:
            counts[n] = fake.available(counts[n])
        if num_real is not None and num_real <= 0:
            raise ConfigError(f"--num-real must be positive, got {num_real}")
        real_counts = {
            n: real.available(num_real if (num_real is not None and n == "fid") else counts[n])
            for n in need_real
        }
        if "swd" in real_counts:
            counts["swd"] = min(counts["swd"], real_counts["swd"])
            real_counts["swd"] = counts["swd"]
        weights_id = "random"
        if any(SPECS[n].uses_inception for n in names) and not random_inception:
            from progan.metrics.inception import find_inception_weights, inception_weights_kind

            found = find_inception_weights(inception_path)
            if "is" in names and inception_weights_kind(found) == "torchscript":
                raise ConfigError(
                    f"the Inception Score needs the 1008-way classifier layer, which {found} "
                    "(NVIDIA's FID-only conversion) does not have; pass pytorch-fid's "
                    "pt_inception-2015-12-05-6726825d.pth with --inception, or leave out is"
                )
            weights_id = found.name
        weights_id = f"{weights_id}:{fid_preprocess}"
        return fake, real, ctx, counts, real_counts, weights_id

    fake, real, ctx, counts, real_counts, weights_id = on_every_rank(
        comm, prepare, "preparing the metrics"
    )
    inception = None

    def inception_fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
        nonlocal inception
        if inception is None:
            from progan.metrics.inception import load_inception

            inception = load_inception(
                inception_path, dev, random_weights=random_inception, preprocess=fid_preprocess
            )
        return inception(images)

    # Real side (rank 0): memory cache, then disk (FID); then one pass for what is missing.
    summaries: dict[str, Any] = {}
    cacheable = use_cache and real is not None and real.cache_key is not None
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = {n: _cache_key(n, real, real_counts[n], ctx, weights_id) for n in real_counts}
    if main:
        summaries = _cached_summaries(keys, cacheable, cdir, random_inception)
    todo = comm.broadcast_object(
        [n for n in real_counts if n not in summaries], "agreeing on the real-image statistics"
    )
    if todo:
        states = _run_pass(todo, {n: real_counts[n] for n in todo}, real, ctx, batch_size,
                           inception_fn, "real" if progress else None, comm)  # fmt: skip
        if main:
            for n in todo:
                summaries[n] = SPECS[n].summarize(states[n])
                del states[n]
                if cacheable:
                    _remember(n, keys[n], summaries[n], real, real_counts[n], ctx, cdir,
                              weights_id, random_inception)  # fmt: skip
        del states

    states = _run_pass(names, counts, fake, ctx, batch_size, inception_fn,
                       "fake" if progress else None, comm)  # fmt: skip

    def results() -> dict[str, Any]:
        out: dict[str, Any] = {n: SPECS[n].result(states[n], summaries.get(n), ctx) for n in names}
        out["num_images"] = dict(counts)
        out["num_real_images"] = dict(real_counts)
        out["seconds"] = time.perf_counter() - t0
        out["device"] = str(dev) if comm.world_size == 1 else f"{comm.world_size} x {dev}"
        return out

    return from_rank_zero(comm, results, "computing the metric values")


def _cached_summaries(
    keys: dict[str, str], cacheable: bool, cdir: Path, random_inception: bool
) -> dict[str, Any]:
    """The real-data summaries found in the memory cache, or (FID) on disk."""
    summaries: dict[str, Any] = {}
    if not cacheable:
        return summaries
    for n, key in keys.items():
        if key in _MEMORY_CACHE:
            _MEMORY_CACHE.move_to_end(key)
            summaries[n] = _MEMORY_CACHE[key]
        elif n == "fid" and not random_inception:
            path = cdir / f"fid-stats-{key}.npz"
            if path.is_file():
                try:
                    mu, sigma, _ = fid_mod.load_stats(path)
                    summaries[n] = (mu, sigma)
                except (OSError, ValueError, KeyError):
                    pass
    return summaries


def _remember(
    name: str, key: str, summary: Any, real: ImageSource, num: int, ctx: Context, cdir: Path,
    weights_id: str, random_inception: bool,
) -> None:  # fmt: skip
    """Keep a real-data summary in memory and, for FID with real weights, on disk."""
    _MEMORY_CACHE[key] = summary
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)
    if name == "fid" and not random_inception:
        mu, sigma = summary
        meta = {
            "source": real.name, "cache_key": real.cache_key, "num": num,
            "resolution": ctx.resolution, "seed": ctx.seed, "weights": weights_id,
        }  # fmt: skip
        with contextlib.suppress(OSError):  # a read-only cache only costs time
            fid_mod.save_stats(cdir / f"fid-stats-{key}.npz", mu, sigma, meta)


# --------------------------------------------------------------------------------------------
# one function per metric


def _metric_function(name: str) -> Callable[..., Any]:
    def compute(fake: Any, real: Any = None, num: int | None = None, **options: Any) -> Any:
        return evaluate([name], fake, real, num, **options)[name]

    compute.__name__ = name.replace("-", "_")
    compute.__doc__ = f"{SPECS[name].description}. See progan.metrics.api.evaluate for options."
    return compute


METRICS: dict[str, Callable[..., Any]] = {name: _metric_function(name) for name in SPECS}
