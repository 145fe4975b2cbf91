"""Inception Score (Salimans et al., 2016) from the FID Inception-v3's 1008-way logits.

Reference behaviour (openai/improved-gan ``inception_score/model.py``, which the official
progressive-GAN code uses): the logits are ``pool_3 @ W`` of the 2015-12-05 TensorFlow graph's
``softmax/logits`` layer -- *without its bias* -- and the softmax is taken over all 1008
outputs (the graph's 1000 ImageNet classes plus 8 unused ones). The images are split into 10
contiguous parts; per part ``exp(mean_i KL(p(y|x_i) || p(y)))`` with ``p(y)`` the part's mean
prediction; the result is the mean and (population) standard deviation over the parts.
``progan.metrics.inception`` returns exactly these unbiased logits as ``"logits"``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LogitsAccumulator", "inception_score"]


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score from classifier logits.

    Args:
        logits: (N, K) float array (pre-softmax), N >= splits.
        splits: number of contiguous parts (10 in the reference).

    Returns:
        ``(mean, std)`` over the parts, computed in float64.
    """
    x = torch.as_tensor(logits).to(torch.float64).cpu()
    n = x.shape[0]
    if x.ndim != 2 or n < splits:
        raise ValueError(f"need (N, K) logits with N >= {splits}, got {tuple(x.shape)}")
    logp = torch.log_softmax(x, dim=1)
    p = logp.exp()
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        part_p, part_logp = p[lo:hi], logp[lo:hi]
        log_py = torch.log(part_p.mean(dim=0, keepdim=True))
        kl = (part_p * (part_logp - log_py)).sum(dim=1).mean()
        scores.append(float(torch.exp(kl)))
    arr = np.asarray(scores)
    return float(arr.mean()), float(arr.std())


class LogitsAccumulator:
    """Collects (N, 1008) logits batch by batch (float32 on the CPU: 4 KB per image)."""

    def __init__(self) -> None:
        self._chunks: list[torch.Tensor] = []
        self.num_images = 0

    def feed(self, logits: torch.Tensor) -> None:
        self._chunks.append(logits.detach().float().cpu())
        self.num_images += logits.shape[0]

    def value(self, splits: int = 10) -> tuple[float, float]:
        return inception_score(torch.cat(self._chunks), splits)
