"""Frechet Inception Distance (Heusel et al., 2017) on 2048-d Inception pool_3 features.

``FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64, with ``mu``/``S`` the mean
and unbiased (n - 1) covariance of the features, as pytorch-fid / TTUR. The matrix square root
trace is computed either with ``scipy.linalg.sqrtm`` (the reference; slow for 2048 dims) or,
by default, from symmetric eigendecompositions:
``tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(S1^(1/2) S2 S1^(1/2)))``, which is the same number for
covariance (PSD) matrices and takes a fraction of the time.

Feature statistics are accumulated in float64 while streaming (``FeatureStats``), so no feature
matrix is kept. Dataset statistics can be saved/loaded as ``.npz`` (``save_stats``,
``load_stats``; written atomically, read with ``allow_pickle=False``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from progan.fileio import atomic_write_bytes

__all__ = ["FeatureStats", "frechet_distance", "load_stats", "save_stats"]


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """``tr(sqrtm(S1 @ S2))`` as pytorch-fid (with its eps fallback for singular products)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(np.trace(covmean))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((S1 S2)^(1/2))`` for symmetric PSD S1, S2 via two symmetric eigendecompositions."""
    w, v = scipy.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    m = (m + m.T) / 2
    ev = scipy.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    method: str = "eigh",
    eps: float = 1e-6,
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.
        method: ``"eigh"`` (default, fast) or ``"sqrtm"`` (scipy.linalg.sqrtm, the reference).
        eps: diagonal offset used by the ``"sqrtm"`` fallback when the product is singular.

    Returns:
        The squared Frechet distance (this is what "FID" reports).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two sets of statistics have different dimensions")
    diff = mu1 - mu2
    if method == "sqrtm":
        tr = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        raise ValueError(f"unknown method {method!r} (use 'eigh' or 'sqrtm')")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr)


class FeatureStats:
    """Streaming mean and covariance of feature vectors, accumulated in float64.

    ``feed`` (N, D) tensors (any float dtype, any device; accumulation happens on that device in
    float64, shifted by the first batch's mean for accuracy); ``mean()`` is (D,) and ``cov()``
    the unbiased (D, D) covariance, both float64 numpy arrays.
    """

    def __init__(self) -> None:
        self.num = 0
        self._shift: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._outer: torch.Tensor | None = None

    @torch.no_grad()
    def feed(self, features: torch.Tensor) -> None:
        x = features.detach().to(torch.float64)
        if x.ndim != 2:
            raise ValueError(f"need (N, D) features, got {tuple(x.shape)}")
        if self._shift is None:
            self._shift = x.mean(dim=0)
            self._sum = torch.zeros_like(self._shift)
            self._outer = x.new_zeros(x.shape[1], x.shape[1])
        x = x - self._shift.to(x.device)
        self._sum += x.sum(dim=0)
        self._outer += x.T @ x
        self.num += x.shape[0]

    @property
    def shift(self) -> torch.Tensor | None:
        """The (D,) float64 vector the sums are taken about (the first batch's mean)."""
        return self._shift

    def sums_about(self, center: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum (x - c), sum (x - c)(x - c)^T)`` over the fed features, about ``c`` =
        ``center`` (D,): float64 CPU tensors (zeros when nothing was fed). Sums about one
        common centre add up across sets (how ranks merge their statistics)."""
        c = center.to(torch.float64).cpu()
        if self._sum is None:
            return torch.zeros_like(c), torch.zeros(c.numel(), c.numel(), dtype=torch.float64)
        n = self.num
        d = self._shift.cpu() - c
        s = self._sum.cpu()
        total = s + n * d
        outer = self._outer.cpu() + torch.outer(d, s) + torch.outer(s, d) + n * torch.outer(d, d)
        return total, outer

    def load_sums(
        self, num: int, center: torch.Tensor, total: torch.Tensor, outer: torch.Tensor
    ) -> None:
        """Replace the statistics by ``num`` features summed about ``center`` (as
        ``sums_about`` returns them, e.g. added up over ranks)."""
        self.num = int(num)
        self._shift = center.to(torch.float64)
        self._sum = total.to(self._shift.device, torch.float64)
        self._outer = outer.to(self._shift.device, torch.float64)

    def mean(self) -> np.ndarray:
        if self._sum is None:
            raise ValueError("no features were fed")
        return ((self._sum / self.num) + self._shift).cpu().numpy()

    def cov(self) -> np.ndarray:
        if self.num < 2:
            raise ValueError("a covariance needs at least two feature vectors")
        m = self._sum / self.num
        c = (self._outer - self.num * torch.outer(m, m)) / (self.num - 1)
        return c.cpu().numpy()


def save_stats(
    path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, meta: dict[str, Any]
) -> Path:
    """Atomically write ``mu``, ``sigma`` and a JSON ``meta`` string to an ``.npz`` file."""
    buf = io.BytesIO()
    np.savez(
        buf,
        mu=np.asarray(mu, np.float64),
        sigma=np.asarray(sigma, np.float64),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    return atomic_write_bytes(path, buf.getvalue())


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read ``(mu, sigma, meta)`` written by ``save_stats`` (or pytorch-fid's mu/sigma .npz)."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
        return f["mu"].astype(np.float64), f["sigma"].astype(np.float64), meta
