"""Signals and kills on a real training process (``python -m progan train`` in a subprocess).

SIGTERM/SIGINT: the step is finished, a checkpoint written and the process exits 0 telling
how to resume; a second signal leaves at once without damaging any checkpoint. SIGKILL at
random moments, several times: every restart resumes from the newest complete checkpoint
and the finished run's log has neither gaps nor duplicate kimg entries.
"""

import json
import random
import signal
import subprocess
import sys
import time
import warnings

import pytest

from progan.data.create import make_synthetic_dataset
from progan.train import checkpoint as ckpt

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

TICK = 0.064


@pytest.fixture(scope="module")
def shapes8(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "shapes8.zip"
    make_synthetic_dataset(path, count=256, resolution=8, seed=2)
    return path


def start(args, **kw):
    cmd = [sys.executable, "-m", "progan", "train", "--no-progress", "--workers", "0", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def new_run_args(data, outdir, kimg):
    return [
        "--data", str(data), "--outdir", str(outdir), "--preset", "tiny", "--kimg", str(kimg),
        "--phase-kimg", "0.5", "--tick-kimg", str(TICK), "--snapshot-ticks", "2",
    ]  # fmt: skip


def wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def log_lines(run):
    path = run / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def assert_log_without_gaps(run, last_kimg):
    """Ticks strictly increase by at most one tick each (a stop by signal ends a short tick)
    and the log ends at ``last_kimg``."""
    kimg = [r["kimg"] for r in log_lines(run)]
    steps = [round(b - a, 3) for a, b in zip([0.0, *kimg], kimg, strict=False)]
    assert all(0 < d <= TICK for d in steps), f"gap or duplicate in the log: {kimg}"
    assert kimg[-1] == last_kimg


def test_sigterm_checkpoints_and_exits_cleanly_then_resumes(shapes8, tmp_path):
    proc = start(new_run_args(shapes8, tmp_path, kimg=100))
    assert wait_for(lambda: len(list(tmp_path.glob("*/log.jsonl"))) == 1), "no training"
    run = next(tmp_path.iterdir())
    assert wait_for(lambda: len(log_lines(run)) >= 3)  # mid-run, between snapshots
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Received SIGTERM" in out and f"progan train --resume {run}" in out
    entry, state = ckpt.newest_valid_checkpoint(run)
    logged = log_lines(run)
    # The checkpoint is at the stop position, which is the log's last line.
    assert entry["kimg"] == logged[-1]["kimg"] and state["images"] == entry["images"]
    assert not (run / "run.lock").exists()
    # Resume to a close end: the log continues without a gap.
    end = round(entry["kimg"] + 2 * TICK, 3)
    proc = start(["--resume", str(run), "--kimg", str(end)])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert_log_without_gaps(run, end)


def test_second_signal_exits_at_once_without_damage(shapes8, tmp_path):
    proc = start(new_run_args(shapes8, tmp_path, kimg=100))
    assert wait_for(lambda: len(list(tmp_path.glob("*/log.jsonl"))) == 1)
    run = next(tmp_path.iterdir())
    assert wait_for(lambda: len(log_lines(run)) >= 2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damaged checkpoint is skipped
        entry, state = ckpt.newest_valid_checkpoint(run)
    assert state["images"] == entry["images"] > 0
    assert not list(run.glob(".*.tmp"))


def test_sigkill_at_random_moments_then_finish(shapes8, tmp_path):
    rng = random.Random(1234)
    proc = start(new_run_args(shapes8, tmp_path, kimg=1000))  # far longer than the test
    assert wait_for(lambda: len(list(tmp_path.glob("*/log.jsonl"))) == 1)
    run = next(tmp_path.iterdir())
    for _ in range(3):
        # Kill at a random moment after the run has made some progress (mid-step,
        # mid-checkpoint or mid-log-line).
        before = len(log_lines(run))
        assert wait_for(lambda before=before: len(log_lines(run)) >= before + 1, 60)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert (run / "run.lock").exists()  # left behind by the killed process
        proc = start(["--resume", str(run)])
    proc.kill()
    proc.communicate()
    # Finish: resume (after the fourth kill) to four ticks past the newest checkpoint.
    entry, _ = ckpt.newest_valid_checkpoint(run)
    total = round(entry["kimg"] + 4 * TICK, 3)
    proc = start(["--resume", str(run), "--kimg", str(total)])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    _, state = ckpt.newest_valid_checkpoint(run)
    assert state["images"] == round(total * 1000)
    # no signal stopped a tick short, so every tick is whole: no gaps, no duplicates
    assert [r["kimg"] for r in log_lines(run)] == [
        round(TICK * i, 3) for i in range(1, round(total / TICK) + 1)
    ]
