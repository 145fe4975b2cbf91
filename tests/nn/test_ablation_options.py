"""The ablation switches of Table 1 against independent numpy formulas: minibatch
discrimination, layer norm in D, batch norm in G, equalized LR off; fade-in with options on."""

import math

import numpy as np
import pytest
import torch

from progan.config import NetworkConfig
from progan.nn import Discriminator, Generator
from progan.nn.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    LayerNorm,
    MinibatchDiscrimination,
)
from progan.train.ema import make_ema_copy, update_ema


def small_cfg(**kw) -> NetworkConfig:
    base = dict(resolution=16, channels=3, latent_size=16, fmap_base=128, fmap_max=16)
    base.update(kw)
    return NetworkConfig(**base)


# --------------------------------------------------------------------------------------------
# minibatch discrimination (Salimans et al. 2016)


def numpy_minibatch_discrimination(f: np.ndarray, T: np.ndarray) -> np.ndarray:
    """o[i, b] = sum_{j != i} exp(-sum_c |M[i, b, c] - M[j, b, c]|), M[i] = f[i] . T."""
    n = f.shape[0]
    M = np.einsum("na,abc->nbc", f, T)
    out = np.zeros((n, T.shape[1]))
    for i in range(n):
        for j in range(n):
            if j != i:
                out[i] += np.exp(-np.abs(M[i] - M[j]).sum(axis=1))
    return out


@pytest.mark.parametrize("equalized", [True, False])
def test_minibatch_discrimination_matches_numpy(equalized):
    layer = MinibatchDiscrimination(3 * 2 * 2, kernels=4, dims=3, equalized=equalized).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64) * 0.5
    got = layer(x).detach().numpy()
    T = (layer.weight.detach() * layer.scale).numpy().reshape(12, 4, 3)
    want = numpy_minibatch_discrimination(x.numpy().reshape(5, -1), T)
    assert got.shape == (5, 3 + 4, 2, 2)
    np.testing.assert_array_equal(got[:, :3], x.numpy())  # the input passes through
    for b in range(4):  # each kernel's value is replicated over the pixels
        np.testing.assert_allclose(got[:, 3 + b], want[:, b, None, None].repeat(2, 1).repeat(2, 2))
    np.testing.assert_allclose(got[:, 3:, 0, 0], want, rtol=1e-12)


def test_minibatch_discrimination_sees_identical_samples():
    """A batch of copies of one sample gives o = N - 1 for every kernel (all distances 0)."""
    layer = MinibatchDiscrimination(8, kernels=3, dims=2)
    x = torch.randn(1, 2, 2, 2).expand(6, -1, -1, -1)
    out = layer(x)[:, 2:, 0, 0]
    torch.testing.assert_close(out, torch.full((6, 3), 5.0))


def test_minibatch_discrimination_weight_scale():
    eq = MinibatchDiscrimination(400, kernels=50, dims=5)
    plain = MinibatchDiscrimination(400, kernels=50, dims=5, equalized=False)
    assert eq.scale == pytest.approx(1 / 20) and plain.scale == 1.0
    assert abs(eq.weight.std().item() - 1.0) < 0.02
    assert abs(plain.weight.std().item() - 1 / 20) < 0.001


# --------------------------------------------------------------------------------------------
# layer norm (D) and batch norm (G)


@pytest.mark.parametrize("shape", [(4, 6, 3, 5), (4, 6)])
def test_layer_norm_per_sample_matches_numpy(shape):
    norm = LayerNorm(shape[1]).double()
    with torch.no_grad():
        norm.gain.copy_(torch.linspace(0.5, 2.0, shape[1]))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    got = norm(x).detach().numpy()
    a = x.numpy()
    axes = tuple(range(1, a.ndim))
    mean = a.mean(axis=axes, keepdims=True)
    var = ((a - mean) ** 2).mean(axis=axes, keepdims=True)
    cshape = (1, -1) + (1,) * (a.ndim - 2)
    want = (a - mean) / np.sqrt(var + 1e-5) * norm.gain.detach().numpy().reshape(
        cshape
    ) + norm.bias.detach().numpy().reshape(cshape)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Samples are independent: changing one sample leaves the others' outputs unchanged.
    x2 = x.clone()
    x2[0] *= 10
    np.testing.assert_allclose(norm(x2).detach().numpy()[1:], got[1:], rtol=1e-12)


def _capture(module: torch.nn.Module) -> dict:
    seen = {}

    def hook(m, inputs, output):
        seen["in"], seen["out"] = inputs[0].detach(), output.detach()

    module.register_forward_hook(hook)
    return seen


def test_batch_norm_in_generator_train_mode_matches_numpy():
    cfg = small_cfg(batchnorm_g=True, pixelnorm=False)
    G = Generator(cfg).double().train()
    bn = G.blocks[1].bn1
    assert isinstance(bn, torch.nn.BatchNorm2d)
    seen = _capture(bn)
    G(torch.randn(6, cfg.latent_size, dtype=torch.float64), depth=1)
    a = seen["in"].numpy()
    mean = a.mean(axis=(0, 2, 3), keepdims=True)
    var = a.var(axis=(0, 2, 3), keepdims=True)  # biased, over batch and pixels per channel
    np.testing.assert_allclose(seen["out"].numpy(), (a - mean) / np.sqrt(var + 1e-5), atol=1e-10)
    # Running statistics move 10% towards the batch's (unbiased variance), as torch defines.
    n = a.shape[0] * a.shape[2] * a.shape[3]
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean.ravel(), rtol=1e-10)
    np.testing.assert_allclose(
        bn.running_var.numpy(), 0.9 + 0.1 * var.ravel() * n / (n - 1), rtol=1e-10
    )


def test_ema_copies_batch_norm_running_stats():
    cfg = small_cfg(batchnorm_g=True)
    G = Generator(cfg)
    ema = make_ema_copy(G)
    G(torch.randn(8, cfg.latent_size), depth=2)  # train mode: running stats move
    update_ema(ema, G, beta=0.999)
    for (name, b_ema), (_, b) in zip(ema.named_buffers(), G.named_buffers(), strict=True):
        torch.testing.assert_close(b_ema, b, msg=name)
    assert any("running_mean" in n for n, _ in ema.named_buffers())
    assert not ema.training  # snapshots sample with the running statistics


def test_norm_options_build_the_expected_modules():
    G = Generator(small_cfg(batchnorm_g=True))
    D = Discriminator(small_cfg(layernorm_d=True, mbdisc_kernels=7, mbstd_group_size=0))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules()) == 2 * 3
    # two per block, including the head's 3x3 conv and 4x4 dense layer
    assert sum(isinstance(m, LayerNorm) for m in D.modules()) == 2 * 3
    head = D.blocks[0]
    assert head.mbstd is None and head.mbdisc.kernels == 7
    assert head.conv.weight.shape[1] == 16 + 7
    both = Discriminator(small_cfg(mbdisc_kernels=3))
    assert both.blocks[0].conv.weight.shape[1] == 16 + 1 + 3  # stddev map, then 3 kernels
    # Defaults: none of the ablation modules, so earlier snapshots load unchanged.
    plain_g, plain_d = Generator(small_cfg()), Discriminator(small_cfg())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain_g.modules())
    assert not any(isinstance(m, (LayerNorm, MinibatchDiscrimination)) for m in plain_d.modules())


# --------------------------------------------------------------------------------------------
# equalized learning rate off


def _scaled_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    kinds = (EqualizedConv2d, EqualizedLinear, MinibatchDiscrimination)
    return [m for m in model.modules() if isinstance(m, kinds)]


def _he_std(m: torch.nn.Module) -> float:
    """He's constant sqrt(2) / sqrt(fan_in) (gain 1 / sqrt(fan_in) for minibatch disc.)."""
    w = m.weight
    if isinstance(m, MinibatchDiscrimination):
        return 1.0 / math.sqrt(w.shape[0])
    return math.sqrt(2.0) / math.sqrt(w[0].numel())


def test_equalized_lr_off_bakes_he_init_into_every_weight():
    """Without equalized LR every layer (conv, dense, minibatch disc.) stores its run-time
    constant in the weights: the same draws times the constant the equalized layer applies."""
    on = small_cfg(mbdisc_kernels=4, fmap_base=512, fmap_max=64)
    off = small_cfg(equalized_lr=False, mbdisc_kernels=4, fmap_base=512, fmap_max=64)
    for cls in (Generator, Discriminator):
        torch.manual_seed(3)
        eq_layers = _scaled_layers(cls(on))
        torch.manual_seed(3)
        plain_layers = _scaled_layers(cls(off))
        assert len(eq_layers) == len(plain_layers) > 5
        for m_eq, m in zip(eq_layers, plain_layers, strict=True):
            assert m.scale == 1.0 and m_eq.scale != 1.0
            torch.testing.assert_close(m.weight, m_eq.weight * m_eq.scale)
            assert abs(m_eq.weight.std().item() - 1.0) < 0.35  # N(0, 1) draws when equalized
        # the bulk 3x3 convolutions get He's std (gain sqrt(2)); the head's output, toRGB and
        # G's first dense layer use the smaller gains of the official code
        for m in plain_layers:
            if isinstance(m, EqualizedConv2d) and m.weight.shape[-1] == 3:
                assert abs(m.weight.std().item() / _he_std(m) - 1) < 0.08, m


@pytest.mark.parametrize("extra", [{}, {"batchnorm_g": True, "layernorm_d": True}])
def test_equalized_lr_off_computes_the_same_function_at_init(extra):
    """Same seed, same draws: run-time scaling and baked-in scaling are the same network."""
    on, off = small_cfg(**extra), small_cfg(equalized_lr=False, **extra)
    torch.manual_seed(1)
    G1, D1 = Generator(on), Discriminator(on)
    torch.manual_seed(1)
    G0, D0 = Generator(off), Discriminator(off)
    z = torch.randn(4, on.latent_size)
    img1, img0 = G1(z, depth=2, alpha=0.7), G0(z, depth=2, alpha=0.7)
    torch.testing.assert_close(img0, img1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(D0(img1, 2, 0.7)[0], D1(img1, 2, 0.7)[0], rtol=1e-4, atol=1e-5)


def test_all_options_train_one_step_with_gradient_penalty():
    from progan.config import LossConfig
    from progan.losses import discriminator_loss, generator_loss

    cfg = small_cfg(
        batchnorm_g=True, layernorm_d=True, mbdisc_kernels=4, equalized_lr=False, pixelnorm=False
    )
    G, D = Generator(cfg), Discriminator(cfg)
    reals = torch.rand(8, 3, 16, 16) * 2 - 1
    fakes = G(torch.randn(8, cfg.latent_size))

    def d_fn(x):
        return D(x, 2, 1.0)

    d_loss, _ = discriminator_loss(LossConfig(), d_fn, reals, fakes.detach(), None, None)
    d_loss.backward()
    g_loss, _ = generator_loss(LossConfig(), d_fn, fakes, None)
    g_loss.backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert D.blocks[0].mbdisc.weight.grad is not None
