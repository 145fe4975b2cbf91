"""Dataset levels: pixels against the float box filter, parallel bytes, the stream at a phase's
resolution, crash safety and stale/corrupt stores."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from progan.data import levels as levels_mod
from progan.data.dataset import ImageDataset
from progan.data.levels import (
    MANIFEST,
    box_levels,
    levels_path,
    open_levels,
    prepare_levels,
    stored_resolutions,
)
from progan.data.loader import RealImageStream
from progan.errors import DatasetError
from progan.nn.resample import real_images_for_phase

N = 19  # not a multiple of the preparation's chunks of 16


@pytest.fixture
def data32(tmp_path, make_dataset):
    images, _ = make_dataset(tmp_path / "d.zip", count=N, resolution=32, channels=3)
    return ImageDataset(tmp_path / "d.zip"), images


def _reference_level(image: np.ndarray, r: int) -> np.ndarray:
    """Independent reference: float64 block mean, rounded half up."""
    c, s, _ = image.shape
    k = s // r
    mean = image.astype(np.float64).reshape(c, r, k, r, k).mean(axis=(2, 4))
    return np.floor(mean + 0.5).astype(np.uint8)


def test_box_levels_are_the_block_mean_rounded_once():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    got = box_levels(image, [4, 8, 16, 32])
    for r in (4, 8, 16, 32):
        np.testing.assert_array_equal(got[r], _reference_level(image, r))
    # Rounded once from the full image, not level by level: a block of means 0.5 rounds up.
    tricky = np.zeros((1, 4, 4), np.uint8)
    tricky[0, 0, 0] = tricky[0, 2, 2] = 2  # 2x2 means 0.5, 0, 0, 0.5 -> 4x4 mean 0.25
    assert box_levels(tricky, [2, 1])[1][0, 0, 0] == 0
    assert box_levels(tricky, [2])[2].tolist() == [[[1, 0], [0, 1]]]


@pytest.mark.parametrize("alpha", [1.0, 0.37])
def test_served_pixels_within_half_a_step_of_todays(alpha):
    """real_images_for_phase on the stored level vs on the full image (today's path): within
    half a uint8 step (1/255 in [-1, 1]) plus float32 rounding, fade included."""
    rng = np.random.default_rng(1)
    full = rng.integers(0, 256, (6, 3, 64, 64), dtype=np.uint8)
    worst = 0.0
    for r in (4, 8, 16, 32):
        stored = np.stack([box_levels(x, [r])[r] for x in full])
        today = real_images_for_phase(torch.from_numpy(full), r, alpha)
        served = real_images_for_phase(torch.from_numpy(stored), r, alpha)
        assert served.shape == today.shape == (6, 3, r, r)
        diff = (served - today).abs().max().item()
        assert diff <= 1 / 255 + 1e-6, (r, diff)
        worst = max(worst, diff)
    assert worst > 0.5 / 255  # the rounding is visible: the bound is not vacuous


def test_parallel_preparation_writes_the_same_bytes(data32, tmp_path):
    ds, images = data32
    one = prepare_levels(ds, workers=0, progress=False, path=tmp_path / "one")
    two = prepare_levels(ds, workers=2, progress=False, path=tmp_path / "two")
    assert one.resolutions == two.resolutions == [4, 8, 16]
    for r in one.resolutions:
        a = (tmp_path / "one" / f"level_{r:04d}.u8").read_bytes()
        assert a == (tmp_path / "two" / f"level_{r:04d}.u8").read_bytes()
        expect = np.stack([_reference_level(x, r) for x in images])
        np.testing.assert_array_equal(one.array(r), expect)
    assert one.manifest["levels"] == two.manifest["levels"]


def test_stored_levels_stop_at_the_byte_budget(data32):
    ds, _ = data32
    per = [N * 3 * r * r for r in (4, 8, 16)]
    assert stored_resolutions(ds, sum(per)) == [4, 8, 16]
    assert stored_resolutions(ds, sum(per) - 1) == [4, 8]
    assert stored_resolutions(ds, per[0] - 1) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_at_a_phase_resolution_is_the_full_stream_reduced(data32, workers):
    """Same images, order and mirror flags; from the store, from decoding, or budget-limited."""
    ds, _ = data32
    store = open_levels(ds, rebuild=True, progress=False, max_bytes=N * 3 * (16 + 64))
    assert store.resolutions == [4, 8]
    kw = {"seed": 5, "mirror": True, "start": 7}
    with RealImageStream(ds, num_workers=0, **kw) as s:
        full = s.next(2 * N)[0].numpy()
    for r in (4, 8, 16):  # 16 is not stored: decoded and reduced in the workers
        expect = np.stack([box_levels(x, [r])[r] for x in full])
        for store_or_none in (store, None):
            s = RealImageStream(ds, num_workers=workers, resolution=r, levels=store_or_none, **kw)
            with s:
                got = torch.cat([s.next(5)[0], s.next(2 * N - 5)[0]]).numpy()
            np.testing.assert_array_equal(got, expect)
        cached = RealImageStream(ds, num_workers=0, resolution=r, levels=store, cache="cpu", **kw)
        np.testing.assert_array_equal(cached.next(2 * N)[0].numpy(), expect)


def test_switching_resolution_keeps_the_position(data32):
    ds, _ = data32
    store = open_levels(ds, rebuild=True, progress=False)
    s = RealImageStream(ds, seed=2, num_workers=0, resolution=4, levels=store)
    a4 = s.next(10)[0]
    s.set_resolution(8)
    a8 = s.next(10)[0]
    assert s.position == 20 and a4.shape[-1] == 4 and a8.shape[-1] == 8
    resumed = RealImageStream(ds, seed=2, num_workers=0, start=10, resolution=8, levels=store)
    assert torch.equal(resumed.next(10)[0], a8)


def test_levels_sit_beside_the_dataset_and_a_failed_preparation_leaves_nothing(data32, monkeypatch):
    ds, _ = data32
    dest = levels_path(ds)
    assert dest == ds.path.parent / "d.zip.levels"

    def boom(task):
        raise RuntimeError("killed")

    monkeypatch.setattr(levels_mod, "_levels_of_chunk", boom)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_levels(ds, workers=0, progress=False)
    assert sorted(p.name for p in ds.path.parent.iterdir()) == ["d.zip"]


def test_stale_levels_are_refused_naming_the_manifest_or_rebuilt(tmp_path, make_dataset):
    make_dataset(tmp_path / "d.zip", count=N, resolution=16, channels=3)
    ds = ImageDataset(tmp_path / "d.zip")
    prepare_levels(ds, workers=0, progress=False)
    make_dataset(tmp_path / "d.zip", count=N + 1, resolution=16, channels=3)  # other images
    ds = ImageDataset(tmp_path / "d.zip")
    with pytest.raises(DatasetError, match=r"d\.zip\.levels/levels\.json: stale.*prepare"):
        open_levels(ds, progress=False)
    store = open_levels(ds, rebuild=True, progress=False)
    assert store.count == N + 1
    assert open_levels(ds, progress=False).count == N + 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_corrupt_levels_are_refused_naming_the_file(data32, damage):
    ds, _ = data32
    store = prepare_levels(ds, workers=0, progress=False)
    target = store.path / "level_0008.u8"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[100] ^= 1
        target.write_bytes(bytes(data))
        expect = r"level_0008\.u8: corrupt"
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-1])
        expect = r"level_0008\.u8: missing or of the wrong size"
    else:
        (store.path / MANIFEST).write_text("{not json")
        expect = r"levels\.json: not a readable levels manifest"
    with pytest.raises(DatasetError, match=expect):
        open_levels(ds, progress=False)
    rebuilt = open_levels(ds, rebuild=True, progress=False)
    assert json.loads((rebuilt.path / MANIFEST).read_text())["levels"][1]["resolution"] == 8
    assert open_levels(ds, progress=False) is not None


@pytest.mark.parametrize("workers", [0, 2])
def test_rank_shards_at_a_phase_resolution_are_the_one_process_stream(data32, workers):
    """Data-parallel ranks reading levels (4, 8 stored) or decoding (16) together give the
    one-process stream at that resolution, across a switch of resolution mid-stream."""
    from progan.data.shard import ShardedImageStream
    from progan.train.distributed import shard_offsets

    ds, _ = data32
    store = open_levels(ds, rebuild=True, progress=False, max_bytes=N * 3 * (16 + 64))
    one = RealImageStream(ds, seed=3, start=5, mirror=True, num_workers=0, resolution=4)
    kw = {"seed": 3, "start": 5, "mirror": True, "num_workers": workers, "levels": store}
    ranks = [
        ShardedImageStream(ds, "cpu", offsets=lambda b, r=r: shard_offsets(b, 2, r, 4), **kw)
        for r in range(2)
    ]
    for b, res in [(8, 4), (8, 4), (8, 8), (12, 16), (12, 16)]:
        for s in (one, *ranks):
            s.set_resolution(res)
        images, _ = one.next(b)
        assert images.shape[-1] == res
        for r, stream in enumerate(ranks):
            rows = torch.from_numpy(shard_offsets(b, 2, r, 4))
            assert torch.equal(stream.next(b)[0], images[rows])
    for s in ranks:
        s.close()


def test_levels_of_a_read_only_dataset_go_to_the_user_cache(data32, tmp_path, monkeypatch):
    ds, _ = data32
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(levels_mod.os, "access", lambda path, mode: False)
    where = levels_path(ds)
    assert where.parent == tmp_path / "cache" / "progan" / "levels"
    assert where.name.startswith("d-") and len(where.name) == len("d-") + 16
    store = open_levels(ds, rebuild=True, progress=False)
    assert store.path == where and not (ds.path.parent / "d.zip.levels").exists()


def test_a_killed_preparations_temporary_folder_is_removed_by_the_next(data32):
    ds, _ = data32
    dead = ds.path.parent / ".d.zip.levels.999999999.abc.tmp"  # no such process
    alive = ds.path.parent / f".d.zip.levels.{os.getppid()}.abc.tmp"  # another preparation
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "level_0004.u8").write_bytes(b"half")
    prepare_levels(ds, workers=0, progress=False)
    assert not dead.exists() and alive.exists()
