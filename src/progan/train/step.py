"""One training step: what one minibatch does to G, D and the EMA generator.

Data flow (all on the training device; docs/ARCHITECTURE.md, "Data flow of one training step"):

1. ``d_steps`` times: ``stream.next(B)`` gives B dataset images (uint8, target resolution) and
   labels; :func:`~progan.nn.resample.real_images_for_phase` box-downscales them to the
   phase's resolution and fades them exactly like G's output. Fresh latents -> G (no grad) ->
   fakes; :func:`~progan.losses.discriminator_loss` (e.g. WGAN-GP + drift) on reals and
   fakes; backward, gradient averaging over ranks, Adam step on D.
2. G step: fresh latents -> G -> D (D frozen) -> :func:`~progan.losses.generator_loss`;
   backward, gradient averaging, Adam step on G; EMA update of G.

Options of the fast step (issue 16; docs/PERFORMANCE.md): the lazy penalty
(``cfg.loss.gp_every``, D steps counted by ``d_steps_done``), NHWC end to end
(``channels_last``: the networks converted once by the trainer, the reals here) and
torch.compile of G and of the G step's D (``compiled``, :mod:`progan.train.compiled`).

The losses come back as detached device scalars: no host sync happens here (the run loop,
:mod:`progan.train.run_loop`, reads them back every ``loss_log_every`` steps).

:class:`StepMixin` is one part of :class:`progan.train.trainer.Trainer`, which owns the state
it reads (annotated below); everything one step computes is in this file, which is the one to
change to make the step faster.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from progan.config import TrainConfig
from progan.losses import discriminator_loss, generator_loss, gp_due
from progan.nn import Discriminator, Generator
from progan.nn.resample import real_images_for_phase
from progan.schedule import PhaseState
from progan.train.compiled import CompiledCalls
from progan.train.distributed import Dist
from progan.train.ema import update_ema
from progan.train.gradients import GradientReducer


def optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    reducer: GradientReducer | None,
    phase_key: Any,
) -> None:
    """Backward pass, gradient averaging over ranks (overlapping the backward pass when
    data-parallel) and one optimizer step."""
    opt.zero_grad(set_to_none=True)
    if reducer is not None:
        reducer.begin(phase_key)
    loss.backward()
    if reducer is not None:
        reducer.finish()
    opt.step()


class StepMixin:
    """``train_step``: ``d_steps`` D steps and one G step on the trainer's networks."""

    # The trainer's state that a step reads or updates (set by Trainer.__init__).
    cfg: TrainConfig
    device: torch.device
    dist: Dist | None
    G: Generator
    D: Discriminator
    G_ema: Generator
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    stream: Any  # RealImageStream or ShardedImageStream: next(B) -> (uint8 images, labels)
    rng: torch.Generator  # on the device: latents, labels, penalty mixing factors
    label_table: torch.Tensor | None  # the dataset's labels, to draw fake labels from
    reducers: tuple[GradientReducer, GradientReducer] | None  # (D, G); data-parallel only
    _synced_buffers: list[torch.Tensor]  # broadcast from rank 0 after every step
    channels_last: bool  # networks and reals in NHWC (cfg.channels_last on CUDA)
    compiled: CompiledCalls | None  # cfg.compile where torch.compile works, else None
    images: int  # real images shown so far (for the EMA warm-up)
    d_steps_done: int  # D steps of the whole run so far (the lazy penalty's clock)
    _shard_rows: Callable[[int], torch.Tensor]  # this rank's rows of a global batch

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.amp == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _latents(
        self, n: int, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents (and labels) of a global batch of ``n``; with ``rows``, only those rows (all
        ranks draw the whole batch from the shared RNG, so the streams stay identical)."""
        z = torch.randn(n, self.cfg.network.latent_size, device=self.device, generator=self.rng)
        labels = None
        if self.label_table is not None:
            idx = torch.randint(len(self.label_table), (n,), device=self.device, generator=self.rng)
            labels = self.label_table[idx]
        if rows is not None:
            z = z[rows]
            labels = labels[rows] if labels is not None else None
        return z, labels

    def train_step(self, st: PhaseState) -> dict[str, torch.Tensor]:
        """``d_steps`` D steps (each on a fresh real minibatch) and one G step; returns
        detached device scalars (the D statistics of the last D step)."""
        cfg, G, D = self.cfg, self.G, self.D
        depth, alpha = st.depth, st.alpha
        batch = st.batch_size  # global: this rank trains on its rows of it
        rows = self._shard_rows(batch) if self.dist is not None else None
        reduce_D, reduce_G = self.reducers if self.reducers is not None else (None, None)

        def d_fn(x: torch.Tensor):
            return D(x, depth, alpha)

        # torch.compile (cfg.compile, train/compiled.py): G's forward in both steps and D's in
        # the G step; never the D step's D (the penalty differentiates it twice).
        calls = self.compiled
        if calls is not None:
            g_fn, alpha_c = calls.generator, calls.alpha(alpha)  # alpha_c: once per step

            def d_fn_g_step(x: torch.Tensor):
                return calls.discriminator_g_step(x, depth, alpha_c)
        else:
            g_fn, alpha_c, d_fn_g_step = G, alpha, d_fn

        for _ in range(cfg.d_steps):
            apply_gp = gp_due(cfg.loss, self.d_steps_done)  # always True with gp_every = 1
            reals_u8, labels = self.stream.next(batch)
            if self.channels_last:  # uint8 (4x smaller than float); every op below keeps NHWC
                reals_u8 = reals_u8.contiguous(memory_format=torch.channels_last)
            reals = real_images_for_phase(reals_u8, st.resolution, alpha)
            if not cfg.network.label_size:
                labels = None
            z, fake_labels = self._latents(batch, rows)
            mix = None
            penalized = cfg.loss.name == "wgan-gp" and cfg.loss.gp_lambda > 0 and apply_gp
            if rows is not None and penalized:
                # The penalty's mixing factors, drawn for the global batch exactly as
                # gradient_penalty would draw them in one process (next in the RNG stream).
                mix = torch.rand(
                    batch, 1, 1, 1, device=self.device, dtype=reals.dtype, generator=self.rng
                )[rows]
            with self._autocast():
                with torch.no_grad():
                    fakes = g_fn(z, fake_labels, depth, alpha_c)
                d_loss, d_stats = discriminator_loss(
                    cfg.loss, d_fn, reals, fakes, labels, fake_labels, generator=self.rng,
                    mix=mix, apply_gp=apply_gp,
                )  # fmt: skip
            optimizer_step(d_loss, self.opt_D, reduce_D, st.phase_key)
            self.d_steps_done += 1
        k = cfg.loss.gp_every
        if k > 1 and cfg.loss.name == "wgan-gp" and cfg.loss.gp_lambda > 0:
            # Lazy penalty: k x the penalty on its steps, 0 on the others, so that the logged
            # means (over loss_log_every steps and ticks) estimate the penalty per step, as
            # D/loss's mean does (it holds k * lambda * penalty on every k-th step).
            gp, gp_zero = d_stats.get("gradient_penalty"), d_loss.new_zeros(())
            d_stats = {**d_stats, "gradient_penalty": gp * k if gp is not None else gp_zero}

        # G step (D frozen so that no weight gradients are computed for it)
        z, fake_labels = self._latents(batch, rows)
        D.requires_grad_(False)
        with self._autocast():
            fakes = g_fn(z, fake_labels, depth, alpha_c)
            g_loss, g_stats = generator_loss(cfg.loss, d_fn_g_step, fakes, fake_labels)
        optimizer_step(g_loss, self.opt_G, reduce_G, st.phase_key)
        D.requires_grad_(True)
        if self._synced_buffers:
            assert self.dist is not None
            self.dist.broadcast_tensors(self._synced_buffers, "broadcasting network buffers")
        update_ema(self.G_ema, G, self.ema_beta(batch))

        stats = {f"D/{k}": v for k, v in d_stats.items()}
        stats.update({f"G/{k}": v for k, v in g_stats.items()})
        return stats

    def ema_beta(self, batch_size: int) -> float:
        """This step's EMA decay: ``ema_beta``, or less during the optional warm-up."""
        beta = self.cfg.ema_beta
        if self.cfg.ema_rampup and 0.0 < beta < 1.0:
            half_life = batch_size * math.log(0.5) / math.log(beta)  # in images
            half_life = min(half_life, max(self.images * self.cfg.ema_rampup, batch_size))
            beta = 0.5 ** (batch_size / half_life)
        return beta
