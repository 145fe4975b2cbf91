"""Projection of real images into a generator's latent space (``progan project``).

For every target image, find a latent ``z`` whose generated image reproduces it: ``z`` is
parameterised by a free vector ``w`` as ``z = sqrt(L) * w / ||w||`` (the sphere where standard
normal latents of dimension L live; G's pixel norm makes its output depend only on the
direction anyway -- for a conditional G only nearly, as it normalises latent and one-hot
class together), and ``w`` is optimised by Adam to minimise

    loss = pixel_weight * mean((G(z) - x)^2) + perceptual_weight * perceptual(G(z), x)

with ``x`` the target in [-1, 1] and ``perceptual`` the early-Inception distance of
:mod:`progan.tools.perceptual`. Several random starts run side by side for ``select_step``
steps; then each image keeps the start with the lowest loss and only that one continues (the
others would rarely overtake it and cost a factor ``starts`` in time). The learning rate is
constant, then falls to 0 along a cosine over the last quarter of the steps (as StyleGAN2's
projector does). Images are optimised as one batch (``images x starts`` latents at first).

Loading images and writing the results: :mod:`progan.tools.project_io`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ProjectionResult", "project_images", "psnr", "sphere"]


def sphere(w: torch.Tensor) -> torch.Tensor:
    """(N, L) -> (N, L) rescaled to Euclidean norm sqrt(L), where N(0, I) latents live."""
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(w.shape[1])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB between uint8 image batches (N, C, H, W), peak 255."""
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse.clamp_min(1e-10))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the inverse of :func:`progan.generate.to_uint8`
    up to rounding."""
    return (images.float() - 128.0) / 127.5


@dataclass
class ProjectionResult:
    """Latents found for N targets and how the optimisation went.

    ``latents``: (N, L) float32 on the sphere of radius sqrt(L); ``images``: (N, C, r, r) uint8
    reconstructions (r = the generator's output size); ``loss``, ``pixel``, ``perceptual``:
    (N, steps) float per-step values of the start each image kept; ``start``: (N,) int, the
    start kept; ``frames``: (N, F, C, r, r) uint8 reconstructions every ``frame_every`` steps
    (None unless asked for).
    """

    latents: torch.Tensor
    images: torch.Tensor
    loss: torch.Tensor
    pixel: torch.Tensor
    perceptual: torch.Tensor
    start: torch.Tensor
    frames: torch.Tensor | None = None


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Constant ``lr``, then a cosine ramp-down to 0 over the last quarter of ``steps``."""
    ramp = min(1.0, (steps - step) / (0.25 * steps))
    return lr * 0.5 * (1.0 - math.cos(math.pi * ramp))


def native_targets(targets: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, R, R) targets -> float [-1, 1] at the generator's output size ``size``
    (box-averaged down, as training shows reals to a generator that is not fully grown)."""
    x = to_float(targets)
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x


def project_images(
    G: torch.nn.Module,
    targets: torch.Tensor,
    perceptual: Callable | None,
    labels: torch.Tensor | None = None,
    *,
    steps: int = 300,
    starts: int = 4,
    select_step: int = 50,
    lr: float = 0.1,
    pixel_weight: float = 1.0,
    perceptual_weight: float = 1.0,
    seed: int = 0,
    frame_every: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ProjectionResult:
    """Project uint8 (N, C, R, R) ``targets`` into ``G``'s latent space (one batch).

    Args:
        G: generator, ``G(z (N, L), labels (N,) int64 | None) -> (N, C, r, r)`` in [-1, 1]
            with ``latent_size`` and ``label_size`` attributes (r: its output size, which may
            be below R for a snapshot before full growth).
        targets: uint8 images of the network's channel count.
        perceptual: a :class:`progan.tools.perceptual.PerceptualDistance` (or any object with
            ``features(images)`` and ``between_features(fa, fb)``), or None for pixels only.
        labels: (N,) int64 classes of a conditional generator.
        steps: Adam steps per image; ``select_step``: when each image keeps its best start
            (clamped to ``steps``); ``starts``: random starts per image (seeded by ``seed``).
        lr: Adam learning rate on ``w`` (whose norm is about sqrt(L)).
        frame_every: keep the reconstruction every this many steps (0: none).
        progress: called with the step index after each step.
    """
    if steps < 1 or starts < 1:
        raise ValueError("steps and starts must be >= 1")
    device = torch.device(device)
    n = targets.shape[0]
    latent_size = int(G.latent_size)
    gen = torch.Generator().manual_seed(int(seed))
    w = torch.randn(n * starts, latent_size, generator=gen).to(device).requires_grad_(True)
    with torch.no_grad():
        size = G(sphere(w[:1]), None if labels is None else labels[:1].to(device)).shape[-1]
    x = native_targets(targets, size).to(device)
    x_rep = x.repeat_interleave(starts, dim=0)
    lab = None if labels is None else labels.to(device).repeat_interleave(starts)
    fx = None if perceptual is None else [f.detach() for f in perceptual.features(x_rep)]
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    history: dict[str, list[torch.Tensor]] = {"loss": [], "pixel": [], "perceptual": []}
    frames: list[torch.Tensor] = []
    keep = torch.arange(n * starts)  # which of the original n*starts rows each row of w is
    select_step = min(max(select_step, 1), steps)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        images = G(sphere(w), lab) if lab is not None else G(sphere(w))
        pixel = (images - x_rep).square().flatten(1).mean(1)
        perc = torch.zeros_like(pixel)
        if fx is not None:
            perc = perceptual.between_features(perceptual.features(images), fx)
        loss = pixel_weight * pixel + perceptual_weight * perc
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        for key, value in (("loss", loss), ("pixel", pixel), ("perceptual", perc)):
            history[key].append(_scatter(value.detach().cpu(), keep, n * starts))
        if frame_every and step % frame_every == 0:
            frames.append(_scatter(_uint8(images.detach().cpu()), keep, n * starts))
        if progress is not None:
            progress(step)
        if step + 1 == select_step and starts > 1:
            best = loss.detach().view(n, starts).argmin(1).cpu()
            rows = torch.arange(n) * starts + best
            w, opt = _select_rows(w, opt, rows.to(device))
            keep, x_rep = rows, x
            fx = None if fx is None else [f[rows.to(device)] for f in fx]
            lab = None if lab is None else lab[rows.to(device)]
    with torch.no_grad():
        z = sphere(w.detach())
        final = G(z, None if labels is None else labels.to(device))
    chosen = keep if starts > 1 else torch.arange(n)
    stack = {k: torch.stack(v, 1)[chosen] for k, v in history.items()}  # (N, steps)
    return ProjectionResult(
        latents=z.float().cpu(),
        images=_uint8(final.cpu()),
        loss=stack["loss"],
        pixel=stack["pixel"],
        perceptual=stack["perceptual"],
        start=(chosen % starts),
        frames=torch.stack(frames, 1)[chosen] if frames else None,
    )


def _uint8(images: torch.Tensor) -> torch.Tensor:
    from progan.generate import to_uint8

    return to_uint8(images)


def _scatter(values: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    """Values of the kept rows placed at their original row index among ``total`` (others 0)."""
    out = torch.zeros((total, *values.shape[1:]), dtype=values.dtype)
    out[rows] = values
    return out


def _select_rows(
    w: torch.Tensor, opt: torch.optim.Adam, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.optim.Adam]:
    """Keep rows ``rows`` of ``w`` and carry Adam's moments for them into a new optimizer."""
    state = opt.state[w]
    kept = w.detach()[rows].clone().requires_grad_(True)
    new = torch.optim.Adam([kept], lr=opt.param_groups[0]["lr"], betas=(0.9, 0.999))
    new.state[kept] = {
        "step": state["step"].clone(),
        "exp_avg": state["exp_avg"][rows].clone(),
        "exp_avg_sq": state["exp_avg_sq"][rows].clone(),
    }
    return kept, new
