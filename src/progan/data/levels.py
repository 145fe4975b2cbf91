"""Dataset levels: every lower resolution of a dataset's images, stored once as raw uint8.

A dataset holds its images at one resolution S (PNGs). Training at phase resolution R < S
needs each image box-downscaled to R; decoding an S x S PNG for that costs milliseconds per
image (30 img/s per core at 1024x1024). The *levels store* holds, for R = 4, 8, ... < S, the
array ``level_R`` (uint8, shape ``(N, C, R, R)``, C order, no header) of every image, so that a
batch at R is a memory-mapped gather (no decode at all).

Pixels: ``level_R[i]`` is the box mean of the full image over its ``(S/R) x (S/R)`` blocks,
computed exactly in integers and rounded half up **once**
(``(sum + (S/R)**2 // 2) // (S/R)**2``): see :func:`box_levels`. The float box filter that
:func:`progan.nn.resample.real_images_for_phase` applies to full-size images differs from it
by at most half a uint8 step (the rounding; 1/255 in [-1, 1] units), and the fade's lower
half (``downsample2x`` of ``level_R``) by at most the same bound (a mean of errors each within
it). The official tool instead rounds each level from the previous rounded one (errors add up
to about one step at the smallest levels).

Layout, beside the dataset (``DATA.zip`` -> ``DATA.zip.levels/``; where that folder cannot be
written, ``$XDG_CACHE_HOME/progan/levels/NAME-IDENTITY/``)::

    levels.json          {"format": "progan-levels", "version": 1, "dataset": {identity,
                          count, resolution, channels}, "levels": [{resolution, file, bytes,
                          sha256}, ...], "max_bytes": ..., "created": ...}
    level_0004.u8 ...    raw uint8 (N, C, R, R)

Levels are stored from 4 upwards while their total stays within ``max_bytes`` (default 4 GiB:
30,000 RGB images keep 4 ... 128, 2.0 GB); higher ones are decoded from the dataset and
reduced with the same function. The store is written with all cores, crash-safely (a temporary
folder renamed into place, the manifest written last) and with the same bytes whatever the
number of processes. ``identity`` hashes the dataset's member names, sizes and CRCs (zip) or
sizes and modification times (folder): a changed dataset makes the store stale, and
:func:`open_levels` rebuilds it (``rebuild=True``) or refuses it naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from progan.data.dataset import ImageDataset
from progan.errors import DatasetError
from progan.fileio import atomic_write_json

FORMAT = "progan-levels"
VERSION = 1
MANIFEST = "levels.json"
DEFAULT_MAX_BYTES = 4 << 30


def usable_cores() -> int:
    """The number of CPU cores this process may run on (``os.sched_getaffinity``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _sum_dtype(halvings: int) -> type:
    """The narrowest unsigned integer that holds a sum of 4**halvings uint8 values."""
    most = 255 * 4**halvings
    return next(t for t in (np.uint16, np.uint32, np.uint64) if most <= np.iinfo(t).max)


def box_levels(image: np.ndarray, resolutions: list[int]) -> dict[int, np.ndarray]:
    """uint8 ``(C, S, S)`` -> {R: uint8 ``(C, R, R)``}: the exact box mean over
    ``(S/R) x (S/R)`` blocks, rounded half up once (integer arithmetic, so no float error).

    Sums of 2x2 blocks are taken level by level (four strided adds, in the narrowest integer
    type that cannot overflow), so the whole pyramid costs about one pass over the image."""
    s = image.shape[-1]
    sums, size, halvings, out = image, s, 0, {}
    for r in sorted(resolutions, reverse=True):
        while size > r:
            halvings += 1
            size //= 2
            t = sums.astype(_sum_dtype(halvings), copy=False)
            sums = t[:, 0::2, 0::2] + t[:, 1::2, 0::2]
            sums += t[:, 0::2, 1::2]
            sums += t[:, 1::2, 1::2]
        shift = 2 * halvings  # the block holds 4**halvings pixels
        half = (1 << shift) >> 1
        out[r] = ((sums + half) >> shift).astype(np.uint8) if shift else sums.copy()
    return out


def dataset_identity(dataset: ImageDataset) -> str:
    """sha256 (hex) of the dataset's content listing: zip member names, sizes and CRC-32s,
    or folder file names, sizes and modification times."""
    h = hashlib.sha256()
    if dataset.is_zip:
        with zipfile.ZipFile(dataset.path) as zf:
            rows = sorted((i.filename, i.file_size, i.CRC) for i in zf.infolist())
    else:
        rows = []
        for p in sorted(dataset.path.rglob("*")):
            if p.is_file():
                st = p.stat()
                rows.append((p.relative_to(dataset.path).as_posix(), st.st_size, st.st_mtime_ns))
    h.update(json.dumps(rows).encode())
    return h.hexdigest()


def levels_path(dataset: ImageDataset) -> Path:
    """Where the dataset's store lives: ``DATA.zip.levels`` beside it when that folder can be
    written, else under the user's cache folder."""
    beside = dataset.path.parent / f"{dataset.path.name}.levels"
    if beside.is_dir() or os.access(dataset.path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "progan" / "levels" / f"{dataset.name}-{dataset_identity(dataset)[:16]}"


def stored_resolutions(dataset: ImageDataset, max_bytes: int) -> list[int]:
    """The levels 4, 8, ... < S whose total size stays within ``max_bytes``."""
    out, total, r = [], 0, 4
    while r < dataset.resolution:
        total += len(dataset) * dataset.channels * r * r
        if total > max_bytes:
            break
        out.append(r)
        r *= 2
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


class LevelStore:
    """An opened, checked levels store: ``array(R)`` is a read-only ``np.memmap`` of shape
    ``(N, C, R, R)`` for every ``R in resolutions``. Picklable (the maps reopen lazily)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        d = manifest["dataset"]
        self.count, self.channels = int(d["count"]), int(d["channels"])
        self.files = {int(lv["resolution"]): lv["file"] for lv in manifest["levels"]}
        self.resolutions = sorted(self.files)
        self._maps: dict[int, np.memmap] = {}

    def array(self, resolution: int) -> np.memmap:
        m = self._maps.get(resolution)
        if m is None:
            shape = (self.count, self.channels, resolution, resolution)
            m = np.memmap(self.path / self.files[resolution], np.uint8, "r", shape=shape)
            self._maps[resolution] = m
        return m

    def nbytes(self) -> int:
        return sum(int(lv["bytes"]) for lv in self.manifest["levels"])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}


def _check(path: Path, dataset: ImageDataset, verify: bool) -> LevelStore:
    """The store at ``path`` if it is whole and belongs to ``dataset``; else DatasetError
    naming the file at fault."""
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mpath}: not a readable levels manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{mpath}: not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{mpath}: version {manifest.get('version')!r}, expected {VERSION}")
    want = {
        "identity": dataset_identity(dataset),
        "count": len(dataset),
        "resolution": dataset.resolution,
        "channels": dataset.channels,
    }
    if manifest.get("dataset") != want:
        raise DatasetError(f"{mpath}: stale, made from another version of {dataset.path}")
    for lv in manifest.get("levels", []):
        f = path / lv["file"]
        r = int(lv["resolution"])
        size = len(dataset) * dataset.channels * r * r
        if not f.is_file() or f.stat().st_size != size or lv["bytes"] != size:
            raise DatasetError(f"{f}: missing or of the wrong size (expected {size} bytes)")
        if verify and _file_sha256(f) != lv["sha256"]:
            raise DatasetError(f"{f}: corrupt (its sha256 differs from {mpath})")
    return LevelStore(path, manifest)


_JOB: dict[str, Any] = {}  # a preparation's dataset and resolutions, set once per process


def _start_job(dataset: ImageDataset, resolutions: list[int]) -> None:
    """Pool initializer (and the in-process case): what every chunk needs, sent once."""
    _JOB.update(dataset=dataset, resolutions=resolutions)


def _levels_of_chunk(span: tuple[int, int]) -> dict[int, np.ndarray]:
    """{R: uint8 (n, C, R, R)} of images ``lo .. hi-1`` (a pool task)."""
    dataset, resolutions = _JOB["dataset"], _JOB["resolutions"]
    parts = [box_levels(dataset.read_image(i), resolutions) for i in range(*span)]
    return {r: np.stack([p[r] for p in parts]) for r in resolutions}


def prepare_levels(
    dataset: ImageDataset | str | os.PathLike,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    workers: int | None = None,
    progress: bool = True,
    path: Path | None = None,
) -> LevelStore:
    """Write the levels store of ``dataset`` (replacing any old one) and return it.

    ``workers`` processes decode and reduce the images (default: all usable cores; 0 = this
    process); the bytes written do not depend on it. Crash-safe: everything goes into a
    temporary folder beside the destination that is renamed into place when complete.
    """
    if not isinstance(dataset, ImageDataset):
        dataset = ImageDataset(dataset)
    dest = Path(path) if path is not None else levels_path(dataset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    resolutions = stored_resolutions(dataset, max_bytes)
    n, c = len(dataset), dataset.channels
    workers = usable_cores() if workers is None else workers
    identity = dataset_identity(dataset)  # of what is read below
    _remove_abandoned(dest)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)
    )
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the store is not
    try:
        maps = {
            r: np.memmap(tmp / f"level_{r:04d}.u8", np.uint8, "w+", shape=(n, c, r, r))
            for r in resolutions
        }
        spans = [(lo, min(lo + 16, n)) for lo in range(0, n, 16)] if resolutions else []
        with contextlib.ExitStack() as stack:
            if workers > 0 and spans:
                pool = stack.enter_context(
                    multiprocessing.get_context().Pool(workers, _start_job, (dataset, resolutions))
                )
                results = pool.imap(_levels_of_chunk, spans)
            else:
                _start_job(dataset, resolutions)
                results = map(_levels_of_chunk, spans)
            bar = stack.enter_context(
                tqdm(total=n, disable=not progress, unit="img", desc="levels")
            )
            for (lo, hi), arrays in zip(spans, results, strict=True):
                for r, a in arrays.items():
                    maps[r][lo:hi] = a
                bar.update(hi - lo)
        _JOB.clear()
        levels = []
        for r, m in maps.items():
            m.flush()
            del m
            f = tmp / f"level_{r:04d}.u8"
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
            levels.append(
                {
                    "resolution": r,
                    "file": f.name,
                    "bytes": f.stat().st_size,
                    "sha256": _file_sha256(f),
                }
            )
        maps.clear()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dataset": {
                "identity": identity,
                "count": n,
                "resolution": dataset.resolution,
                "channels": c,
            },
            "pixels": "exact box mean of the full image, rounded half up once",
            "levels": levels,
            "max_bytes": int(max_bytes),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return LevelStore(dest, manifest)


def _remove_abandoned(dest: Path) -> None:
    """Remove the temporary folders of preparations of ``dest`` whose process is gone (a crash
    or a kill; on this host: the folder name holds the process id)."""
    for tmp in dest.parent.glob(f".{dest.name}.*.tmp"):
        pid = tmp.name[len(dest.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass  # alive, another user's


def open_levels(
    dataset: ImageDataset,
    *,
    rebuild: bool = False,
    verify: bool = True,
    progress: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LevelStore | None:
    """The dataset's levels store, checked (sizes; with ``verify`` also checksums).

    A missing store is made when ``rebuild`` (else None). A stale or corrupt one is rebuilt
    when ``rebuild``, else refused with a :class:`DatasetError` naming the file.
    """
    path = levels_path(dataset)
    if not (path / MANIFEST).is_file():
        return prepare_levels(dataset, max_bytes=max_bytes, progress=progress) if rebuild else None
    try:
        return _check(path, dataset, verify)
    except DatasetError as e:
        if not rebuild:
            raise DatasetError(f"{e}; run `progan dataset prepare {dataset.path}`") from None
        if progress:
            tqdm.write(f"Rebuilding the levels of {dataset.path}: {e}")
        return prepare_levels(dataset, max_bytes=max_bytes, progress=progress)


class ImagesAt:
    """Reads dataset images at one resolution R <= S: uint8 ``(n, C, R, R)``.

    From the levels store where it holds R, else by decoding the PNGs (and, for R < S,
    reducing them with :func:`box_levels`: the same bytes as a store would hold).
    Picklable, for DataLoader workers.
    """

    def __init__(self, dataset: ImageDataset, resolution: int, store: LevelStore | None):
        if resolution > dataset.resolution or dataset.resolution % resolution:
            raise DatasetError(
                f"{dataset.path}: cannot serve {dataset.resolution}x{dataset.resolution} images "
                f"at {resolution}x{resolution}"
            )
        self.dataset = dataset
        self.resolution = resolution
        self.store = store if store is not None and resolution in store.resolutions else None

    @property
    def image_bytes(self) -> int:
        """Bytes read per image: the level's from the store, else the full image's (what
        sizes the loader's chunks: a chunk of decodes should not take seconds)."""
        side = self.resolution if self.store is not None else self.dataset.resolution
        return self.dataset.channels * side**2

    def read(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if self.store is not None:
            return np.asarray(self.store.array(self.resolution)[idx])
        if self.resolution == self.dataset.resolution:
            return np.stack([self.dataset.read_image(int(i)) for i in idx])
        r = self.resolution
        return np.stack([box_levels(self.dataset.read_image(int(i)), [r])[r] for i in idx])

    def read_all(self) -> np.ndarray:
        """All images in dataset order (uint8 ``(N, C, R, R)``)."""
        if self.store is not None:
            return np.array(self.store.array(self.resolution))
        return self.read(np.arange(len(self.dataset)))
