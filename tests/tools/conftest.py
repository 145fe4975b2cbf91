"""Fixtures for the tools tests: a tiny stand-in generator (no dependency on progan.nn)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyGenerator(nn.Module):
    """Stand-in generator: latent (N, L) [+ label] -> tanh images (N, C, R, R) in [-1, 1]."""

    def __init__(self, latent_size: int = 8, resolution: int = 8, channels: int = 3, labels=0):
        super().__init__()
        self.latent_size = latent_size
        self.label_size = labels
        self.resolution = resolution
        self.channels = channels
        self.fc = nn.Linear(latent_size + labels, channels * resolution * resolution)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_size:
            assert labels is not None and labels.dtype == torch.int64
            z = torch.cat([z, nn.functional.one_hot(labels, self.label_size).float()], 1)
        x = self.fc(z).view(-1, self.channels, self.resolution, self.resolution)
        return torch.tanh(x)


@pytest.fixture
def tiny_generator() -> TinyGenerator:
    torch.manual_seed(0)
    return TinyGenerator().eval()


@pytest.fixture
def tiny_generator_cls() -> type[TinyGenerator]:
    return TinyGenerator
