"""Configuration: presets, validation, JSON round trip."""

import json

import pytest

from progan.config import PRESETS, TrainConfig, from_dict, load_config, save_config, to_dict
from progan.errors import ConfigError
from progan.presets import default_mirror, preset


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
        ("mbdisc_kernels", -1, "mbdisc"),
        ("mbdisc_dims", 0, "mbdisc"),
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
    for name in PRESETS:
        cfg = preset(name, resolution=32)
        cfg.validate()
        assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_paper_preset_is_official_v1_1gpu():
    """Official config.py preset-v1-1gpu: D.mbstd_group_size = 16, minibatch_base 16 with
    {256: 14, 512: 6, 1024: 3}, lod_training/transition_kimg 800, total_kimg 19000; train.py
    defaults: lrate 0.001, G_smoothing 0.999, D_repeats 1, Adam (0, 0.99, 1e-8)."""
    cfg = preset("paper", resolution=1024)
    net, sched = cfg.network, cfg.schedule
    assert net.mbstd_group_size == 16
    assert (net.fmap_base, net.fmap_decay, net.fmap_max, net.latent_size) == (8192, 1.0, 512, 512)
    assert net.pixelnorm and net.equalized_lr and net.normalize_latents
    assert sched.minibatch == {256: 14, 512: 6, 1024: 3} and sched.minibatch_default == 16
    assert sched.stabilize_kimg == sched.fade_kimg == 800 and sched.total_kimg == 19_000
    assert sched.learning_rate == {} and sched.learning_rate_default == 0.001
    assert sched.start_resolution == 4 and sched.growing and sched.reset_optimizer
    assert cfg.ema_beta == 0.999 and cfg.d_steps == 1
    assert cfg.adam_betas == (0.0, 0.99) and cfg.adam_eps == 1e-8
    assert (cfg.loss.name, cfg.loss.gp_lambda, cfg.loss.gp_target, cfg.loss.drift) == (
        "wgan-gp",
        10.0,
        1.0,
        0.001,
    )
    assert preset("paper", resolution=128).schedule.total_kimg == 19_000


def test_paper_cifar10_preset():
    """Section 6.5: the CelebA (paper) setup limited to 32x32, gradient penalty target 750."""
    cfg = preset("paper-cifar10", resolution=32)
    paper = preset("paper", resolution=32)
    assert cfg.loss.gp_target == 750.0
    cfg.loss.gp_target, cfg.preset = 1.0, "paper"
    assert cfg == paper  # nothing else differs
    with pytest.raises(ConfigError, match="32x32"):
        preset("paper-cifar10", resolution=64)


def test_official_v2_needs_a_table_for_the_gpu_count():
    with pytest.raises(ConfigError, match="1, 2, 4 or 8"):
        preset("official-v2", num_gpus=3)


@pytest.mark.parametrize(
    "kind, want",
    [
        ("celeba", True),
        ("celeba-hq", True),
        ("lsun", True),
        ("cifar10", False),
        ("mnist", False),
        ("folder", False),
        ("zip", False),
        ("synthetic", False),
        (None, False),
    ],
)
def test_default_mirror_follows_the_official_configs(kind, want):
    assert default_mirror(kind) is want
    tiny = preset("tiny", resolution=32)
    assert tiny.network.fmap_max == 32 and tiny.schedule.stabilize_kimg == 2
    with pytest.raises(ConfigError):
        preset("huge")
    assert from_dict(TrainConfig, to_dict(tiny)) == tiny


ABLATION_KEYS = ("batchnorm_g", "layernorm_d", "mbdisc_kernels", "mbdisc_dims")


def test_ablation_options_round_trip(tmp_path):
    cfg = preset("tiny", resolution=16)
    cfg.network.batchnorm_g = cfg.network.layernorm_d = True
    cfg.network.mbdisc_kernels, cfg.network.mbdisc_dims = 50, 3
    cfg.network.equalized_lr = cfg.network.pixelnorm = False
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg


def test_configs_written_before_the_ablation_options_still_load(tmp_path):
    """Missing keys take the defaults, which are the networks as they were before."""
    data = to_dict(preset("tiny", resolution=16))
    for key in ABLATION_KEYS:
        del data["network"][key]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_config(tmp_path / "old.json")
    assert old == preset("tiny", resolution=16)
    assert not old.network.batchnorm_g and not old.network.layernorm_d
    assert old.network.mbdisc_kernels == 0


def test_snapshots_written_before_the_ablation_options_still_load(tmp_path):
    """A generator snapshot whose stored network config lacks the new keys loads strictly."""
    import torch
    from safetensors.torch import save_file

    from progan.generate import load_generator
    from progan.nn import Generator
    from progan.train.checkpoint import SNAPSHOT_FORMAT

    net = preset("tiny", resolution=16).network
    G = Generator(net)
    old_net = to_dict(net)
    for key in ABLATION_KEYS:
        del old_net[key]
    meta = {"format": SNAPSHOT_FORMAT, "version": "1", "network": json.dumps(old_net),
            "depth": "2", "alpha": "1.0", "extra": "{}"}  # fmt: skip
    path = tmp_path / "snapshot-0000001.000.safetensors"
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(path), metadata=meta)
    loaded = load_generator(path)
    z = torch.randn(2, net.latent_size)
    torch.testing.assert_close(loaded(z), G.eval()(z))


def test_narrow_presets_keep_at_least_one_feature_map_at_1024():
    from progan.presets import preset

    net = preset("tiny", 1024).network
    widths = [net.num_features(d) for d in range(net.max_depth + 1)]
    assert widths == [32, 32, 32, 16, 8, 4, 2, 1, 1]


def test_fid_preprocess_is_validated_and_old_configs_load_with_tf(tmp_path):
    data = to_dict(preset("tiny", resolution=16))
    del data["fid_preprocess"]  # a config.json written before the option existed
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert load_config(tmp_path / "old.json").fid_preprocess == "tf"
    cfg = preset("tiny", resolution=16)
    cfg.fid_preprocess = "pytorch-fid"
    cfg.validate()
    cfg.fid_preprocess = "torch"
    with pytest.raises(ConfigError, match="fid_preprocess"):
        cfg.validate()
