"""``progan convert`` and every checkpoint-taking command on an official pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from official_fixtures import official_kwargs, write_official
from PIL import Image

from progan.cli import main
from progan.errors import CheckpointError
from progan.generate import generate_images, load_generator
from progan.official import convert_official, read_official
from progan.official.convert import NETWORKS_FILE, SOURCE_FILE, load_networks_state


@pytest.fixture
def official_pkl(tmp_path):
    gk, dk = official_kwargs(16, fmap_base=32, fmap_max=8, fused=True)
    path, _, _ = write_official(tmp_path / "karras2018iclr-test-16x16.pkl", gk, dk, seed=2, lod=0.4)
    return path


def test_load_generator_takes_the_pickle_and_returns_gs_in_eval_mode(official_pkl):
    G = load_generator(official_pkl)
    official = read_official(official_pkl)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert (G.default_depth, G.default_alpha) == (2, pytest.approx(0.6))
    for key, value in official.state_dicts["Gs"].items():
        assert torch.equal(G.state_dict()[key], value)


def test_convert_round_trip_gives_the_same_images(official_pkl, tmp_path):
    out = tmp_path / "converted"
    snapshot = convert_official(official_pkl, out)
    seeds = list(range(6))
    from_pickle = generate_images(load_generator(official_pkl), seeds)
    from_snapshot = generate_images(load_generator(snapshot), seeds)
    from_folder = generate_images(load_generator(out), seeds)
    assert from_pickle.shape == (6, 3, 16, 16)
    assert torch.equal(from_pickle, from_snapshot) and torch.equal(from_pickle, from_folder)
    state = load_networks_state(out / NETWORKS_FILE)
    official = read_official(official_pkl)
    for ours, theirs in (("G", "G"), ("D", "D"), ("G_ema", "Gs")):
        for key, value in official.state_dicts[theirs].items():
            assert torch.equal(state[ours][key], value), (ours, key)
    assert state["config"]["network"]["d_pool_before_activation"] is True
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["source"] == official_pkl.name and len(source["source_sha256"]) == 64


def test_convert_refuses_a_used_folder_and_writes_nothing_for_a_bad_file(official_pkl, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("keep")
    with pytest.raises(CheckpointError, match="not an empty folder"):
        convert_official(official_pkl, used)
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(official_pkl.read_bytes()[:-20])
    with pytest.raises(CheckpointError):
        convert_official(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_cli_convert_then_generate_from_either(official_pkl, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(official_pkl), str(out)]) == 0
    assert "snapshot-official.safetensors" in capsys.readouterr().out
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["generate", str(official_pkl), "--seeds", "0-3", "--grid", str(a)]) == 0
    assert main(["generate", str(out), "--seeds", "0-3", "--grid", str(b)]) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_neighbors_takes_the_pickle(official_pkl, tmp_path):
    from progan.data.create import make_synthetic_dataset

    data = tmp_path / "d.zip"
    make_synthetic_dataset(data, count=16, resolution=16, seed=1)
    png = tmp_path / "nn.png"
    args = ["neighbors", str(official_pkl), str(data), "--out", str(png), "--num", "2",
            "--k", "2", "--features", "pixels", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0 and png.stat().st_size > 0


def test_metrics_on_the_pickle_equal_those_on_the_converted_snapshot(official_pkl, tmp_path):
    from progan.data.create import make_synthetic_dataset

    data = tmp_path / "d.zip"
    make_synthetic_dataset(data, count=64, resolution=16, seed=1)
    convert_official(official_pkl, tmp_path / "out")
    results = []
    for source in (official_pkl, tmp_path / "out"):
        js = tmp_path / f"{source.name}.json"
        args = ["metrics", str(source), "--data", str(data), "--metrics", "swd", "--num", "64",
                "--device", "cpu", "--json", str(js)]  # fmt: skip
        assert main(args) == 0
        results.append(json.loads(js.read_text()))
    assert results[0]["swd"]["avg"] > 0
    assert results[0]["swd"] == results[1]["swd"]


def test_the_explorer_serves_an_official_pickle_like_generate(official_pkl):
    from progan.explore.model import Explorer

    G = load_generator(official_pkl)
    explorer = Explorer(G)
    seeds, images = explorer.page(3, 4)
    assert list(seeds) == [3, 4, 5, 6]
    served = torch.stack([torch.as_tensor(np.asarray(im)) for im in images])
    assert torch.equal(served, generate_images(load_generator(official_pkl), [3, 4, 5, 6]))


def test_raw_on_an_official_pickle_gives_its_g_not_gs(official_pkl):
    official = read_official(official_pkl)
    G = load_generator(official_pkl, raw=True)
    for key, value in official.state_dicts["G"].items():
        assert torch.equal(G.state_dict()[key], value)
    # the fixture's G and Gs hold different weights, so the two loads must differ
    assert not torch.equal(
        generate_images(G, [0, 1]), generate_images(load_generator(official_pkl), [0, 1])
    )
