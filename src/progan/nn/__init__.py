"""Networks: layers (equalized LR, pixel norm, minibatch stddev), generator, discriminator."""

from progan.nn.discriminator import Discriminator
from progan.nn.generator import Generator

__all__ = ["Discriminator", "Generator"]
