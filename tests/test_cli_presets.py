"""`progan train --dry-run`: presets, --gpus tables, --gp-target and the mirror default (also
of the Python API, ``progan.train.api.configure``)."""

import json

import numpy as np
import pytest

from progan.cli import main
from progan.data.dataset import DatasetWriter
from progan.train.api import configure


def _dataset(path, kind, resolution=32):
    with DatasetWriter(path, resolution, 3, source="test", source_kind=kind) as w:
        for i in range(4):
            w.add(np.full((3, resolution, resolution), i * 40, np.uint8))
    return path


def _dry_run(capsys, *argv) -> dict:
    assert main(["train", *argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "kind, mirror", [("celeba", True), ("lsun", True), ("cifar10", False), (None, False)]
)
def test_mirror_defaults_from_the_dataset_and_the_option_wins(tmp_path, capsys, kind, mirror):
    data = str(_dataset(tmp_path / "d", kind))
    cfg = _dry_run(capsys, "--data", data)
    assert cfg["mirror"] is mirror and cfg["mirror_from"] == f"dataset:{kind or 'unknown'}"
    for flag, want in (("--mirror", True), ("--no-mirror", False)):
        cfg = _dry_run(capsys, "--data", data, flag)
        assert cfg["mirror"] is want and cfg["mirror_from"] == "option"


@pytest.mark.parametrize("kind, mirror", [("celeba", True), ("mnist", False), (None, False)])
def test_configure_defaults_mirror_from_the_dataset_as_the_cli(tmp_path, kind, mirror):
    data = _dataset(tmp_path / "d", kind)
    cfg = configure(data, tmp_path)
    assert cfg.mirror is mirror and cfg.mirror_from == f"dataset:{kind or 'unknown'}"
    for explicit in (True, False):
        cfg = configure(data, tmp_path, mirror=explicit)
        assert cfg.mirror is explicit and cfg.mirror_from == "option"


def test_paper_cifar10_and_gp_target(tmp_path, capsys):
    data = str(_dataset(tmp_path / "c", "cifar10"))
    cfg = _dry_run(capsys, "--data", data, "--preset", "paper-cifar10")
    assert cfg["loss"]["gp_target"] == 750.0 and cfg["network"]["mbstd_group_size"] == 16
    assert cfg["mirror"] is False  # CIFAR: off, as in the official config
    cfg = _dry_run(capsys, "--data", data, "--gp-target", "5")
    assert cfg["loss"]["gp_target"] == 5.0 and cfg["preset"] == "paper"


def test_official_v2_takes_the_table_for_the_number_of_gpus(tmp_path, capsys, monkeypatch):
    data = str(_dataset(tmp_path / "d", "celeba"))
    cfg = _dry_run(capsys, "--data", data, "--preset", "official-v2")
    assert cfg["schedule"]["minibatch"]["4"] == 128
    assert cfg["schedule"]["learning_rate"] == {"1024": 0.0015}
    cfg = _dry_run(capsys, "--data", data, "--preset", "official-v2", "--gpus", "2")
    assert cfg["schedule"]["minibatch"]["4"] == 256 and cfg["schedule"]["minibatch_default"] == 8
    monkeypatch.setenv("WORLD_SIZE", "8")  # as under torchrun --nproc_per_node 8
    cfg = _dry_run(capsys, "--data", data, "--preset", "official-v2")
    assert cfg["schedule"]["minibatch"]["32"] == 64 and cfg["schedule"]["minibatch_default"] == 32
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", "--data", data, "--preset", "official-v2", "--dry-run"]) == 2
    assert "1, 2, 4 or 8" in capsys.readouterr().err
    cfg = _dry_run(
        capsys, "--data", data, "--preset", "official-v2", "--batch", "6", "--lr", "1e-3"
    )
    assert cfg["schedule"]["minibatch_default"] == 6


def test_fid_preprocess_option(tmp_path, capsys):
    data = str(_dataset(tmp_path / "d", "celeba"))
    assert _dry_run(capsys, "--data", data)["fid_preprocess"] == "tf"
    cfg = _dry_run(capsys, "--data", data, "--fid-preprocess", "pytorch-fid")
    assert cfg["fid_preprocess"] == "pytorch-fid"


def test_data_cache_and_workers_options(tmp_path, capsys):
    """--data-cache reaches the config; the workers default to -1 (the usable cores)."""
    data = str(_dataset(tmp_path / "d", None))
    cfg = _dry_run(capsys, "--data", data)
    assert (cfg["data_cache"], cfg["num_workers"]) == ("auto", -1)
    cfg = _dry_run(capsys, "--data", data, "--data-cache", "none", "--workers", "3")
    assert (cfg["data_cache"], cfg["num_workers"]) == ("none", 3)
