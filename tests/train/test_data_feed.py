"""The trainer's stream with dataset levels: reals at each phase's resolution, exact resume
across a phase change, and the data-bound warning."""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from micro import make_micro_config

from progan.data.dataset import ImageDataset
from progan.data.levels import box_levels, levels_path
from progan.data.loader import RealImageStream
from progan.train import checkpoint as ckpt
from progan.train.api import train
from progan.train.trainer import Trainer


def streamed_config(data, outdir, **kw):
    """16x16 data not cached (so served per phase from the levels): phases of 0.2 kimg, so
    8 ticks of 0.064 kimg cross 4x4, the fade to 8x8 and into 8x8."""
    kw.setdefault("data_cache", "none")
    return make_micro_config(
        data, outdir, phase_kimg=0.2, total_kimg=1.0, tick_kimg=0.064, keep_checkpoints=2,
        mirror=True, **kw,
    )  # fmt: skip


def test_uncached_training_reads_each_phase_from_the_levels(shapes16, tmp_path):
    cfg = streamed_config(shapes16, tmp_path / "run")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer._open_stream_at(0)
    assert trainer.stream.resolution == 4 and trainer.stream.cache == "none"
    assert trainer.levels is not None and trainer.levels.resolutions == [4, 8]
    assert (levels_path(trainer.dataset) / "levels.json").is_file()
    images, _ = trainer.stream.next(6)
    # The same images as the full-size stream, box-reduced.
    ds = ImageDataset(shapes16)
    full = RealImageStream(ds, seed=cfg.seed, mirror=True, num_workers=0).next(6)[0].numpy()
    np.testing.assert_array_equal(images.numpy(), np.stack([box_levels(x, [4])[4] for x in full]))
    st = trainer.schedule.at(650)  # the fade to 16x16: the dataset's own PNGs
    trainer._enter_phase(st)
    assert st.resolution == trainer.stream.resolution == 16 and trainer.stream.position == 6
    trainer.stream.close()


def test_resume_across_a_phase_change_with_levels_is_exact(shapes16, tmp_path):
    straight = train(streamed_config(shapes16, tmp_path / "a"), progress=False, max_ticks=8)
    split = train(streamed_config(shapes16, tmp_path / "b"), progress=False, max_ticks=3)
    assert ckpt.newest_valid_checkpoint(split)[1]["images"] == 192  # before 4x4 ends at 200
    train(resume=split, progress=False, max_ticks=5)
    (e1, s1), (e2, s2) = ckpt.newest_valid_checkpoint(straight), ckpt.newest_valid_checkpoint(split)
    assert e1["images"] == e2["images"] == 512
    for key in ("G", "D", "G_ema"):
        for name, tensor in s1[key].items():
            torch.testing.assert_close(s2[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    assert s1["data_position"] == s2["data_position"] == 512
    log = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert {r["resolution"] for r in log} == {4, 8} and all("data_wait_share" in r for r in log)


def test_a_phase_waiting_for_data_is_reported(shapes16, tmp_path, monkeypatch, capsys):
    """A stream that sleeps 150 ms per batch (a step here takes a few ms): the log's
    data_wait_share is large and one warning per phase names the phase."""
    real_take = RealImageStream._take_streamed

    def slow_take(self, batch_size):  # timed by next() as a wait for data
        time.sleep(0.15)
        return real_take(self, batch_size)

    cfg = streamed_config(shapes16, tmp_path / "slow")
    monkeypatch.setattr(RealImageStream, "_take_streamed", slow_take)
    run = train(cfg, progress=False, max_ticks=4)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["data_wait_share"] > 0.3 for r in log)
    out = capsys.readouterr().out
    assert out.count("is data-bound") == 2  # 4x4 and the fade to 8x8, each once
    assert "phase stable-4 is data-bound" in out

    monkeypatch.setattr(RealImageStream, "_take_streamed", real_take)
    fast_cfg = streamed_config(shapes16, tmp_path / "fast", data_cache="cpu")
    fast = train(fast_cfg, progress=False, max_ticks=2)
    log = [json.loads(x) for x in (fast / "log.jsonl").read_text().splitlines()]
    assert all(r["data_wait_share"] < 0.1 for r in log)
    assert "data-bound" not in capsys.readouterr().out


def test_auto_cache_holds_each_stored_phase_when_the_dataset_is_too_large(
    shapes16, tmp_path, monkeypatch
):
    """data_cache="auto" with a CPU budget of 128 images at 8x8: the 16x16 dataset is not
    cached whole, so phases are served from the levels, the stored 4x4 and 8x8 cached in
    memory, 16x16 (decoded) streamed."""
    from progan.train import data_feed

    monkeypatch.setattr(data_feed, "CACHE_BYTES_CPU", 128 * 3 * 8 * 8)
    cfg = streamed_config(shapes16, tmp_path / "run", data_cache="auto")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.serves_phase_resolution
    trainer._open_stream_at(0)
    for images, res, cache in [(0, 4, "cpu"), (450, 8, "cpu"), (650, 16, "none")]:
        trainer._enter_phase(trainer.schedule.at(images))
        assert (trainer.stream.resolution, trainer.stream.cache) == (res, cache)
    trainer.stream.close()
