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

__all__ = ["LogitsAccumulator", "inception_score", "score_from_split_sums", "split_sums"]


def split_sums(
    logits: np.ndarray | torch.Tensor, splits: int, total: int, start: int = 0
) -> torch.Tensor:
    """Per-split sums from which the Inception Score follows (they add up across sets).

    ``logits`` are rows ``start`` .. ``start + n - 1`` of a set of ``total`` images split into
    ``splits`` contiguous parts (part ``s`` holds rows ``s*total//splits`` to
    ``(s+1)*total//splits - 1``).

    Returns:
        (splits, K + 2) float64: per part, the number of rows given, ``sum_x p(y|x)`` (K
        values) and ``sum_x sum_y p(y|x) log p(y|x)``.
    """
    x = torch.as_tensor(logits).to(torch.float64).cpu()
    if x.ndim != 2:
        raise ValueError(f"need (N, K) logits, got {tuple(x.shape)}")
    if total < splits:
        raise ValueError(f"the Inception Score needs >= {splits} images, got {total}")
    if not 0 <= start <= start + x.shape[0] <= total:
        raise ValueError(f"rows {start}..{start + x.shape[0]} are not inside 0..{total}")
    logp = torch.log_softmax(x, dim=1)
    p = logp.exp()
    bounds = torch.tensor([s * total // splits for s in range(1, splits)], dtype=torch.int64)
    part = torch.bucketize(torch.arange(start, start + x.shape[0]), bounds, right=True)
    out = torch.zeros(splits, x.shape[1] + 2, dtype=torch.float64)
    out[:, 0].index_add_(0, part, torch.ones(x.shape[0], dtype=torch.float64))
    out[:, 1:-1].index_add_(0, part, p)
    out[:, -1].index_add_(0, part, (p * logp).sum(dim=1))
    return out


def score_from_split_sums(sums: torch.Tensor) -> tuple[float, float]:
    """``(mean, std)`` of ``exp(KL)`` over the parts, from ``split_sums`` of the whole set.

    Per part with n rows: ``mean_x KL(p(y|x) || p(y)) = (sum_x sum_y p log p) / n -
    sum_y p(y) log p(y)`` with ``p(y) = (sum_x p(y|x)) / n``.
    """
    count = sums[:, 0:1]
    if (count == 0).any():
        raise ValueError("every Inception Score split needs at least one image")
    py = sums[:, 1:-1] / count
    kl = sums[:, -1] / count[:, 0] - torch.xlogy(py, py).sum(dim=1)
    scores = torch.exp(kl).numpy()
    return float(scores.mean()), float(scores.std())


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score from classifier logits.

    Args:
        logits: (N, K) float array (pre-softmax), N >= splits.
        splits: number of contiguous parts (10 in the reference).

    Returns:
        ``(mean, std)`` over the parts, computed in float64.
    """
    n = int(torch.as_tensor(logits).shape[0])
    return score_from_split_sums(split_sums(logits, splits, n))


class LogitsAccumulator:
    """Collects (N, 1008) logits batch by batch (float32 on the CPU: 4 KB per image)."""

    def __init__(self) -> None:
        self._chunks: list[torch.Tensor] = []
        self.num_images = 0

    def feed(self, logits: torch.Tensor) -> None:
        self._chunks.append(logits.detach().float().cpu())
        self.num_images += logits.shape[0]

    def logits(self) -> torch.Tensor:
        """(N, K) float32 CPU tensor of everything fed."""
        return torch.cat(self._chunks) if self._chunks else torch.zeros(0, 0)

    def value(self, splits: int = 10) -> tuple[float, float]:
        return inception_score(self.logits(), splits)
