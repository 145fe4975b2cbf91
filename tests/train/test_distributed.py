"""Data-parallel training on the CPU with gloo and 2 processes.

* 2 ranks x 8 images per step train exactly what 1 process x 16 images trains (to float
  tolerance): weights, EMA, Adam states, RNG, data position and logged losses;
* only rank 0 writes files;
* a 2-rank run resumes in 1 process (and a 1-process run with 2 ranks under torchrun) and
  ends where one straight run ends, with a gap-free log;
* a failing rank stops the whole job with a clear message instead of hanging.

Helpers: the data shards and the minibatch-stddev groups (no processes needed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from progan.data.dataset import ImageDataset
from progan.data.loader import RealImageStream
from progan.data.shard import ShardedImageStream
from progan.nn.layers import MinibatchStdDev
from progan.train import checkpoint as ckpt
from progan.train.api import configure, train
from progan.train.distributed import groups_stay_exact, launch_local, shard_offsets

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo on POSIX",
)

TICK_IMAGES = 64  # 4 steps of 16
TOL = {"rtol": 1e-4, "atol": 1e-5}


def tiny_config(data, outdir, **kw):
    """As tests/train/test_resume.py: phases of 0.2 kimg, so 6 ticks of 0.064 kimg cross the
    start of the 8x8 fade-in (a new set of active parameters and an Adam reset)."""
    kw.setdefault("data_cache", "cpu")
    kw.setdefault("num_workers", 0)
    # SWD at every snapshot (at 8x8; the 4x4 phase upscaled): 160 images = 3 metric batches
    # of 64, 2 on rank 0, 1 on rank 1
    kw.setdefault("metrics", ["swd"])
    kw.setdefault("metrics_num", 160)
    cfg = configure(data, outdir, "tiny", mirror=True, device="cpu", deterministic=True, **kw)
    cfg.network.fmap_base, cfg.network.fmap_max, cfg.network.latent_size = 64, 16, 8
    cfg.schedule.stabilize_kimg = cfg.schedule.fade_kimg = 0.2
    cfg.schedule.total_kimg = 1.0
    cfg.tick_kimg = TICK_IMAGES / 1000
    cfg.snapshot_ticks = 1
    cfg.keep_checkpoints = 20
    cfg.grid_size = 4
    cfg.validate()
    return cfg


def _rank_worker(data, outdir, ticks, cwd_root, kw=None):
    """One rank (started by launch_local): train from its own empty working directory."""
    cwd = Path(cwd_root) / f"rank{os.environ['RANK']}"
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    train(tiny_config(data, outdir, **(kw or {})), progress=False, max_ticks=ticks)
    return 0


def state_at(run, kimg):
    entry = next(e for e in ckpt.read_manifest(run) if abs(e["kimg"] - kimg) < 1e-9)
    return ckpt.load_training_state(run / entry["state"], expected=entry)


def assert_same_state(a, b, tol):
    assert a["images"] == b["images"] and a["steps"] == b["steps"]
    assert a["data_position"] == b["data_position"]
    assert torch.equal(a["rng"], b["rng"])
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, **tol, msg=f"{key}.{name}")
    for key in ("opt_G", "opt_D"):
        assert a[key]["state"].keys() == b[key]["state"].keys()
        for idx, st in a[key]["state"].items():
            for name, value in st.items():
                torch.testing.assert_close(b[key]["state"][idx][name], value, **tol)


def log(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def files(run):
    return sorted(p.name for p in run.iterdir() if not p.name.startswith("events."))


@pytest.fixture(scope="module")
def straight(shapes8, tmp_path_factory):
    """One process, 6 ticks, a checkpoint at every tick."""
    out = tmp_path_factory.mktemp("straight")
    return train(tiny_config(shapes8, out), progress=False, max_ticks=6)


@pytest.fixture(scope="module")
def two_ranks(shapes8, tmp_path_factory):
    """2 ranks (gloo), 3 ticks; each rank runs in its own empty working directory."""
    root = tmp_path_factory.mktemp("two")
    code = launch_local(2, _rank_worker, shapes8, root / "runs", 3, root / "cwd", grace_s=5)
    assert code == 0
    (run,) = (root / "runs").iterdir()
    return root, run


# --------------------------------------------------------------------------------------------
# helpers, one process


CASES = [(16, 2, 4), (16, 4, 4), (12, 2, 2), (16, 8, 4), (6, 2, 4), (8, 2, 0)]


@pytest.mark.parametrize(("batch", "world", "group"), CASES)
def test_shards_are_disjoint_and_keep_stddev_groups(batch, world, group):
    shards = [shard_offsets(batch, world, r, group) for r in range(world)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(batch))
    x = torch.randn(batch, 3, 4, 4, dtype=torch.float64)
    # Exact whenever the (effective) group size divides the per-rank batch: all cases here
    # but (16, 8, 4), where 2 images per rank cannot hold a group of 4.
    assert groups_stay_exact(batch, world, group) == ((batch, world) != (16, 8))
    if group and groups_stay_exact(batch, world, group):
        whole = MinibatchStdDev(group)(x)
        for offsets in shards:
            rows = torch.from_numpy(offsets)
            torch.testing.assert_close(MinibatchStdDev(group)(x[rows]), whole[rows])


def test_batch_that_does_not_split_names_the_phase(shapes8, tmp_path):
    from progan.errors import ConfigError
    from progan.schedule import Schedule
    from progan.train.distributed import check_batch_sizes

    cfg = tiny_config(shapes8, tmp_path)
    cfg.schedule.minibatch = {8: 12}
    segments = Schedule(cfg.schedule, 8).segments()
    check_batch_sizes(segments, 4, 4)  # 16 and 12 both split over 4
    with pytest.raises(ConfigError, match=r"fade-in phase at 8x8 .*minibatch of 12.* over 8 ranks"):
        check_batch_sizes(segments, 8, 4)


@pytest.mark.parametrize(("cache", "workers"), [("cpu", 0), ("none", 0), ("none", 2)])
def test_rank_shards_together_are_the_one_process_stream(shapes8, cache, workers):
    ds = ImageDataset(shapes8)
    sizes = [16, 16, 12, 12, 12, 16]  # a batch-size change, and one the read-ahead missed
    one = RealImageStream(ds, seed=3, start=40, mirror=True, num_workers=0, cache="none")
    ranks = [
        ShardedImageStream(
            ds,
            "cpu",
            offsets=lambda b, r=r: shard_offsets(b, 2, r, 4),
            batch_size_at=lambda pos: 16 if pos < 72 else 12,
            seed=3,
            start=40,
            mirror=True,
            num_workers=workers,
            cache=cache,
        )
        for r in range(2)
    ]
    for b in sizes:
        images, labels = one.next(b)
        for r, stream in enumerate(ranks):
            part, part_labels = stream.next(b)
            rows = torch.from_numpy(shard_offsets(b, 2, r, 4))
            assert torch.equal(part, images[rows]) and torch.equal(part_labels, labels[rows])
    assert all(s.position == one.position for s in ranks)
    for s in ranks:
        s.close()


# --------------------------------------------------------------------------------------------
# 2 processes


def test_two_ranks_train_what_one_process_trains(straight, two_ranks):
    _, run = two_ranks
    for kimg in (0.064, 0.192):
        assert_same_state(state_at(straight, kimg), state_at(run, kimg), TOL)
    one, two = log(straight)[:3], log(run)
    assert [x["kimg"] for x in two] == [x["kimg"] for x in one]
    for key in ("D/loss", "G/loss", "D/gradient_penalty", "D/real_score"):
        assert [x[key] for x in two] == pytest.approx([x[key] for x in one], rel=1e-4, abs=1e-5)


def test_only_rank_zero_writes_files(straight, two_ranks):
    root, run = two_ranks
    assert [p.name for p in (root / "runs").iterdir()] == [run.name]
    assert list((root / "cwd" / "rank0").iterdir()) == []
    assert list((root / "cwd" / "rank1").iterdir()) == []

    # The same files as one process writes in the same 3 ticks (kimg 0 to 0.192).
    def early(name):
        k = re.search(r"-(\d{6}\.\d{3})\.", name)
        return not k or float(k[1]) <= 0.192

    expected = [n for n in files(straight) if early(n)]
    assert "state-000000.192.pt" in expected and "reals.png" in expected
    assert files(run) == expected
    assert len(list(run.glob("events.*"))) == 1  # one TensorBoard writer
    assert not (run / "run.lock").exists()


def test_run_json_records_the_two_ranks(two_ranks):
    _, run = two_ranks
    (session,) = json.loads((run / "run.json").read_text())["sessions"]
    assert session["world_size"] == 2 and session["resumed_from"] is None
    assert [d["rank"] for d in session["devices"]] == [0, 1]
    assert all(d["device"].startswith("cpu") for d in session["devices"])
    assert session["hostname"] == session["devices"][0]["host"]


def test_two_rank_run_resumes_in_one_process(straight, two_ranks, tmp_path):
    _, run = two_ranks
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    train(resume=copy, progress=False, max_ticks=3)
    assert_same_state(state_at(straight, 0.384), state_at(copy, 0.384), TOL)
    assert [x["kimg"] for x in log(copy)] == [x["kimg"] for x in log(straight)]


def test_one_process_run_resumes_with_two_ranks_under_torchrun(shapes8, straight, tmp_path):
    first = train(tiny_config(shapes8, tmp_path), progress=False, max_ticks=3)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "progan", "train", "--resume", str(first), "--kimg", "0.384", "--no-progress",
        "--dist-timeout", "60",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Run folder:") == 1  # printed by rank 0 only
    one_process, two_ranks = json.loads((first / "run.json").read_text())["sessions"]
    assert (one_process["world_size"], two_ranks["world_size"]) == (1, 2)
    assert two_ranks["resumed_from"].endswith("state-000000.192.pt")
    assert two_ranks["command"][1:3] == ["train", "--resume"]
    assert_same_state(state_at(straight, 0.384), state_at(first, 0.384), TOL)
    assert [x["kimg"] for x in log(first)] == [x["kimg"] for x in log(straight)]
    # The SWD of the snapshots after 0.192 kimg, evaluated by the 2 ranks together, is one
    # process's (every snapshot has it, the 4x4 ones upscaled to 8x8).
    one = {x["kimg"]: x for x in log(straight) if "metric/swd/avg" in x}
    two = {x["kimg"]: x for x in log(first) if "metric/swd/avg" in x}
    assert sorted(two) == sorted(one) == [0.064, 0.128, 0.192, 0.256, 0.32, 0.384]
    for kimg, record in one.items():
        assert two[kimg]["metric/swd/8"] == pytest.approx(record["metric/swd/8"], rel=1e-3)


def test_a_failing_rank_stops_the_job_with_a_clear_message(shapes8, tmp_path):
    cmd = [
        sys.executable, "-m", "progan", "train", "--data", str(shapes8), "--outdir",
        str(tmp_path), "--preset", "tiny", "--kimg", "1", "--tick-kimg", "0.064", "--workers",
        "0", "--device", "cpu", "--gpus", "2", "--dist-timeout", "30", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PROGAN_DEBUG_FAIL": "1:2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "rank 1 of 2 failed: RuntimeError: PROGAN_DEBUG_FAIL" in out
    assert "rank 1 of 2 exited with status 1; the other ranks were stopped" in out
    (run,) = tmp_path.iterdir()
    assert not (run / "run.lock").exists()  # rank 0 released the run folder


def _worker_pids(parent_pid):
    """PIDs of the launcher's worker processes (not multiprocessing's resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent_pid and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return sorted(pids)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_a_signal_to_one_rank_stops_all_ranks_with_a_checkpoint(shapes8, tmp_path):
    import signal
    import time

    cmd = [
        sys.executable, "-m", "progan", "train", "--data", str(shapes8), "--outdir",
        str(tmp_path), "--preset", "tiny", "--kimg", "100", "--tick-kimg", "0.064",
        "--snapshot-ticks", "100", "--workers", "0", "--device", "cpu", "--gpus", "2",
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(list(tmp_path.glob("*/log.jsonl"))) == 0:
            time.sleep(0.1)
        (run,) = tmp_path.iterdir()
        while time.time() < deadline and len(log(run)) < 2:  # mid-run, between snapshots
            time.sleep(0.1)
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGTERM)  # one rank only
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "Received SIGTERM (rank" in out and f"progan train --resume {run}" in out
    entry, state = ckpt.newest_valid_checkpoint(run)
    assert entry["kimg"] == log(run)[-1]["kimg"] > 0.064 and state["images"] == entry["images"]


@pytest.mark.slow
def test_conditional_model_with_streamed_data_matches_one_process(shapes8, tmp_path):
    """Labels drawn for the global batch and sliced; logistic loss; data read by a loader
    worker per rank (no cache)."""
    kw = {"conditional": True, "loss": "logistic", "data_cache": "none", "num_workers": 1}
    one = train(tiny_config(shapes8, tmp_path / "one", **kw), progress=False, max_ticks=4)
    code = launch_local(2, _rank_worker, shapes8, tmp_path / "two", 4, tmp_path / "cwd", kw)
    assert code == 0
    (two,) = (tmp_path / "two").iterdir()
    assert_same_state(state_at(one, 0.256), state_at(two, 0.256), TOL)


def test_several_d_steps_per_g_step_match_one_process(shapes8, tmp_path):
    """n_critic = 2 (Table 1 rows a-c use 5): each D step reads a fresh global minibatch,
    here across the end of the 4x4 phase in the middle of a step (0.2 kimg is not a multiple
    of the 32 images of a step)."""
    kw = {"d_steps": 2}
    one = train(tiny_config(shapes8, tmp_path / "one", **kw), progress=False, max_ticks=4)
    code = launch_local(2, _rank_worker, shapes8, tmp_path / "two", 4, tmp_path / "cwd", kw)
    assert code == 0
    (two,) = (tmp_path / "two").iterdir()
    for kimg in (0.128, 0.256):
        assert_same_state(state_at(one, kimg), state_at(two, kimg), TOL)
