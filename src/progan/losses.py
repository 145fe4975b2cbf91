"""Loss functions (paper Section 6 / Appendix A.1; official code's loss.py).

All losses are **averaged** over the minibatch, so the learning rate does not depend on the
batch size. Each function returns ``(loss, stats)`` where ``loss`` is a scalar tensor to
backpropagate and ``stats`` maps names to detached scalar tensors for logging (never read back
on the hot path).

* ``wgan-gp``: WGAN loss with gradient penalty (Gulrajani et al. 2017) and the paper's drift
  term: L_D = E[D(fake)] - E[D(real)] + lambda * E[(||grad D(x_hat)|| - target)^2 / target^2]
  + eps_drift * E[D(real)^2], x_hat = real + u * (fake - real), u ~ U(0, 1) per sample;
  L_G = -E[D(fake)].
* ``lsgan``: least squares (Mao et al. 2017): L_D = E[(D(real) - 1)^2] + E[D(fake)^2],
  L_G = E[(D(fake) - 1)^2].
* ``logistic``: non-saturating logistic (Goodfellow et al. 2014):
  L_D = E[softplus(D(fake))] + E[softplus(-D(real))], L_G = E[softplus(-D(fake))].

Lazy gradient penalty (``LossConfig.gp_every`` = k > 1; **not the paper's method**, which
penalizes on every D step; StyleGAN2 does this for its R1 term): the penalty is computed on
every k-th D step only (:func:`gp_due`), with weight ``k * gp_lambda``, so that its average
weight per step stays ``gp_lambda``. The caller decides per step with
``discriminator_loss(..., apply_gp=gp_due(cfg, d_step))``. Off by default (k = 1).

With labels (conditional models), D's extra outputs are an auxiliary classifier (AC-GAN, as in
the official code): ``label_weight * cross_entropy`` on reals and fakes is added to L_D and on
fakes to L_G.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from progan.config import LossConfig

# D(images) -> (scores (N,), label logits (N, K) or None)
DiscriminatorFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half/bfloat16 scores for the loss arithmetic; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def gradient_penalty(
    discriminator: DiscriminatorFn,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    target: float = 1.0,
    generator: torch.Generator | None = None,
    mix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample ``(||grad_x D(x_hat)||_2 - target)^2 / target^2`` of shape (N,).

    ``x_hat`` mixes each real with its fake by one U(0, 1) factor per sample, drawn from
    ``generator`` as ``torch.rand(N, 1, 1, 1)``, or given as ``mix`` (N, 1, 1, 1) (data-parallel
    training draws them for the global batch and passes each rank its rows). The graph is kept
    (``create_graph=True``) so that the penalty can be differentiated w.r.t. D's weights.
    """
    n = reals.shape[0]
    if mix is not None:
        u = mix.to(device=reals.device, dtype=reals.dtype).reshape(n, 1, 1, 1)
    else:
        u = torch.rand(n, 1, 1, 1, device=reals.device, dtype=reals.dtype, generator=generator)
    mixed = torch.lerp(reals.detach(), fakes.detach(), u).requires_grad_(True)
    scores, _ = discriminator(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = _at_least_fp32(grad).flatten(1).norm(dim=1)
    return (norms - target).square() / (target * target)


def gp_due(cfg: LossConfig, d_step: int) -> bool:
    """Whether D step number ``d_step`` (0, 1, 2, ... counted over the whole run) computes the
    gradient penalty: every step when ``cfg.gp_every`` is 1, else steps 0, k, 2k, ..."""
    return d_step % cfg.gp_every == 0


def discriminator_loss(
    cfg: LossConfig,
    discriminator: DiscriminatorFn,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    labels: torch.Tensor | None = None,
    fake_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    mix: torch.Tensor | None = None,
    apply_gp: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's loss for one minibatch. ``reals``/``fakes`` are (N, C, R, R) in [-1, 1];
    ``labels``/``fake_labels`` are (N,) int64 class indices when the model is conditional;
    ``mix``: the gradient penalty's mixing factors (see :func:`gradient_penalty`).

    ``apply_gp`` (wgan-gp only): False skips the penalty on this step (no mixing factors are
    drawn then); True adds it with weight ``cfg.gp_lambda * cfg.gp_every`` (the lazy penalty's
    compensation; exactly ``gp_lambda`` with the default ``gp_every = 1``)."""
    real_scores, real_logits = discriminator(reals)
    fake_scores, fake_logits = discriminator(fakes.detach())
    real_scores, fake_scores = _at_least_fp32(real_scores), _at_least_fp32(fake_scores)
    stats: dict[str, torch.Tensor] = {}
    if cfg.name == "wgan-gp":
        loss = fake_scores.mean() - real_scores.mean()
        stats["wasserstein"] = (real_scores.mean() - fake_scores.mean()).detach()
        if cfg.gp_lambda > 0 and apply_gp:
            penalty = gradient_penalty(
                discriminator, reals, fakes, cfg.gp_target, generator, mix=mix
            )
            weight = cfg.gp_lambda * cfg.gp_every if cfg.gp_every != 1 else cfg.gp_lambda
            loss = loss + weight * penalty.mean()
            stats["gradient_penalty"] = penalty.mean().detach()
        if cfg.drift > 0:
            loss = loss + cfg.drift * real_scores.square().mean()
    elif cfg.name == "lsgan":
        loss = (real_scores - 1.0).square().mean() + fake_scores.square().mean()
    elif cfg.name == "logistic":
        loss = F.softplus(fake_scores).mean() + F.softplus(-real_scores).mean()
    else:
        raise ValueError(f"unknown loss {cfg.name!r}")
    if real_logits is not None and labels is not None and cfg.label_weight > 0:
        label_loss = F.cross_entropy(_at_least_fp32(real_logits), labels)
        if fake_logits is not None and fake_labels is not None:
            label_loss = label_loss + F.cross_entropy(_at_least_fp32(fake_logits), fake_labels)
        loss = loss + cfg.label_weight * label_loss
        stats["label_loss"] = label_loss.detach()
    stats["real_score"] = real_scores.mean().detach()
    stats["fake_score"] = fake_scores.mean().detach()
    stats["loss"] = loss.detach()
    return loss, stats


def generator_loss(
    cfg: LossConfig,
    discriminator: DiscriminatorFn,
    fakes: torch.Tensor,
    fake_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss for one minibatch of fakes (N, C, R, R) (gradients flow into G)."""
    fake_scores, fake_logits = discriminator(fakes)
    fake_scores = _at_least_fp32(fake_scores)
    if cfg.name == "wgan-gp":
        loss = -fake_scores.mean()
    elif cfg.name == "lsgan":
        loss = (fake_scores - 1.0).square().mean()
    elif cfg.name == "logistic":
        loss = F.softplus(-fake_scores).mean()
    else:
        raise ValueError(f"unknown loss {cfg.name!r}")
    stats: dict[str, torch.Tensor] = {}
    if fake_logits is not None and fake_labels is not None and cfg.label_weight > 0:
        label_loss = F.cross_entropy(_at_least_fp32(fake_logits), fake_labels)
        loss = loss + cfg.label_weight * label_loss
        stats["label_loss"] = label_loss.detach()
    stats["loss"] = loss.detach()
    return loss, stats
