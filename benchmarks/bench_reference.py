"""The throughput benchmark's reference step: a plain fp32 training step written the way the
existing ProGAN ports write it (see ``benchmarks/throughput.py`` for what it is compared with).
It uses progan's Generator and Discriminator, so it computes the same function as progan's
step; ``tests/benchmarks/test_throughput.py`` checks that both update the weights alike."""

from __future__ import annotations

import copy
import math

import torch

from progan.config import NetworkConfig
from progan.nn import Discriminator, Generator

REFERENCE_LR = 1e-3
REFERENCE_BETAS = (0.0, 0.99)
REFERENCE_EMA_BETA = 0.999
GP_LAMBDA = 10.0
DRIFT = 0.001


class ReferenceStep:
    """A plain WGAN-GP training step (one D step, one G step, EMA), as the existing ports do it.

    ``G``/``D`` are progan's modules (copied when given, else new ones seeded by ``seed``).
    ``generator`` draws the latents and the penalty's mixing factors (default: the global RNG);
    the draws come in the same order as in progan's step (D latents, mixing factors, G latents),
    so with the same generator state both steps see the same random numbers.
    """

    def __init__(
        self,
        net: NetworkConfig,
        depth: int,
        alpha: float,
        device: torch.device | str = "cpu",
        *,
        G: torch.nn.Module | None = None,
        D: torch.nn.Module | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        sync: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.latent_size = net.latent_size
        self.depth, self.alpha = depth, alpha
        self.generator = generator
        self.sync = sync
        if G is None or D is None:
            torch.manual_seed(seed)
            with torch.device(self.device):
                G, D = Generator(net), Discriminator(net)
        else:
            G, D = copy.deepcopy(G), copy.deepcopy(D)
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.G_ema = copy.deepcopy(self.G)
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=REFERENCE_LR, betas=REFERENCE_BETAS)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=REFERENCE_LR, betas=REFERENCE_BETAS)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_size, device=self.device, generator=self.generator)

    def __call__(self, reals: torch.Tensor) -> tuple[float, float]:
        """One D step and one G step on ``reals`` (N, C, R, R); returns the two losses."""
        G, D, depth, alpha = self.G, self.D, self.depth, self.alpha
        n = reals.shape[0]

        # D step: WGAN loss + gradient penalty + drift.
        fakes = G(self._z(n), None, depth, alpha).detach()
        real_scores = D(reals, depth, alpha)[0]
        fake_scores = D(fakes, depth, alpha)[0]
        u = torch.rand(n, 1, 1, 1, device=self.device, generator=self.generator)
        mixed = (u * fakes + (1.0 - u) * reals).requires_grad_(True)
        mixed_scores = D(mixed, depth, alpha)[0]
        (grad,) = torch.autograd.grad(mixed_scores.sum(), mixed, create_graph=True)
        penalty = ((grad.reshape(n, -1).norm(2, dim=1) - 1.0) ** 2).mean()
        d_loss = (
            fake_scores.mean()
            - real_scores.mean()
            + GP_LAMBDA * penalty
            + DRIFT * (real_scores**2).mean()
        )
        self.opt_D.zero_grad()
        d_loss.backward()
        self.opt_D.step()

        # G step (D's weight gradients are computed too, and cleared by the next D step).
        g_loss = -D(G(self._z(n), None, depth, alpha), depth, alpha)[0].mean()
        self.opt_G.zero_grad()
        g_loss.backward()
        self.opt_G.step()

        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.mul_(REFERENCE_EMA_BETA).add_(p, alpha=1.0 - REFERENCE_EMA_BETA)
        if not self.sync:
            return math.nan, math.nan
        return d_loss.item(), g_loss.item()
