"""Generator and discriminator: shapes, paper sizes, fade-in continuity, scale at init."""

import pytest
import torch

from progan.config import NetworkConfig
from progan.nn import Discriminator, Generator
from progan.nn.layers import EqualizedConv2d, downsample2x, upsample2x


def small_cfg(**kw) -> NetworkConfig:
    base = dict(resolution=32, channels=3, latent_size=16, fmap_base=128, fmap_max=32)
    base.update(kw)
    return NetworkConfig(**base)


def test_paper_feature_maps_and_parameter_count():
    cfg = NetworkConfig()  # paper defaults, 1024x1024
    assert [cfg.num_features(d) for d in range(9)] == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    g_params = sum(p.numel() for p in Generator(cfg).parameters())
    d_params = sum(p.numel() for p in Discriminator(cfg).parameters())
    # Paper Table 2: 23.1M parameters in each network; exactly the official networks'
    # (tkarras/progressive_growing_of_gans, networks.py G_paper / D_paper at 1024x1024).
    assert g_params == 23_079_115
    assert d_params == 23_087_249


def test_first_dense_layer_has_one_bias_per_feature_map():
    """Official G_paper: dense (no bias) -> reshape to (N, C, 4, 4) -> one bias per map."""
    cfg = small_cfg()
    G = Generator(cfg)
    block = G.blocks[0]
    assert block.dense.bias is None
    assert block.bias.shape == (cfg.num_features(0),)
    with torch.no_grad():
        block.bias.copy_(torch.randn_like(block.bias))
    z = torch.randn(3, cfg.latent_size)
    x = G.input_norm(z)
    # every pixel of feature map c gets the same bias b[c]
    want = block.dense(x).reshape(3, block.out_ch, 4, 4) + block.bias.view(1, -1, 1, 1)
    hooked = {}
    handle = block.bn0.register_forward_hook(lambda m, i, o: hooked.setdefault("x", i[0]))
    G(z, depth=0)
    handle.remove()
    torch.testing.assert_close(hooked["x"], want)


def test_generator_weights_with_per_unit_dense_bias_are_refused_clearly():
    cfg = small_cfg()
    G = Generator(cfg)
    state = G.state_dict()
    old = dict(state)
    del old["blocks.0.bias"]
    old["blocks.0.dense.bias"] = torch.zeros(16 * cfg.num_features(0))
    with pytest.raises(RuntimeError, match=r"one bias per output unit \(512 values"):
        G.load_state_dict(old)
    G.load_state_dict(state)  # the current form loads


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_depth(channels):
    cfg = small_cfg(channels=channels)
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(4, cfg.latent_size)
    for depth in range(cfg.max_depth + 1):
        for alpha in (0.3, 1.0):
            img = G(z, depth=depth, alpha=alpha)
            assert img.shape == (4, channels, 4 * 2**depth, 4 * 2**depth)
            scores, logits = D(img, depth=depth, alpha=alpha)
            assert scores.shape == (4,) and logits is None


def test_rejects_wrong_input_shapes():
    cfg = small_cfg()
    with pytest.raises(ValueError, match="shape"):
        Discriminator(cfg)(torch.randn(2, 3, 16, 16), depth=1)
    with pytest.raises(ValueError, match="z must have shape"):
        Generator(cfg)(torch.randn(2, 7))


@pytest.mark.parametrize(
    ("options", "train_mode", "atol"),
    [
        ({}, False, 1e-6),
        # Table 1's batch norm in G (batch statistics in training mode, running ones in eval)
        ({"batchnorm_g": True, "pixelnorm": False, "normalize_latents": False}, True, 1e-5),
        ({"batchnorm_g": True, "pixelnorm": False, "normalize_latents": False}, False, 1e-5),
    ],
)
def test_generator_fade_in_starts_from_previous_output(options, train_mode, atol):
    """At alpha = 0 right after growing, G's output is the previous phase's output upsampled."""
    cfg = small_cfg(**options)
    G = Generator(cfg).train(train_mode)
    z = torch.randn(6, cfg.latent_size)
    for depth in range(1, cfg.max_depth + 1):
        old = G(z, depth=depth - 1, alpha=1.0)
        new = G(z, depth=depth, alpha=0.0)
        torch.testing.assert_close(new, upsample2x(old), rtol=0, atol=atol)
        # ...and the fade is continuous in alpha.
        a, b = G(z, depth=depth, alpha=0.999), G(z, depth=depth, alpha=1.0)
        assert (a - b).abs().max() < 0.05 * b.abs().max()


@pytest.mark.parametrize(
    "options",
    [{}, {"layernorm_d": True, "mbdisc_kernels": 5, "equalized_lr": False}],  # + Table 1's
)
def test_discriminator_fade_in_matches_previous_on_downscaled_image(options):
    """At alpha = 0 the grown D scores an image as the previous D scores it downscaled."""
    cfg = small_cfg(label_size=3, **options)
    D = Discriminator(cfg)
    for depth in range(1, cfg.max_depth + 1):
        x = torch.randn(8, 3, 4 * 2**depth, 4 * 2**depth)
        new_scores, new_logits = D(x, depth=depth, alpha=0.0)
        old_scores, old_logits = D(downsample2x(x), depth=depth - 1, alpha=1.0)
        torch.testing.assert_close(new_scores, old_scores, rtol=0, atol=1e-5)
        torch.testing.assert_close(new_logits, old_logits, rtol=0, atol=1e-5)


def test_only_active_blocks_take_part():
    cfg = small_cfg()
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(4, cfg.latent_size)
    img = G(z, depth=1, alpha=0.5)
    D(img, depth=1, alpha=0.5)[0].sum().backward()
    used_g = {n for n, p in G.named_parameters() if p.grad is not None}
    assert any(n.startswith("blocks.1.") for n in used_g)
    assert not any(n.startswith(("blocks.2.", "blocks.3.", "to_rgb.2.")) for n in used_g)
    assert {"to_rgb.0.weight", "to_rgb.1.weight"} <= used_g  # both paths of the fade
    used_d = {n for n, p in D.named_parameters() if p.grad is not None}
    assert {"from_rgb.0.weight", "from_rgb.1.weight"} <= used_d
    assert not any(n.startswith(("blocks.2.", "from_rgb.2.")) for n in used_d)


def test_unit_scale_activations_through_full_1024_networks():
    """Equalized LR (N(0,1) weights, He constant at run time) keeps every convolution's output
    at roughly unit RMS through all 9 blocks of both networks at initialisation."""
    cfg = NetworkConfig()
    G, D = Generator(cfg), Discriminator(cfg)

    def rms_hooks(blocks):
        values = []
        convs = [m for m in blocks.modules() if isinstance(m, EqualizedConv2d)]
        hooks = [
            c.register_forward_hook(lambda m, i, o: values.append(o.square().mean().sqrt().item()))
            for c in convs
        ]
        return values, hooks

    g_rms, _hooks = rms_hooks(G.blocks)
    with torch.no_grad():
        img = G(torch.randn(1, 512))
    assert img.shape == (1, 3, 1024, 1024)
    assert len(g_rms) == 17 and all(0.5 < s < 2.0 for s in g_rms), g_rms
    assert 0.2 < img.std().item() < 3.0
    d_rms, _hooks = rms_hooks(D.blocks)
    with torch.no_grad():
        D(torch.randn(2, 3, 1024, 1024))
    assert len(d_rms) == 17 and all(0.2 < s < 5.0 for s in d_rms), d_rms


def test_conditional_generator_and_auxiliary_classifier():
    cfg = small_cfg(label_size=4)
    G, D = Generator(cfg), Discriminator(cfg)
    z = torch.randn(1, cfg.latent_size).expand(4, -1)
    labels = torch.arange(4)
    img = G(z, labels, depth=2)
    # The same latent with different labels gives different images.
    assert (img[0] - img[1]).abs().mean() > 1e-3
    # One-hot labels and class indices are the same thing.
    torch.testing.assert_close(img, G(z, torch.eye(4), depth=2))
    scores, logits = D(img, depth=2)
    assert scores.shape == (4,) and logits.shape == (4, 4)
    with pytest.raises(ValueError, match="conditional"):
        G(z)


def test_default_depth_is_used_when_depth_is_none():
    cfg = small_cfg()
    G = Generator(cfg)
    z = torch.randn(2, cfg.latent_size)
    assert G(z).shape[-1] == 32
    G.default_depth, G.default_alpha = 1, 0.5
    torch.testing.assert_close(G(z), G(z, depth=1, alpha=0.5))


def test_no_pixelnorm_and_no_mbstd_options():
    cfg = small_cfg(pixelnorm=False, mbstd_group_size=0, normalize_latents=False)
    G, D = Generator(cfg), Discriminator(cfg)
    assert not any("mbstd" in n for n, _ in D.named_modules() if n)
    out = D(G(torch.randn(3, cfg.latent_size)))[0]
    assert out.shape == (3,)


def test_old_snapshot_with_per_unit_bias_still_loads_in_its_own_form(tmp_path):
    from dataclasses import replace

    from progan.generate import load_generator
    from progan.train.checkpoint import save_generator_snapshot

    cfg = small_cfg()
    old_cfg = replace(cfg, g_first_bias="per-unit")
    old_G = Generator(old_cfg)
    state = old_G.state_dict()
    assert "blocks.0.bias" not in state
    assert state["blocks.0.dense.bias"].numel() == 16 * cfg.num_features(0)
    with torch.no_grad():
        state["blocks.0.dense.bias"].normal_()  # biases that differ within a feature map
    old_G.load_state_dict(state)
    path = tmp_path / "snapshot-0000001.000.safetensors"
    save_generator_snapshot(path, state, cfg, cfg.max_depth, 1.0)  # config without the field
    loaded = load_generator(path)
    assert loaded.cfg.g_first_bias == "per-unit"
    z = torch.randn(3, cfg.latent_size)
    torch.testing.assert_close(loaded(z), old_G.eval()(z))
