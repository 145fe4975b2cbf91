"""Exponential moving average of the generator's weights (paper Section 6 / Appendix A.1).

After every G step: ``ema = beta * ema + (1 - beta) * G`` for every parameter and buffer
(paper: beta = 0.999). Snapshots, sample grids and metrics use the averaged generator.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema_copy(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` in eval mode, to be updated by :func:`update_ema`."""
    return copy.deepcopy(model).eval().requires_grad_(False)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """In-place ``ema <- beta * ema + (1 - beta) * model`` (one fused multi-tensor op)."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if beta == 0.0:
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)
