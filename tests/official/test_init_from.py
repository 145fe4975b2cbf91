"""``--init-from``: a new run starts from an official pickle's (or progan file's) networks."""

from __future__ import annotations

import json

import pytest
import torch
from official_fixtures import official_kwargs, write_official

from progan.cli import main
from progan.errors import ConfigError
from progan.official import convert_official, read_official
from progan.train import checkpoint as ckpt
from progan.train.api import configure, train


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    from progan.data.create import make_synthetic_dataset

    path = tmp_path_factory.mktemp("data") / "shapes16.zip"
    make_synthetic_dataset(path, count=64, resolution=16, seed=1)
    return path


def _pkl(folder, lod=0.0, resolution=16):
    gk, dk = official_kwargs(resolution, fmap_base=32, fmap_max=8, fused=True)
    path, _, _ = write_official(folder / f"net-lod{lod}.pkl", gk, dk, seed=9, lod=lod)
    return path


def _config(data, outdir, init_from, **kw):
    cfg = configure(data, outdir, "tiny", init_from=init_from, num_workers=0, data_cache="cpu",
                    deterministic=True, **kw)  # fmt: skip
    cfg.schedule.stabilize_kimg = cfg.schedule.fade_kimg = 0.1
    cfg.schedule.total_kimg = 1.0
    cfg.schedule.minibatch, cfg.schedule.minibatch_default = {}, 8
    cfg.tick_kimg, cfg.snapshot_ticks, cfg.grid_size = 0.032, 1, 4
    return cfg


def test_official_pickle_sets_network_depth_and_weights(data16, tmp_path):
    pkl = _pkl(tmp_path, lod=1.0)  # trained to 8x8 so far
    cfg = _config(data16, tmp_path / "runs", pkl)
    official = read_official(pkl)
    assert cfg.network == official.network and cfg.init_from == str(pkl)
    assert cfg.schedule.growing and cfg.schedule.start_resolution == 8
    run = train(cfg, progress=False, max_ticks=1)
    assert json.loads((run / "config.json").read_text())["init_from"] == str(pkl)
    first = ckpt.load_generator_snapshot(sorted(run.glob("snapshot-*.safetensors"))[0])
    assert (first.depth, first.alpha) == (1, 1.0)
    for key, value in official.state_dicts["Gs"].items():
        assert torch.equal(first.state_dict[key], value), key
    full = _config(data16, tmp_path / "runs", _pkl(tmp_path, lod=0.0))
    assert not full.schedule.growing  # fully grown: trains at 16x16 from the start


def test_trains_and_resumes_exactly(data16, tmp_path):
    pkl = _pkl(tmp_path)
    straight = train(_config(data16, tmp_path / "a", pkl), progress=False, max_ticks=4)
    split = train(_config(data16, tmp_path / "b", pkl), progress=False, max_ticks=2)
    train(resume=split, progress=False, max_ticks=2)
    (e1, s1), (e2, s2) = ckpt.newest_valid_checkpoint(straight), ckpt.newest_valid_checkpoint(split)
    assert e1["images"] == e2["images"] == 4 * 32
    official = read_official(pkl)
    for key in ("G", "D", "G_ema"):
        moved = 0
        for name, tensor in s1[key].items():
            torch.testing.assert_close(s2[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
            theirs = official.state_dicts["Gs" if key == "G_ema" else key][name]
            moved += int(not torch.equal(tensor, theirs))
        assert moved > 0  # trained away from the file's weights (so they were the start)


def test_init_weights_replaces_every_weight_of_D(data16, tmp_path):
    """Trainer.init_weights puts the file's D in place of the fresh one, tensor by tensor."""
    from progan.train.trainer import Trainer

    pkl = _pkl(tmp_path)
    cfg = _config(data16, tmp_path / "r", pkl)
    trainer = Trainer(cfg, tmp_path / "r")
    before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    official = read_official(pkl)
    trainer.init_weights({"G": official.state_dicts["G"], "D": official.state_dicts["D"],
                          "G_ema": official.state_dicts["Gs"]})  # fmt: skip
    for key, value in official.state_dicts["D"].items():
        assert torch.equal(trainer.D.state_dict()[key], value)
        assert not torch.equal(before[key], value)  # (the file's biases are not zero)


def test_converted_files_and_snapshots_work_too(data16, tmp_path):
    pkl = _pkl(tmp_path)
    out = tmp_path / "conv"
    convert_official(pkl, out)
    a = _config(data16, tmp_path / "a", out / "networks.pt")
    b = _config(data16, tmp_path / "b", out / "snapshot-official.safetensors")
    assert a.network == b.network == read_official(pkl).network
    run = train(a, progress=False, max_ticks=1)
    c = _config(data16, tmp_path / "c", run)  # a run folder: its newest checkpoint
    assert c.network == a.network and not c.schedule.growing


def test_dataset_must_fit_the_network(data16, tmp_path):
    pkl = _pkl(tmp_path, resolution=32)
    with pytest.raises(ConfigError, match=r"32x32 images with 3 channel.*16x16"):
        _config(data16, tmp_path / "runs", pkl)
    with pytest.raises(ConfigError, match="middle of a fade-in"):
        _config(data16, tmp_path / "runs", _pkl(tmp_path, lod=0.5))


def test_cli_dry_run_and_refused_width_flags(data16, tmp_path, capsys):
    pkl = _pkl(tmp_path)
    args = ["train", "--data", str(data16), "--init-from", str(pkl), "--preset", "tiny"]
    assert main([*args, "--dry-run", "--outdir", str(tmp_path)]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["init_from"] == str(pkl) and cfg["network"]["fmap_base"] == 32
    assert main([*args, "--fmap-base", "64"]) == 2
    assert "does not apply with --init-from" in capsys.readouterr().err
    assert main([*args, "--resume", str(tmp_path)]) == 2
    assert "give one of them" in capsys.readouterr().err
