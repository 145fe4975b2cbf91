"""Losses against closed forms."""

import math

import pytest
import torch
import torch.nn.functional as F

from progan.config import LossConfig
from progan.losses import discriminator_loss, generator_loss, gradient_penalty


class LinearD:
    """D(x) = <w, x>: its input gradient is w everywhere, so ||grad|| = ||w|| exactly."""

    def __init__(self, w: torch.Tensor):
        self.w = w

    def __call__(self, x):
        return (x * self.w).flatten(1).sum(1), None


class QuadraticD:
    """D(x) = 0.5 * ||x||^2: grad = x."""

    def __call__(self, x):
        return 0.5 * x.flatten(1).square().sum(1), None


def test_gradient_penalty_linear_discriminator():
    w = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    reals = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    fakes = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    gp = gradient_penalty(LinearD(w), reals, fakes, target=1.0)
    want = (w.norm().item() - 1.0) ** 2
    torch.testing.assert_close(gp, torch.full((6,), want, dtype=torch.float64))
    gp750 = gradient_penalty(LinearD(w), reals, fakes, target=750.0)
    torch.testing.assert_close(gp750.mean().item(), (w.norm().item() - 750.0) ** 2 / 750.0**2)


def test_gradient_penalty_uses_per_sample_interpolation():
    reals = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    fakes = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    gp = gradient_penalty(QuadraticD(), reals, fakes, generator=gen)
    u = torch.rand(5, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x_hat = reals + u * (fakes - reals)
    want = (x_hat.flatten(1).norm(dim=1) - 1.0) ** 2
    torch.testing.assert_close(gp, want)


def test_wgan_gp_loss_formula():
    w = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    D = LinearD(w)
    reals = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    fakes = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    cfg = LossConfig()
    loss, stats = discriminator_loss(cfg, D, reals, fakes)
    r, f = D(reals)[0], D(fakes)[0]
    want = f.mean() - r.mean() + 10.0 * (w.norm() - 1) ** 2 + 0.001 * r.square().mean()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(stats["wasserstein"], r.mean() - f.mean())
    g_loss, _ = generator_loss(cfg, D, fakes)
    torch.testing.assert_close(g_loss, -f.mean())


def test_wgan_gp_with_the_cifar10_target_matches_the_official_formula():
    """Official loss.py D_wgangp_acgan: fake - real + square(||grad|| - wgan_target) *
    (wgan_lambda / wgan_target**2) + square(real) * wgan_epsilon, here with the paper's
    CIFAR-10 target (paper-cifar10 preset: gamma = 750), computed independently in numpy."""
    import numpy as np

    from progan.presets import preset

    loss_cfg = preset("paper-cifar10", resolution=32).loss
    assert loss_cfg.gp_target == 750.0 and loss_cfg.gp_lambda == 10.0
    w = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    w = w / w.norm() * 700.0  # ||grad D|| = 700, 50 below the target
    reals = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    fakes = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    loss, stats = discriminator_loss(loss_cfg, LinearD(w), reals, fakes)
    wn, rn, fn = w.numpy(), reals.numpy(), fakes.numpy()
    real = (rn * wn).reshape(5, -1).sum(1)
    fake = (fn * wn).reshape(5, -1).sum(1)
    norm = np.sqrt((wn**2).sum())
    per_sample = fake - real + (norm - 750.0) ** 2 * (10.0 / 750.0**2) + real**2 * 0.001
    np.testing.assert_allclose(loss.item(), per_sample.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats["gradient_penalty"].item(), (50.0 / 750.0) ** 2, rtol=1e-9)


def test_lsgan_and_logistic_formulas():
    D = LinearD(torch.randn(1, 1, 2, 2, dtype=torch.float64))
    reals = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    fakes = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    r, f = D(reals)[0], D(fakes)[0]
    loss, _ = discriminator_loss(LossConfig(name="lsgan"), D, reals, fakes)
    torch.testing.assert_close(loss, ((r - 1) ** 2).mean() + (f**2).mean())
    g, _ = generator_loss(LossConfig(name="lsgan"), D, fakes)
    torch.testing.assert_close(g, ((f - 1) ** 2).mean())
    loss, _ = discriminator_loss(LossConfig(name="logistic"), D, reals, fakes)
    want = torch.log1p(torch.exp(f)).mean() + torch.log1p(torch.exp(-r)).mean()
    torch.testing.assert_close(loss, want)
    g, _ = generator_loss(LossConfig(name="logistic"), D, fakes)
    torch.testing.assert_close(g, torch.log1p(torch.exp(-f)).mean())


@pytest.mark.parametrize("name", ["wgan-gp", "lsgan", "logistic"])
def test_losses_are_averaged_not_summed(name):
    D = LinearD(torch.randn(1, 1, 2, 2, dtype=torch.float64))
    reals = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    fakes = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    cfg = LossConfig(name=name)
    one, _ = discriminator_loss(cfg, D, reals, fakes)
    two, _ = discriminator_loss(cfg, D, reals.repeat(2, 1, 1, 1), fakes.repeat(2, 1, 1, 1))
    torch.testing.assert_close(one, two)


def test_auxiliary_classifier_term():
    logits_real = torch.randn(4, 3, dtype=torch.float64)
    logits_fake = torch.randn(4, 3, dtype=torch.float64)
    labels, fake_labels = torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2, 0, 1])

    def D(x):
        table = logits_real if x[0, 0, 0, 0] > 0 else logits_fake
        return x.flatten(1).sum(1) * 0, table

    reals = torch.ones(4, 1, 2, 2, dtype=torch.float64)
    fakes = -torch.ones(4, 1, 2, 2, dtype=torch.float64)
    cfg = LossConfig(name="lsgan", label_weight=1.0)
    loss, _stats = discriminator_loss(cfg, D, reals, fakes, labels, fake_labels)
    ce = F.cross_entropy(logits_real, labels) + F.cross_entropy(logits_fake, fake_labels)
    torch.testing.assert_close(loss, torch.tensor(1.0, dtype=torch.float64) + ce)
    g, _ = generator_loss(cfg, D, fakes, fake_labels)
    torch.testing.assert_close(
        g, torch.tensor(1.0, dtype=torch.float64) + F.cross_entropy(logits_fake, fake_labels)
    )


def test_penalty_gradient_reaches_discriminator_weights():
    w = torch.randn(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    reals = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    fakes = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    gradient_penalty(LinearD(w), reals, fakes).mean().backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    n = w.detach().norm()
    torch.testing.assert_close(w.grad, 2 * (n - 1) * w.detach() / n)
    assert math.isfinite(w.grad.sum().item())


def test_lazy_gradient_penalty_weight_and_schedule():
    """gp_every = k: penalty on steps 0, k, 2k, ... with weight k * lambda; skipped otherwise.
    k = 1 (the default, the paper's method) is the plain loss."""
    from progan.losses import gp_due

    w = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    reals = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    fakes = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    D = LinearD(w)
    gp = (w.norm() - 1.0) ** 2
    plain, _ = discriminator_loss(LossConfig(drift=0.0), D, reals, fakes)
    base = (
        fakes.flatten(1).mul(w.flatten(1)).sum(1).mean()
        - reals.flatten(1).mul(w.flatten(1)).sum(1).mean()
    )
    torch.testing.assert_close(plain, base + 10.0 * gp)
    lazy = LossConfig(drift=0.0, gp_every=4)
    on, on_stats = discriminator_loss(lazy, D, reals, fakes, apply_gp=True)
    off, off_stats = discriminator_loss(lazy, D, reals, fakes, apply_gp=False)
    torch.testing.assert_close(on, base + 40.0 * gp)
    torch.testing.assert_close(off, base)
    assert "gradient_penalty" in on_stats and "gradient_penalty" not in off_stats
    assert [gp_due(lazy, s) for s in range(9)] == [s % 4 == 0 for s in range(9)]
    assert all(gp_due(LossConfig(), s) for s in range(5))


def test_gp_every_validation():
    from progan.errors import ConfigError

    for bad in (0, -2, 1.5):
        with pytest.raises(ConfigError, match="gp_every"):
            LossConfig(gp_every=bad).validate()
