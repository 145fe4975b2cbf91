"""Exact resume: N steps + checkpoint + resume + N steps == 2N steps in one go (CPU)."""

import pytest
import torch
from micro import make_micro_config

from progan.train import checkpoint as ckpt
from progan.train.api import train


def tiny_config(data, outdir, **kw):
    # Phases of 0.2 kimg: the run crosses a fade-in start, its end (optimizer resets) and
    # continues at 8x8 within 12 ticks of 0.064 kimg (4 steps of 16).
    return make_micro_config(
        data, outdir, phase_kimg=0.2, total_kimg=1.0, tick_kimg=0.064, keep_checkpoints=2,
        mirror=True, **kw,
    )  # fmt: skip


def final_weights(run_dir):
    entry, state = ckpt.newest_valid_checkpoint(run_dir)
    return entry, state


def test_resume_gives_the_same_weights_as_one_run(shapes8, tmp_path):
    cfg = tiny_config(shapes8, tmp_path / "a")
    straight = train(cfg, progress=False, max_ticks=8)
    cfg = tiny_config(shapes8, tmp_path / "b")
    split = train(cfg, progress=False, max_ticks=3)
    _, half = final_weights(split)
    assert half["images"] == 3 * 64
    train(resume=split, progress=False, max_ticks=5)

    e1, s1 = final_weights(straight)
    e2, s2 = final_weights(split)
    assert e1["images"] == e2["images"] == 8 * 64
    for key in ("G", "D", "G_ema"):
        for name, tensor in s1[key].items():
            torch.testing.assert_close(s2[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    for key in ("opt_G", "opt_D"):
        for idx, state in s1[key]["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(s2[key]["state"][idx][name], value, rtol=0, atol=0)
    assert s1["data_position"] == s2["data_position"]
    assert torch.equal(s1["rng"], s2["rng"])
    # The logs agree line for line on kimg and losses.
    import json

    lines1 = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    lines2 = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert [x["kimg"] for x in lines1] == [x["kimg"] for x in lines2]
    assert [x["G/loss"] for x in lines1] == pytest.approx([x["G/loss"] for x in lines2], abs=0)


def test_training_state_keeps_only_recent_checkpoints(shapes8, tmp_path):
    cfg = tiny_config(shapes8, tmp_path)
    run = train(cfg, progress=False, max_ticks=4)
    states = sorted(p.name for p in run.glob("state-*.pt"))
    assert len(states) == 2  # keep_checkpoints
    assert [e["state"] for e in ckpt.read_manifest(run)] == states
    # All generator snapshots are kept (initial one + one per tick).
    assert len(list(run.glob("snapshot-*.safetensors"))) == 5


def test_log_line_lost_after_its_checkpoint_comes_back_on_resume(shapes8, tmp_path):
    """A process killed after writing a tick's checkpoint but before appending the tick's log
    line: the resumed run restores that line from the checkpoint, so the log has no gap."""
    import json

    run = train(tiny_config(shapes8, tmp_path), progress=False, max_ticks=2)
    log = run / "log.jsonl"
    lines = log.read_text().splitlines()
    lost = json.loads(lines[-1])
    log.write_text(lines[0] + "\n")  # the kill: checkpoint 0.128 on disk, its log line not
    train(resume=run, progress=False, max_ticks=1)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["kimg"] for r in records] == [0.064, 0.128, 0.192]
    restored = records[1]
    assert restored == {k: v for k, v in lost.items() if k != "maintenance_sec"}
