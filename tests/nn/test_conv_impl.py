"""NetworkConfig.conv_impl: D with native and explicit convolutions computes the same scores,
gradient penalty and penalty gradients w.r.t. its weights; the option round-trips through
config JSON, generator snapshots and the command line."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from progan.config import LossConfig, NetworkConfig, TrainConfig, from_dict, to_dict
from progan.errors import ConfigError
from progan.losses import discriminator_loss, gradient_penalty
from progan.nn import Discriminator, Generator
from progan.nn.layers import EqualizedConv2d, EqualizedLinear, set_conv_impl
from progan.presets import preset


def _pair_of_ds(dtype=torch.float64, **kw):
    base = dict(resolution=16, channels=3, latent_size=8, fmap_base=64, fmap_max=8)
    base.update(kw)
    torch.manual_seed(0)
    native = Discriminator(NetworkConfig(**base, conv_impl="native")).to(dtype)
    explicit = Discriminator(NetworkConfig(**base, conv_impl="explicit")).to(dtype)
    explicit.load_state_dict(native.state_dict())
    return native, explicit


def test_discriminator_honours_conv_impl():
    native, explicit = _pair_of_ds()
    layers = [m for m in explicit.modules() if isinstance(m, (EqualizedConv2d, EqualizedLinear))]
    assert layers and all(m.impl == "explicit" for m in layers)
    assert all(m.impl == "native" for m in native.modules() if hasattr(m, "impl"))
    set_conv_impl(explicit, "native")
    assert all(m.impl == "native" for m in layers)
    with pytest.raises(ValueError, match="conv_impl"):
        set_conv_impl(explicit, "fast")


@pytest.mark.parametrize("depth, alpha", [(2, 1.0), (2, 0.3), (1, 1.0), (0, 1.0)])
def test_penalty_and_its_weight_gradients_equal_between_impls(depth, alpha):
    native, explicit = _pair_of_ds()
    r = 4 * 2**depth
    gen = torch.Generator().manual_seed(1)
    reals = torch.randn(8, 3, r, r, dtype=torch.float64, generator=gen)
    fakes = torch.randn(8, 3, r, r, dtype=torch.float64, generator=gen)
    mix = torch.rand(8, 1, 1, 1, dtype=torch.float64, generator=gen)
    results = []
    for D in (native, explicit):
        gp = gradient_penalty(lambda x, D=D: D(x, depth, alpha), reals, fakes, mix=mix)
        grads = torch.autograd.grad(gp.mean(), [p for p in D.parameters()], allow_unused=True)
        results.append((gp, grads))
    (gp_n, g_n), (gp_e, g_e) = results
    assert gp_n.abs().min() > 0
    torch.testing.assert_close(gp_e, gp_n, rtol=1e-12, atol=1e-12)
    used = 0
    for a, b in zip(g_e, g_n, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            used += 1
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert used > 4


def test_whole_d_loss_and_gradients_equal_between_impls_float32():
    """The D step's loss (WGAN-GP + drift) and every weight gradient, in float32 as trained."""
    native, explicit = _pair_of_ds(torch.float32, mbstd_group_size=4)
    gen = torch.Generator().manual_seed(2)
    reals = torch.randn(8, 3, 16, 16, generator=gen)
    fakes = torch.randn(8, 3, 16, 16, generator=gen)
    mix = torch.rand(8, 1, 1, 1, generator=gen)
    out = []
    for D in (native, explicit):
        loss, _ = discriminator_loss(LossConfig(), lambda x, D=D: D(x), reals, fakes, mix=mix)
        D.zero_grad(set_to_none=True)
        loss.backward()
        out.append((loss.detach(), [p.grad for p in D.parameters()]))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-6, atol=1e-6)
    assert sum(g is not None for g in out[0][1]) > 4
    for a, b in zip(out[1][1], out[0][1], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_explicit_d_has_no_generic_double_backward_node():
    from torch.profiler import ProfilerActivity, profile

    native, explicit = _pair_of_ds(torch.float32)
    x = torch.randn(4, 3, 16, 16)
    names = {}
    for label, D in (("native", native), ("explicit", explicit)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            gp = gradient_penalty(lambda t, D=D: D(t), x, x.flip(0))
            gp.mean().backward()
        names[label] = {e.key for e in prof.key_averages()}
    generic = "autograd::engine::evaluate_function: ConvolutionBackwardBackward0"
    assert generic in names["native"]
    assert generic not in names["explicit"]
    assert not any("AvgPool2DBackward" in n for n in names["explicit"])


def test_conv_impl_config_validation_and_json():
    cfg = TrainConfig()
    cfg.network.conv_impl = "explicit"
    cfg.validate()
    assert from_dict(TrainConfig, to_dict(cfg)).network.conv_impl == "explicit"
    cfg.network.conv_impl = "cudnn"
    with pytest.raises(ConfigError, match="conv_impl"):
        cfg.validate()
    old = to_dict(TrainConfig())
    del old["network"]["conv_impl"], old["loss"]["gp_every"]
    back = from_dict(TrainConfig, old)
    assert back.network.conv_impl == "native" and back.loss.gp_every == 1


def test_snapshot_with_conv_impl_loads_in_generate(tmp_path):
    from progan.generate import load_generator
    from progan.train.checkpoint import save_generator_snapshot

    net = preset("tiny", resolution=16).network
    net.conv_impl = "explicit"
    G = Generator(net)
    path = tmp_path / "snapshot-0000001.000.safetensors"
    save_generator_snapshot(path, G.state_dict(), net, depth=2, alpha=1.0)
    loaded = load_generator(path)
    z = torch.randn(2, net.latent_size)
    torch.testing.assert_close(loaded(z), G.eval()(z))
    meta_net = json.loads(json.dumps(to_dict(net)))
    assert meta_net["conv_impl"] == "explicit"


def test_cli_conv_impl_reaches_the_config(tmp_path, capsys):
    from progan.cli import main
    from progan.data.create import create_dataset

    data = tmp_path / "shapes.zip"
    create_dataset("synthetic:shapes", data, resolution=8, max_images=8)
    rc = main(["train", "--data", str(data), "--preset", "tiny", "--conv-impl", "explicit",
               "--outdir", str(tmp_path / "runs"), "--dry-run"])  # fmt: skip
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["network"]["conv_impl"] == "explicit"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--conv-impl", "fast", "--dry-run"])


def test_he_constant_multiplies_the_weight_not_the_output():
    """Both impls scale the N(0, 1) weight by He's constant before the convolution: the output
    equals F.conv2d with the scaled weight bit for bit (scaling the output differs by
    rounding)."""
    conv = EqualizedConv2d(16, 8, 3)
    x = torch.randn(2, 16, 6, 6)
    want = F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1)
    for impl in ("native", "explicit"):
        conv.impl = impl
        assert torch.equal(conv(x), want)
    lin = EqualizedLinear(32, 4)
    xl = torch.randn(3, 32, requires_grad=True)
    want_l = F.linear(xl, lin.weight * lin.scale, lin.bias)
    for impl in ("native", "explicit"):
        lin.impl = impl
        assert torch.equal(lin(xl), want_l)
