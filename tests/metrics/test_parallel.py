"""Metrics evaluated by several ranks: the blocks, the merges, and 2 gloo processes.

* ``shard_range`` deals a pass's batches out in contiguous blocks that cover it once;
* merged accumulators equal one accumulator over the whole set (FID sums about a common
  centre, Inception Score split sums, SWD patches keyed by batch position);
* ``evaluate`` on 2 ranks (gloo, CPU) gives every rank the one-process values of SWD,
  MS-SSIM, FID and IS, and a rank that fails stops the others with a message naming it.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.errors import ConfigError
from progan.metrics import fid as fid_mod
from progan.metrics import swd as swd_mod
from progan.metrics.api import evaluate
from progan.metrics.inception_score import inception_score, score_from_split_sums, split_sums
from progan.metrics.parallel import SingleProcess, on_every_rank, shard_range
from progan.metrics.sources import ArraySource, CallableSource


@pytest.mark.parametrize(
    ("total", "batch", "world"), [(44, 8, 2), (64, 64, 2), (10, 4, 3), (100, 7, 4), (3, 8, 4)]
)
def test_blocks_cover_the_pass_once_in_whole_batches(total, batch, world):
    blocks = [shard_range(total, batch, r, world) for r in range(world)]
    assert blocks[0][0] == 0 and blocks[-1][1] == total
    for (_, hi), (next_lo, _) in itertools.pairwise(blocks):
        assert hi == next_lo  # contiguous, in rank order
    assert all(lo % batch == 0 for lo, hi in blocks if hi > lo)  # whole batches
    assert blocks[0][1] > 0  # rank 0 always has images
    sizes = [-(-(hi - lo) // batch) for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("kind", ["array", "dataset", "callable"])
def test_sources_read_a_block_as_the_whole_pass_does(kind, tmp_path):
    from progan.data.create import make_synthetic_dataset
    from progan.metrics.sources import DatasetSource

    if kind == "dataset":
        make_synthetic_dataset(tmp_path / "d.zip", count=20, resolution=8, seed=0)
        source = DatasetSource(tmp_path / "d.zip", seed=5)
    elif kind == "array":
        source = ArraySource(torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8))
    else:
        source = CallableSource(lambda seeds: _fake_images(seeds)[..., :8, :8], 8, 3)
    whole = list(source.batches(18, 4))
    assert [b.shape[0] for b in whole] == [4, 4, 4, 4, 2]
    for start in (0, 8, 16):
        block = list(source.batches(18, 4, start=start))
        assert len(block) == len(whole) - start // 4
        assert all(torch.equal(a, b) for a, b in zip(block, whole[start // 4 :], strict=True))
    assert list(source.batches(18, 4, start=18)) == []  # a rank left without images


def _blocks(n, batch, world):
    return [shard_range(n, batch, r, world) for r in range(world)]


def test_inception_score_split_sums_add_up_across_blocks():
    logits = torch.randn(44, 1008, generator=torch.Generator().manual_seed(0)) * 4
    whole = inception_score(logits, 10)
    # Blocks whose boundaries fall inside a split (at 24: split 5 is rows 22..25).
    sums = sum(split_sums(logits[lo:hi], 10, 44, lo) for lo, hi in _blocks(44, 8, 2))
    assert score_from_split_sums(sums) == pytest.approx(whole, rel=1e-12)
    # ... and the reference formula, written out independently
    p = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for s in range(10):
        part = p[s * 44 // 10 : (s + 1) * 44 // 10]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    assert whole == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)


def test_fid_sums_about_a_common_centre_merge_exactly():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(90, 16, generator=g, dtype=torch.float64) * 3 + 100
    one = fid_mod.FeatureStats()
    for i in range(0, 90, 20):
        one.feed(feats[i : i + 20])
    parts = []
    for lo, hi in ((0, 40), (40, 90)):
        st = fid_mod.FeatureStats()
        st.feed(feats[lo:hi])
        parts.append(st)
    center = parts[0].shift
    total = sum(p.sums_about(center)[0] for p in parts)
    outer = sum(p.sums_about(center)[1] for p in parts)
    merged = fid_mod.FeatureStats()
    merged.load_sums(90, center, total, outer)
    np.testing.assert_allclose(merged.mean(), feats.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(merged.cov(), np.cov(feats.numpy(), rowvar=False), rtol=1e-9)
    np.testing.assert_allclose(merged.cov(), one.cov(), rtol=1e-9)


def test_swd_patches_keyed_by_batch_position_do_not_depend_on_the_split():
    imgs = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8)
    one = swd_mod.PatchDescriptors(32, 3, seed=4)
    for lo in range(0, 24, 8):
        one.feed(imgs[lo : lo + 8], lo)
    a, b = swd_mod.PatchDescriptors(32, 3, seed=4), swd_mod.PatchDescriptors(32, 3, seed=4)
    a.feed(imgs[0:8], 0)
    a.feed(imgs[8:16], 8)
    b.feed(imgs[16:24], 16)
    for i in range(len(one.resolutions)):
        assert torch.equal(one.take_level(i), torch.cat([a.take_level(i), b.take_level(i)]))


def test_a_single_process_failure_is_raised_unchanged():
    def broken():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        on_every_rank(SingleProcess(), broken, "testing")


def test_odd_batch_cannot_split_ms_ssim_pairs_over_ranks():
    class TwoRanks(SingleProcess):
        world_size = 2

    imgs = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=r"MS-SSIM over 2 ranks needs an even batch size"):
        evaluate("ms-ssim", imgs, batch_size=7, device="cpu", comm=TwoRanks())


# --------------------------------------------------------------------------------------------
# 2 processes (gloo)

NUM = 44  # 6 batches of 8 (the last of 4): rank 0 takes images 0..23, rank 1 24..43
OPTIONS = {
    "num": NUM, "batch_size": 8, "seed": 3, "device": "cpu", "random_inception": True,
    "use_cache": False,
}  # fmt: skip


def _fake_images(seeds, fail_on=None):
    """Smooth random 32x32 images, each a function of its seed only."""
    if fail_on is not None and fail_on in seeds:
        raise ValueError(f"broken generator at image {fail_on}")
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(1000 + s)
        x = torch.rand(1, 3, 8, 8, generator=g) * 255
        out.append(torch.nn.functional.interpolate(x, size=32, mode="bilinear"))
    return torch.cat(out).round().to(torch.uint8)


def _real_images():
    return torch.from_numpy(_fake_images(list(range(500, 548))).numpy()[:, ::-1].copy())


def _rank_worker(out_dir):
    """One rank: the four metrics, then a run where rank 1's generator fails."""
    import functools

    from progan.train.distributed import init_from_env

    signal.alarm(240)  # a hang kills this rank (and so fails the test) instead of stalling it
    comm = init_from_env(60)
    out = Path(out_dir) / f"rank{comm.rank}.json"
    record = {}
    try:
        fake = CallableSource(_fake_images, 32, 3)
        record["values"] = evaluate("swd,ms-ssim,fid,is", fake, _real_images(), **OPTIONS,
                                    comm=comm)  # fmt: skip
        broken = CallableSource(functools.partial(_fake_images, fail_on=30), 32, 3)
        try:
            evaluate("ms-ssim,is", broken, **OPTIONS, comm=comm)
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        out.write_text(json.dumps(record))
        comm.close()
    return 0


@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo on POSIX",
)
def test_two_ranks_compute_what_one_process_computes(tmp_path):
    from progan.train.distributed import launch_local

    assert launch_local(2, _rank_worker, str(tmp_path), grace_s=5) == 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    one = evaluate("swd,ms-ssim,fid,is", CallableSource(_fake_images, 32, 3),
                   ArraySource(_real_images()), **OPTIONS)  # fmt: skip
    for rank in ranks:
        got = rank["values"]
        assert got["num_images"] == one["num_images"] == {
            "swd": NUM, "ms-ssim": NUM, "fid": NUM, "is": NUM,
        }  # fmt: skip
        assert got["swd"] == pytest.approx(one["swd"], rel=1e-6)
        assert got["ms-ssim"] == pytest.approx(one["ms-ssim"], rel=1e-6)
        assert got["fid"] == pytest.approx(one["fid"], rel=1e-6)
        assert got["is"] == pytest.approx(one["is"], rel=1e-6)
        assert got["device"] == "2 x cpu"
    # Image 30 is rank 1's: it raises its own error, rank 0 names rank 1 (no hang).
    assert ranks[1]["error"] == "ValueError: broken generator at image 30"
    assert ranks[0]["error"].startswith(
        "RankFailed: rank 1 of 2 failed while reading generator for the metrics: "
        "ValueError: broken generator at image 30"
    )


@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo on POSIX",
)
def test_metrics_command_under_torchrun_matches_one_process(tmp_path):
    import subprocess

    from progan.data.create import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "a.zip", count=80, resolution=16, seed=1)
    make_synthetic_dataset(tmp_path / "b.zip", count=80, resolution=16, seed=2)
    args = [
        "-m", "progan", "metrics", "--data", str(tmp_path / "a.zip"), "--against",
        str(tmp_path / "b.zip"), "--metrics", "swd,ms-ssim", "--num-images", "72", "--batch-size",
        "16", "--device", "cpu", "--no-cache", "--quiet", "--json",
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = subprocess.run(
        [*launcher, "--nproc_per_node=2", *args, str(tmp_path / "two.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("ms-ssim") == 1  # rank 0 alone prints the table
    one = subprocess.run([sys.executable, *args, str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stdout + one.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert b["num_images"] == a["num_images"] == {"swd": 72, "ms-ssim": 72}
    assert b["swd"] == pytest.approx(a["swd"], rel=1e-6)
    assert b["ms-ssim"] == pytest.approx(a["ms-ssim"], rel=1e-6)
    assert (a["device"], b["device"]) == ("cpu", "2 x cpu")
