"""``evaluate``: several metrics in one streaming pass over generated (or second-set) images.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from progan.errors import ConfigError
from progan.metrics import fid as fid_mod
from progan.metrics.registry import SPECS, Context, resolve_names
from progan.metrics.sources import ImageSource, as_source

__all__ = ["clear_memory_cache", "default_cache_dir", "evaluate"]

_MEMORY_CACHE: OrderedDict[str, Any] = OrderedDict()
_MEMORY_CACHE_SIZE = 4
_CACHE_VERSION = 1


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
    source: ImageSource, num: int, batch_size: int, device: torch.device, resolution: int,
    progress: str | None,
) -> Iterator[torch.Tensor]:  # fmt: skip
    it = source.batches(num, batch_size, device)
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=source.available(num), desc=progress, unit="img", leave=False)
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
    batch_size: int, inception_fn, progress: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Feed the first ``counts[name]`` images of ``source`` to a new state of each metric."""
    states = {n: SPECS[n].new_state(ctx) for n in names}
    seen = dict.fromkeys(names, 0)
    total = max(counts[n] for n in names)
    with torch.no_grad():
        for batch in _stream(source, total, batch_size, ctx.device, ctx.resolution, progress):
            want = {n: min(batch.shape[0], counts[n] - seen[n]) for n in names}
            want = {n: k for n, k in want.items() if k > 0}
            if not want:
                break
            incep = None
            k_inc = max((k for n, k in want.items() if SPECS[n].uses_inception), default=0)
            if k_inc:
                incep = inception_fn(batch[:k_inc])
            for n, k in want.items():
                sub = {key: v[:k] for key, v in incep.items()} if incep is not None else None
                states[n].feed(batch[:k], sub)
                seen[n] += k
    for n in names:
        if seen[n] < counts[n]:
            raise ConfigError(f"{source.name} gave {seen[n]} images, {counts[n]} needed for {n}")
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

    Returns:
        ``{"swd": {"128": .., ..., "avg": ..}, "ms-ssim": float, "fid": float,
        "is": {"mean": .., "std": ..}, "num_images": {metric: n}, "seconds": float,
        "device": str}`` with only the requested metrics.
    """
    t0 = time.perf_counter()
    names = resolve_names(metrics)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
    real_counts = {n: real.available(counts[n]) for n in need_real}
    if "swd" in real_counts:
        counts["swd"] = min(counts["swd"], real_counts["swd"])
        real_counts["swd"] = counts["swd"]

    inception = None
    weights_id = "random"

    def inception_fn(images: torch.Tensor) -> dict[str, torch.Tensor]:
        nonlocal inception
        if inception is None:
            from progan.metrics.inception import load_inception

            inception = load_inception(inception_path, dev, random_weights=random_inception)
        return inception(images)

    if any(SPECS[n].uses_inception for n in names) and not random_inception:
        from progan.metrics.inception import find_inception_weights

        weights_id = find_inception_weights(inception_path).name

    # Real side: memory cache, then disk (FID), then one pass for whatever is missing.
    summaries: dict[str, Any] = {}
    cacheable = use_cache and real is not None and real.cache_key is not None
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    keys = {n: _cache_key(n, real, real_counts[n], ctx, weights_id) for n in need_real}
    for n in need_real:
        if cacheable and keys[n] in _MEMORY_CACHE:
            _MEMORY_CACHE.move_to_end(keys[n])
            summaries[n] = _MEMORY_CACHE[keys[n]]
        elif cacheable and n == "fid" and not random_inception:
            path = cdir / f"fid-stats-{keys[n]}.npz"
            if path.is_file():
                try:
                    mu, sigma, _ = fid_mod.load_stats(path)
                    summaries[n] = (mu, sigma)
                except (OSError, ValueError, KeyError):
                    pass
    todo = [n for n in need_real if n not in summaries]
    if todo:
        states = _run_pass(todo, {n: real_counts[n] for n in todo}, real, ctx, batch_size,
                           inception_fn, "real" if progress else None)  # fmt: skip
        for n in todo:
            summaries[n] = SPECS[n].summarize(states[n])
            del states[n]
            if not cacheable:
                continue
            _MEMORY_CACHE[keys[n]] = summaries[n]
            while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
                _MEMORY_CACHE.popitem(last=False)
            if n == "fid" and not random_inception:
                mu, sigma = summaries[n]
                meta = {
                    "source": real.name, "cache_key": real.cache_key, "num": real_counts[n],
                    "resolution": ctx.resolution, "seed": seed, "weights": weights_id,
                }  # fmt: skip
                with contextlib.suppress(OSError):  # a read-only cache only costs time
                    fid_mod.save_stats(cdir / f"fid-stats-{keys[n]}.npz", mu, sigma, meta)

    states = _run_pass(names, counts, fake, ctx, batch_size, inception_fn,
                       "fake" if progress else None)  # fmt: skip
    out: dict[str, Any] = {}
    for n in names:
        out[n] = SPECS[n].result(states[n], summaries.get(n), ctx)
    out["num_images"] = dict(counts)
    out["seconds"] = time.perf_counter() - t0
    out["device"] = str(dev)
    return out
