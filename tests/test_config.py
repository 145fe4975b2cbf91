"""Configuration: presets, validation, JSON round trip."""

import json

import pytest

from progan.config import TrainConfig, from_dict, load_config, preset, save_config, to_dict
from progan.errors import ConfigError


def test_json_round_trip(tmp_path):
    cfg = preset("small", resolution=256, channels=1, label_size=10)
    cfg.metrics = ["swd"]
    save_config(cfg, tmp_path / "config.json")
    back = load_config(tmp_path / "config.json")
    assert back == cfg
    assert back.schedule.minibatch[256] == 8  # int keys restored
    assert json.loads((tmp_path / "config.json").read_text())["network"]["resolution"] == 256


def test_unknown_option_is_an_error(tmp_path):
    data = to_dict(TrainConfig())
    data["network"]["fmaps"] = 3
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"c.json.*fmaps"):
        load_config(tmp_path / "c.json")


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("resolution", 48, "power of two"),
        ("resolution", 2048, "power of two"),
        ("channels", 4, "channels"),
    ],
)
def test_network_validation(field, value, match):
    cfg = TrainConfig()
    setattr(cfg.network, field, value)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_presets():
    paper = preset("paper")
    assert paper.network.latent_size == 512 and paper.schedule.stabilize_kimg == 800
    assert paper.adam_betas == (0.0, 0.99) and paper.ema_beta == 0.999
    tiny = preset("tiny", resolution=32)
    assert tiny.network.fmap_max == 32 and tiny.schedule.stabilize_kimg == 2
    with pytest.raises(ConfigError):
        preset("huge")
    assert from_dict(TrainConfig, to_dict(tiny)) == tiny
