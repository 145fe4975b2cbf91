"""The FID Inception-v3 (TensorFlow graph of 2015-12-05, as ported by pytorch-fid), in torch.

Built here without torchvision; module and parameter names match torchvision's ``Inception3``
(``num_classes=1008``, no auxiliary classifier) with pytorch-fid's FID patches, so the
reference state dict ``pt_inception-2015-12-05-6726825d.pth`` loads unchanged:

* the average pools inside ``Mixed_5b..5d``, ``Mixed_6b..6e`` and ``Mixed_7b`` exclude the
  zero padding from the average (TensorFlow behaviour);
* ``Mixed_7c`` pools its pool branch with a 3x3 *max* pool.

Preprocessing follows pytorch-fid: uint8 images -> ``x / 255`` -> bilinear resize to 299x299
(``align_corners=False``, no antialiasing) -> ``2 x - 1``. Grayscale images are repeated to
three channels.

Weights are looked up in this order: the ``path`` argument, ``$PROGAN_INCEPTION_WEIGHTS``, the
torch hub cache (``torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth``), and
otherwise downloaded there from pytorch-fid's release (sha256 prefix checked).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from progan.errors import ProganError

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "find_inception_weights",
    "load_inception",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
_SHA256_PREFIX = "6726825d"


class BasicConv2d(nn.Module):
    """Convolution (no bias) + batch norm (eps 1e-3) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that ignores the zero padding (TensorFlow's SAME pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features channels."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 384 + 96 + cin channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions -> 768 channels."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 320 + 192 + cin channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                      self.branch7x7x3_4):  # fmt: skip
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches -> 2048 channels; ``pool`` is "avg" or "max"."""

    def __init__(self, cin: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        t = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(t), self.branch3x3_2b(t)], 1)
        t = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(t), self.branch3x3dbl_3b(t)], 1)
        if self.pool == "max":
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            p = _avg_pool_tf(x)
        bp = self.branch_pool(p)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID / IS (23.8M parameters, 1008 output classes).

    ``forward(images)`` takes (N, C, H, W) uint8 images (C = 1 or 3, any size) and returns
    ``{"pool": (N, 2048) float32 pool_3 features, "logits": (N, 1008) float32}`` where the
    logits are ``pool @ fc.weight.T`` *without* the bias, as the reference Inception Score.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float32 (N, 3, 299, 299) in [-1, 1] (pytorch-fid's order)."""
        x = images.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"Inception needs 1 or 3 channels, got {x.shape[1]}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 299, 299) float in [-1, 1] -> (N, 2048) pool_3 features."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):  # fmt: skip
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = self.features(self.preprocess(images))
        logits = pool @ self.fc.weight.t()
        return {"pool": pool, "logits": logits}


def default_weights_path() -> Path:
    """Where the weights are looked for / downloaded: the torch hub checkpoint folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def find_inception_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Resolve the weights file (see the module docstring for the search order).

    Raises:
        ProganError: ``path`` does not exist, or the file is absent and cannot be downloaded
            (the message names the path to place it at).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ProganError(f"Inception weights not found: {p}")
        return p
    env = os.environ.get("PROGAN_INCEPTION_WEIGHTS")
    if env:
        return find_inception_weights(env, download=False)
    target = default_weights_path()
    if target.is_file():
        return target
    if not download:
        raise ProganError(
            f"Inception weights {FID_WEIGHTS_FILE} not found; place the file at {target} "
            f"(from {FID_WEIGHTS_URL}) or pass its path"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            FID_WEIGHTS_URL, str(target), hash_prefix=_SHA256_PREFIX, progress=True
        )
    except Exception as exc:  # offline, proxy, disk full, hash mismatch ...
        raise ProganError(
            f"could not download the Inception weights ({exc}); download {FID_WEIGHTS_URL} "
            f"and place it at {target}, or pass its path (--inception PATH)"
        ) from exc
    return target


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Strictly load ``state``; missing ``num_batches_tracked`` buffers are tolerated."""
    own = model.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ProganError(
            f"{origin} is not the FID Inception-v3 state dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {bad[:3]})"
        )
    model.load_state_dict(state, strict=True)


_LOADED: dict[tuple[str, str], FIDInceptionV3] = {}


def load_inception(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    random_weights: bool = False,
    download: bool = True,
) -> FIDInceptionV3:
    """The FID Inception-v3 in eval mode on ``device`` (cached per weights file and device).

    Args:
        path: weights file (None: search / download, see ``find_inception_weights``).
        device: torch device.
        random_weights: skip the weights (seeded random init; for benchmarks and tests only).
        download: allow downloading to the torch hub cache.
    """
    device = torch.device(device)
    if random_weights:
        key = ("<random>", str(device))
    else:
        key = (str(find_inception_weights(path, download=download).resolve()), str(device))
    net = _LOADED.get(key)
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = FIDInceptionV3()
        if not random_weights:
            try:
                state = torch.load(key[0], map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ProganError(f"cannot read the Inception weights {key[0]}: {exc}") from exc
            load_state_dict_checked(net, state, key[0])
        net = net.eval().requires_grad_(False).to(device)
        _LOADED[key] = net
    return net
