"""The raw generator beside the EMA one (issue 24): its snapshot at every snapshot tick, its
metrics in the log (``metric-raw/...``), and ``progan generate --raw`` / ``metrics --raw``."""

import json

import numpy as np
import pytest
import torch
from micro import make_micro_config
from PIL import Image

from progan.cli import main
from progan.errors import CheckpointError
from progan.generate import generate_images, load_generator, snapshot_path
from progan.metrics.api import evaluate
from progan.metrics.sources import CallableSource
from progan.tools.grid import make_grid
from progan.train import checkpoint as ckpt
from progan.train.api import train


@pytest.fixture(scope="module")
def run_with_metrics(shapes16, tmp_path_factory):
    """A micro run of 4 ticks with SWD at every second tick (snapshots at 0.128 and 0.256 kimg
    plus the 0-kimg one)."""
    cfg = make_micro_config(
        shapes16, tmp_path_factory.mktemp("runs"), phase_kimg=0.064, total_kimg=1.0,
        tick_kimg=0.064, snapshot_ticks=2, metrics=["swd"], metrics_num=64,
    )  # fmt: skip
    return cfg, train(cfg, progress=False, max_ticks=4)


def test_raw_snapshot_holds_the_trained_generator(run_with_metrics):
    """Every EMA snapshot has a raw one beside it, holding exactly the G of the training
    state written at the same kimg (not the EMA copy, which differs from it)."""
    _, run = run_with_metrics
    entry, state = ckpt.newest_valid_checkpoint(run)
    raw = ckpt.load_generator_snapshot(run / ckpt.raw_snapshot_name(entry["kimg"]))
    ema = ckpt.load_generator_snapshot(run / entry["snapshot"])
    assert raw.extra["generator"] == "raw" and ema.extra["generator"] == "ema"
    assert (raw.depth, raw.alpha) == (ema.depth, ema.alpha)
    assert raw.state_dict.keys() == state["G"].keys()
    for k, v in state["G"].items():
        assert torch.equal(raw.state_dict[k], v), k
        assert torch.equal(ema.state_dict[k], state["G_ema"][k]), k
    assert any(not torch.equal(state["G"][k], state["G_ema"][k]) for k in state["G"])
    snaps = sorted(p.name for p in run.glob("snapshot-*.safetensors"))
    raws = sorted(p.name for p in run.glob(ckpt.RAW_PREFIX + "snapshot-*.safetensors"))
    assert raws == [ckpt.RAW_PREFIX + s for s in snaps] and len(snaps) == 3
    assert ckpt.newest_snapshot(run) == run / entry["snapshot"]  # the EMA one, as before
    assert ckpt.newest_snapshot(run, raw=True) == run / ckpt.raw_snapshot_name(entry["kimg"])


def test_logged_raw_metrics_are_those_of_the_raw_snapshot(run_with_metrics):
    """``metric-raw/swd/...`` equals an independent SWD of the raw snapshot from the training
    metrics' latents; it differs from the EMA generator's ``metric/swd/...``."""
    cfg, run = run_with_metrics
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert {"metric-raw/swd/16", "metric-raw/swd/avg", "metric-raw/seconds"} <= record.keys()
    G = load_generator(run / ckpt.snapshot_name(record["kimg"]), raw=True)
    pixel = torch.arange(16) // 2  # 8x8 images measured at 16x16 (nearest neighbour)

    def fakes(seeds):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + seeds[0])
        z = torch.randn(len(seeds), cfg.network.latent_size, generator=gen)
        x = (G(z) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        return x[:, :, pixel][:, :, :, pixel] if x.shape[-1] == 8 else x

    ref = evaluate("swd", CallableSource(fakes, 16, 3), cfg.data, num=64, seed=cfg.seed)
    assert record["metric-raw/swd/avg"] == pytest.approx(ref["swd"]["avg"], rel=1e-4)
    assert record["metric-raw/swd/avg"] != pytest.approx(record["metric/swd/avg"], rel=1e-6)


def test_generate_raw_uses_the_raw_generator(run_with_metrics, tmp_path):
    _, run = run_with_metrics
    raw_G = load_generator(run, raw=True)
    ema_G = load_generator(run)
    for name, extra in (("r.png", ["--raw"]), ("e.png", [])):
        args = ["generate", str(run), "--seeds", "0-3", "--grid", str(tmp_path / name), *extra]
        assert main(args) == 0
    expect_raw = make_grid(generate_images(raw_G, [0, 1, 2, 3]))
    expect_ema = make_grid(generate_images(ema_G, [0, 1, 2, 3]))
    got_raw = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    got_ema = np.asarray(Image.open(tmp_path / "e.png").convert("RGB"))
    assert (got_raw == expect_raw).all() and (got_ema == expect_ema).all()
    assert not (got_raw == got_ema).all()


def test_raw_snapshot_paths(run_with_metrics, tmp_path):
    _, run = run_with_metrics
    ema = run / ckpt.snapshot_name(0.0)
    assert snapshot_path(ema, raw=True) == run / ckpt.raw_snapshot_name(0.0)
    raw = run / ckpt.raw_snapshot_name(0.0)
    assert snapshot_path(raw, raw=True) == raw
    lone = tmp_path / ckpt.snapshot_name(1.0)  # an older run's snapshot: no raw one beside it
    lone.write_bytes(ema.read_bytes())
    with pytest.raises(CheckpointError, match="no raw generator snapshot"):
        load_generator(lone, raw=True)
    with pytest.raises(CheckpointError, match="no raw generator snapshot"):
        load_generator(tmp_path, raw=True)
