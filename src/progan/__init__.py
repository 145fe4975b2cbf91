"""progan: Progressive Growing of GANs (Karras et al., ICLR 2018) in PyTorch.

Conventions used throughout the package:

* images fed to or produced by the networks are NCHW float tensors in [-1, 1];
* images stored in datasets or written to disk are NCHW (or CHW) uint8 in [0, 255];
* kimg = thousands of real images shown to the discriminator.
"""

__version__ = "0.1.0"
