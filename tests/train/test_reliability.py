"""Faults a long run meets: damaged or hostile checkpoints, full disks, NaNs, a second
process, a config that does not match. Signals and kills are in test_signals.py."""

import errno
import itertools
import json
import os
import pickle
import socket
import subprocess
import sys
import warnings

import pytest
import torch
from micro import make_micro_config

from progan.errors import CheckpointError, ProganError, TrainingDiverged
from progan.fileio import atomic_write
from progan.train import checkpoint as ckpt
from progan.train.api import train
from progan.train.run_dir import RunLock
from progan.train.trainer import Trainer


def tiny_config(data, outdir, **kw):
    return make_micro_config(
        data, outdir, phase_kimg=0.1, total_kimg=0.5, tick_kimg=0.032, loss_log_every=1, **kw
    )


def log_kimg(run):
    return [json.loads(line)["kimg"] for line in (run / "log.jsonl").read_text().splitlines()]


def assert_uniform_log(run, step=0.032):
    kimg = log_kimg(run)
    assert kimg == sorted(set(kimg)), "duplicate or unordered kimg entries"
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(kimg)]
    assert set(gaps) <= {step}, f"gaps in the log: {gaps}"


# --------------------------------------------------------------------------------------------
# checkpoints


class _Payload:
    """Unpickling this runs ``os.system`` -- what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_refused_and_previous_checkpoint_used(shapes8, tmp_path):
    run = train(tiny_config(shapes8, tmp_path), progress=False, max_ticks=2)
    good_entry, _ = ckpt.newest_valid_checkpoint(run)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"format": "progan-training-state", "x": _Payload(marker)}, protocol=2)
    with pytest.raises(CheckpointError, match=r"refused.*nothing in it was executed"):
        path = tmp_path / "evil.pt"
        path.write_bytes(evil)
        ckpt.load_training_state(path)
    # Planted as the newest checkpoint with a matching manifest entry (size and hash), it is
    # still refused and resume falls back to the previous one.
    import hashlib

    (run / "state-000009.000.pt").write_bytes(evil)
    manifest = json.loads((run / "checkpoints.json").read_text())
    manifest["checkpoints"].append(
        dict(good_entry, kimg=9.0, state="state-000009.000.pt", state_bytes=len(evil),
             state_sha256=hashlib.sha256(evil).hexdigest())
    )  # fmt: skip
    (run / "checkpoints.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="skipping damaged checkpoint.*refused"):
        entry, state = ckpt.newest_valid_checkpoint(run)
    assert entry == good_entry and state["images"] == good_entry["images"]
    assert not marker.exists()


def test_truncated_checkpoint_refused_previous_used_and_run_finishes(shapes8, tmp_path):
    cfg = tiny_config(shapes8, tmp_path)
    run = train(cfg, progress=False, max_ticks=5)
    entries = ckpt.read_manifest(run)
    assert len(entries) == 3  # keep_checkpoints
    assert sorted(p.name for p in run.glob("state-*.pt")) == [e["state"] for e in entries]
    newest = run / entries[-1]["state"]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="truncated or altered"):
        entry, _ = ckpt.newest_valid_checkpoint(run)
    assert entry == entries[-2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(resume=run, progress=False)
    _final, state = ckpt.newest_valid_checkpoint(run)
    assert state["images"] >= cfg.schedule.total_kimg * 1000
    assert_uniform_log(run)  # the lost tick was trained again, logged once


def test_zero_byte_and_garbage_snapshots_are_clear_errors(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "text.safetensors").write_text("not a checkpoint")
    for name in ("empty.safetensors", "text.safetensors"):
        with pytest.raises(CheckpointError, match=name):
            ckpt.load_generator_snapshot(tmp_path / name)


def test_checkpoint_from_another_configuration_names_the_mismatch(shapes8, tmp_path):
    run = train(tiny_config(shapes8, tmp_path / "a"), progress=False, max_ticks=1)
    _, state = ckpt.newest_valid_checkpoint(run)
    other = tiny_config(shapes8, tmp_path / "b")
    other.network.fmap_max = 32
    trainer = Trainer(other, tmp_path / "b", progress=False)
    with pytest.raises(CheckpointError, match=r"fmap_max: checkpoint 16 vs config 32"):
        trainer.load_state_dict(state, source="state.pt")


# --------------------------------------------------------------------------------------------
# disk faults


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    shapes8, tmp_path, monkeypatch
):
    cfg = tiny_config(shapes8, tmp_path)
    run = train(cfg, progress=False, max_ticks=2)
    before = ckpt.read_manifest(run)
    real_write = ckpt.atomic_write_bytes

    def write_then_fail(path, data):
        if "state-" not in str(path):
            return real_write(path, data)

        def half(f):  # half the bytes reach the temp file, then the disk is full
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        return atomic_write(path, half)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", write_then_fail)
    with pytest.raises(CheckpointError, match=r"No space left on device.*previous checkpoint"):
        train(resume=run, progress=False, max_ticks=1)
    monkeypatch.undo()
    assert ckpt.read_manifest(run) == before  # manifest untouched
    assert not list(run.glob(".*.tmp")), "temporary file left behind"
    entry, _state = ckpt.newest_valid_checkpoint(run)
    assert entry == before[-1]
    assert not (run / "run.lock").exists()  # the lock is released on the error
    train(resume=run, progress=False, max_ticks=1)  # and the run continues
    assert ckpt.read_manifest(run)[-1]["images"] == before[-1]["images"] + 32


# --------------------------------------------------------------------------------------------
# one run per folder


def test_second_process_refused_and_stale_lock_cleared(shapes8, tmp_path):
    run = train(tiny_config(shapes8, tmp_path), progress=False, max_ticks=1)
    lock = run / "run.lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{socket.gethostname()} {live.pid}\n")
        with pytest.raises(ProganError, match=f"another process.*{live.pid}"):
            train(resume=run, progress=False, max_ticks=1)
        assert lock.read_text().split()[1] == str(live.pid)  # not stolen
    finally:
        live.kill()
        live.wait()
    # The holder is dead now: its lock is stale, taken over, and released at the end.
    train(resume=run, progress=False, max_ticks=1)
    assert not lock.exists()
    assert len(ckpt.read_manifest(run)) == 3


def test_lock_held_by_a_live_process_and_garbled_lock(tmp_path):
    # The parent process (pytest's launcher) is certainly alive: its lock is respected.
    (tmp_path / "run.lock").write_text(f"{socket.gethostname()} {os.getppid()}\n")
    with pytest.raises(ProganError, match="another process"):
        RunLock(tmp_path).acquire()
    # A lock torn by a crash while it was written is stale.
    (tmp_path / "run.lock").write_text("")
    with RunLock(tmp_path):
        assert (tmp_path / "run.lock").read_text().split()[1] == str(os.getpid())
    assert not (tmp_path / "run.lock").exists()


# --------------------------------------------------------------------------------------------
# numerical guard


def _poison_after(monkeypatch, steps, times):
    """Make G's weights NaN after the ``steps``-th training step, ``times`` times."""
    original = Trainer.train_step
    state = {"count": 0, "left": times}

    def step(self, st):
        out = original(self, st)
        state["count"] += 1
        if state["count"] >= steps and state["left"] > 0:
            state["left"] -= 1
            with torch.no_grad():
                next(self.G.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    return state


def test_nan_detected_restored_and_retried(shapes8, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(shapes8, tmp_path)
    _poison_after(monkeypatch, steps=5, times=1)
    run = train(cfg, progress=False, max_ticks=6)
    captured = capsys.readouterr()
    assert "restoring the checkpoint at 0.064 kimg" in captured.out + captured.err
    _entry, state = ckpt.newest_valid_checkpoint(run)
    assert state["images"] == 6 * 32
    for key in ("G", "D", "G_ema"):
        assert all(torch.isfinite(t).all() for t in state[key].values())
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(
        all(v == v for v in r.values() if isinstance(v, float)) for r in records
    )  # no NaN logged
    assert_uniform_log(run)


def test_persistent_nan_stops_with_checkpoints_intact(shapes8, tmp_path, monkeypatch):
    cfg = tiny_config(shapes8, tmp_path)
    _poison_after(monkeypatch, steps=3, times=100)
    with pytest.raises(TrainingDiverged, match=r"three times.*last good checkpoint"):
        train(cfg, progress=False, max_ticks=6)
    run = next(tmp_path.iterdir())
    _entry, state = ckpt.newest_valid_checkpoint(run)
    for key in ("G", "D", "G_ema"):
        assert all(torch.isfinite(t).all() for t in state[key].values())
    assert not (run / "run.lock").exists()


def test_snapshot_refused_when_weights_are_not_finite(shapes8, tmp_path):
    cfg = tiny_config(shapes8, tmp_path)
    trainer = Trainer(cfg, tmp_path, progress=False)
    with torch.no_grad():
        next(trainer.G_ema.parameters())[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="not finite"):
        trainer.write_snapshot(None)
    assert not list(tmp_path.glob("state-*"))


def test_signal_during_tick_bookkeeping_still_checkpoints(shapes8, tmp_path, monkeypatch):
    """A SIGTERM that lands after the loop last looked at the stop flag (here: while a
    non-snapshot tick's log line is written) still ends with a checkpoint at the stop."""
    import signal

    from progan.train.stats import StatsWriter

    cfg = tiny_config(shapes8, tmp_path)
    cfg.snapshot_ticks = 2
    real_write = StatsWriter.write

    def write(self, record):
        real_write(self, record)
        if record["tick"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(StatsWriter, "write", write)
    run = train(cfg, progress=False)
    entry, _ = ckpt.newest_valid_checkpoint(run)
    assert log_kimg(run)[-1] == entry["kimg"] == 0.096  # tick 3, not the snapshot of tick 2
    assert_uniform_log(run)
