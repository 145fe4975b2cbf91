"""Tests of the Inception Score formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from progan.metrics.inception_score import LogitsAccumulator, inception_score


def _reference(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """Independent numpy version of openai/improved-gan's formula."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    scores = []
    n = p.shape[0]
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part) - np.log(py))).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def test_matches_numpy_formula():
    logits = np.random.default_rng(0).normal(0, 3, size=(1003, 1008))
    mean, std = inception_score(logits, splits=10)
    ref = _reference(logits, 10)
    assert mean == pytest.approx(ref[0], rel=1e-10)
    assert std == pytest.approx(ref[1], rel=1e-8)


def test_extremes():
    uniform = np.zeros((100, 1008))
    assert inception_score(uniform, 10) == pytest.approx((1.0, 0.0))
    k = 10
    confident = np.full((k * 10, 1008), -50.0)
    confident[np.arange(k * 10), np.arange(k * 10) % k] = 50.0  # each split: k classes
    mean, std = inception_score(confident, 10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0, abs=1e-6)


def test_accumulator():
    logits = torch.randn(40, 1008)
    acc = LogitsAccumulator()
    acc.feed(logits[:15])
    acc.feed(logits[15:])
    assert acc.value(4) == pytest.approx(_reference(logits.double().numpy(), 4), rel=1e-5)
    with pytest.raises(ValueError):
        inception_score(logits[:3], 10)
