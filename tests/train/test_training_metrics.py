"""Metrics at every snapshot during training: logged, and the best snapshot marked."""

import json

import pytest
import torch
from micro import make_micro_config

from progan.errors import CheckpointError
from progan.generate import load_generator
from progan.metrics.api import evaluate
from progan.metrics.sources import CallableSource
from progan.train import checkpoint as ckpt
from progan.train.api import train
from progan.train.trainer import Trainer


def small_config(data, outdir, **kw):
    return make_micro_config(
        data, outdir, phase_kimg=0.064, total_kimg=1.0, tick_kimg=0.064, snapshot_ticks=2,
        metrics=["swd"], metrics_num=64, **kw,
    )  # fmt: skip


def test_metrics_logged_at_snapshots_and_best_marked(shapes16, tmp_path):
    cfg = small_config(shapes16, tmp_path)
    run = train(cfg, progress=False, max_ticks=14)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    with_metrics = [r for r in log if "metric/swd/avg" in r]
    # Every second tick is a snapshot tick and carries SWD per level and the average.
    assert [r["tick"] for r in with_metrics] == list(range(2, 15, 2))
    for r in with_metrics:
        # levels are named by resolution: always those of the full 16x16 resolution (images of
        # the 4x4 and 8x8 phases are upscaled to it, as in the official code)
        levels = {k for k in r if k.startswith("metric/swd/")}
        assert levels == {"metric/swd/16", "metric/swd/avg"} and "metric/seconds" in r
        assert r["metric/swd/avg"] > 0
        assert (run / ckpt.snapshot_name(r["kimg"])).is_file()

    # best.json names the fully grown snapshot (by its stored depth and fade) with the lowest
    # SWD; the log line's alpha is that of the tick's last step, the snapshot's that after it.
    def fully_grown(r):
        snap = ckpt.load_generator_snapshot(run / ckpt.snapshot_name(r["kimg"]))
        return snap.depth == 2 and snap.alpha == 1.0

    grown = [r for r in with_metrics if fully_grown(r)]
    assert len(grown) >= 2
    best = ckpt.read_best(run)
    winner = min(grown, key=lambda r: r["metric/swd/avg"])
    assert best["metric"] == "metric/swd/avg"
    assert best["value"] == pytest.approx(winner["metric/swd/avg"])
    assert best["snapshot"] == ckpt.snapshot_name(winner["kimg"])
    G = load_generator(run, best=True)
    assert G.default_depth == 2 and G.default_alpha == 1.0


def test_logged_value_is_the_metric_of_the_snapshot(shapes16, tmp_path):
    """The logged SWD equals an independent evaluation of the saved EMA snapshot with the
    same latents (the metric is computed from the snapshot, not from the raw G); at 8x8, before
    the 16x16 network is grown, of its images upscaled by nearest neighbour to 16x16."""
    cfg = small_config(shapes16, tmp_path)
    run = train(cfg, progress=False, max_ticks=2)
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    trainer = Trainer(cfg, run, progress=False)
    _, state = ckpt.newest_valid_checkpoint(run)
    trainer.load_state_dict(state)
    G = load_generator(run / ckpt.snapshot_name(record["kimg"]))
    st = trainer.schedule.at(trainer.images)
    assert (st.resolution, st.alpha) == (8, 1.0)  # not yet grown to 16x16
    pixel = torch.arange(16) // 2  # nearest neighbour: pixel (y, x) of 16x16 is (y//2, x//2)

    def fakes(seeds):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + seeds[0])
        z = torch.randn(len(seeds), cfg.network.latent_size, generator=gen)
        x = (G(z, None, st.depth, st.alpha) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        return x[:, :, pixel][:, :, :, pixel]

    ref = evaluate(
        "swd", CallableSource(fakes, 16, 3), shapes16, num=64, device="cpu", seed=cfg.seed,
    )  # fmt: skip
    assert record["metric/swd/16"] == pytest.approx(ref["swd"]["16"], rel=1e-4)
    assert record["metric/swd/avg"] == pytest.approx(ref["swd"]["avg"], rel=1e-4)


def test_best_requires_metrics(shapes16, tmp_path):
    cfg = small_config(shapes16, tmp_path)
    cfg.metrics = []
    run = train(cfg, progress=False, max_ticks=1)
    with pytest.raises(CheckpointError, match=r"best\.json"):
        load_generator(run, best=True)


def test_max_seconds_stops_with_a_checkpoint(shapes16, tmp_path):
    cfg = small_config(shapes16, tmp_path)
    cfg.metrics = []
    run = train(cfg, progress=False, max_seconds=0.0)
    entry, _ = ckpt.newest_valid_checkpoint(run)
    assert entry["images"] == 64  # stopped at the first tick and checkpointed there


def test_metrics_of_every_phase_are_measured_at_the_full_resolution(shapes16, tmp_path):
    """SWD needs 8x8 images and MS-SSIM 16x16: measured at the target's 16x16 (the smaller
    phases' images upscaled), both are there from the first, 4x4 snapshot on."""
    cfg = make_micro_config(
        shapes16, tmp_path, phase_kimg=0.032, total_kimg=1.0, tick_kimg=0.032,
        metrics=["swd", "ms-ssim"], metrics_num=32,
    )  # fmt: skip
    run = train(cfg, progress=False, max_ticks=4)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    seen = {}
    for r in log:
        res = 4 * 2 ** ckpt.load_generator_snapshot(run / ckpt.snapshot_name(r["kimg"])).depth
        seen[res] = {k for k in r if k.startswith("metric/") and k != "metric/seconds"}
    full = {"metric/swd/16", "metric/swd/avg", "metric/ms-ssim"}
    assert seen == {4: full, 8: full, 16: full}


def test_snapshot_metrics_use_the_configured_fid_preprocess(shapes16, tmp_path, monkeypatch):
    import progan.metrics.api as metrics_api

    calls = []

    def spy(names, source, real, **kw):
        calls.append((source.resolution, kw["fid_preprocess"]))
        return {"swd": {"16": 1.0, "avg": 1.0}, "seconds": 0.0}

    monkeypatch.setattr(metrics_api, "evaluate", spy)
    cfg = small_config(shapes16, tmp_path, fid_preprocess="pytorch-fid")
    trainer = Trainer(cfg, tmp_path, progress=False)
    assert trainer.evaluate_metrics() == {
        "metric/swd/16": 1.0, "metric/swd/avg": 1.0, "metric/seconds": 0.0,
    }  # fmt: skip
    assert calls == [(16, "pytorch-fid")]  # at 4x4, measured at 16x16


def test_missing_inception_weights_stop_the_run_before_training(shapes16, tmp_path, monkeypatch):
    from progan.errors import ProganError

    monkeypatch.setenv("PROGAN_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    cfg = small_config(shapes16, tmp_path / "runs")
    cfg.metrics = ["swd", "fid"]
    with pytest.raises(ProganError, match=r"Inception weights not found: .*absent\.pth"):
        train(cfg, progress=False, max_ticks=2)
    (run,) = (tmp_path / "runs").iterdir()
    assert not list(run.glob("state-*.pt"))  # nothing was trained
