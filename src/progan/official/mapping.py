"""Official ``G_paper``/``D_paper`` variables -> progan's Generator/Discriminator weights.

The official ``networks.py`` (TensorFlow) is the specification:

* Weights are stored *unscaled* when ``use_wscale``: the graph multiplies them at run time by
  ``gain / sqrt(fan_in)``, as progan's equalized layers do, with the same gains (sqrt(2); G's
  ``4x4/Dense`` sqrt(2)/4; ``ToRGB`` and D's ``Dense1`` 1). The February 2018 code used sqrt(2)
  on G's dense layer; the file's own ``build_module_src`` says which (:func:`dense_gain_factor`),
  and such weights are multiplied by 4 (exact in floating point) to fit progan's sqrt(2)/4.
* Layouts: conv kernels ``[kh, kw, in, out]`` (cross-correlation, 'SAME') -> progan
  ``[out, in, kh, kw]``; dense ``[in, out]`` -> ``[out, in]``; G's dense output is reshaped to
  NCHW ``[N, C, 4, 4]`` with one bias per feature map (progan's ``blocks.0.bias``).
* ``fused_scale=True``: G's ``Conv0_up`` (``[3, 3, out, in]``, a stride-2 transposed convolution
  of the kernel padded and summed to 4x4) equals nearest 2x upsampling + a 3x3 convolution with
  the kernel transposed to ``[out, in]`` and flipped in both spatial axes; D's ``Conv1_down``
  (kernel summed to 4x4 times 1/4, stride 2) equals a 3x3 convolution + 2x2 average pooling.
  Both map onto progan's ordinary layers (``tests/official`` checks the equality). In D the
  fused layer pools *before* its bias and leaky ReLU (the unfused one after), which
  ``NetworkConfig.d_pool_before_activation`` reproduces.
* ``lod`` (level of detail) -> depth and fade: ``depth = max_depth - floor(lod)``,
  ``alpha = 1 - frac(lod)`` (lod is clipped to [0, max_depth], as the graph's ``lerp_clip``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from progan.config import NetworkConfig
from progan.errors import CheckpointError
from progan.official.unpickler import NetworkState, lod_of

# static_kwargs progan follows; any other key (structure, is_template_graph, G's copy of
# mbstd_group_size, ...) does not change what the paper's networks compute.
_G_DEFAULTS = {
    "num_channels": 1, "resolution": 32, "label_size": 0, "fmap_base": 8192,
    "fmap_decay": 1.0, "fmap_max": 512, "latent_size": None, "normalize_latents": True,
    "use_wscale": True, "use_pixelnorm": True, "pixelnorm_epsilon": 1e-8,
    "use_leakyrelu": True, "dtype": "float32", "fused_scale": True,
}  # fmt: skip
_D_DEFAULTS = {
    "num_channels": 1, "resolution": 32, "label_size": 0, "fmap_base": 8192,
    "fmap_decay": 1.0, "fmap_max": 512, "use_wscale": True, "mbstd_group_size": 4,
    "dtype": "float32", "fused_scale": True,
}  # fmt: skip
_SHARED = ("num_channels", "resolution", "label_size", "fmap_base", "fmap_decay", "fmap_max",
           "use_wscale")  # fmt: skip


def settings(path: Path, state: NetworkState) -> dict[str, Any]:
    """The build function's effective keyword arguments (defaults filled in)."""
    defaults = {"G_paper": _G_DEFAULTS, "D_paper": _D_DEFAULTS}.get(state.build_func_name)
    if defaults is None:
        raise CheckpointError(
            f"{path}: network {state.role} is built by {state.build_func_name!r}; only the "
            "paper's networks (G_paper, D_paper) are supported"
        )
    kw = {k: state.static_kwargs.get(k, v) for k, v in defaults.items()}
    if kw["dtype"] != "float32":
        raise CheckpointError(f"{path}: network {state.role}: dtype {kw['dtype']!r} unsupported")
    if state.build_func_name == "G_paper":
        if not kw["use_leakyrelu"]:
            raise CheckpointError(f"{path}: network {state.role}: ReLU generators unsupported")
        if kw["pixelnorm_epsilon"] != 1e-8:
            raise CheckpointError(
                f"{path}: network {state.role}: pixelnorm_epsilon {kw['pixelnorm_epsilon']} "
                "unsupported (progan uses 1e-8)"
            )
    res = kw["resolution"]
    if not isinstance(res, int) or res < 8 or res > 1024 or res & (res - 1):
        raise CheckpointError(f"{path}: network {state.role}: resolution {res} unsupported")
    return kw


def _nf(kw: dict[str, Any], stage: int) -> int:
    return min(int(kw["fmap_base"] / (2.0 ** (stage * kw["fmap_decay"]))), kw["fmap_max"])


def network_config(path: Path, g: NetworkState, d: NetworkState) -> NetworkConfig:
    """One :class:`NetworkConfig` for the file's G (and Gs) and D."""
    gk, dk = settings(path, g), settings(path, d)
    if g.build_func_name != "G_paper" or d.build_func_name != "D_paper":
        raise CheckpointError(f"{path}: expected (G_paper, D_paper, G_paper) networks")
    for key in _SHARED:
        if gk[key] != dk[key]:
            raise CheckpointError(f"{path}: G and D disagree on {key} ({gk[key]} vs {dk[key]})")
    if _nf(dk, 0) != _nf(dk, 1):
        raise CheckpointError(
            f"{path}: D's Dense0 has {_nf(dk, 0)} outputs but its 4x4 block {_nf(dk, 1)}; "
            "progan's discriminator needs them equal (true of every published network)"
        )
    if gk["num_channels"] not in (1, 3):
        raise CheckpointError(f"{path}: {gk['num_channels']} image channels unsupported")
    latent = gk["latent_size"] if gk["latent_size"] is not None else _nf(gk, 0)
    group = dk["mbstd_group_size"]
    return NetworkConfig(
        resolution=gk["resolution"],
        channels=gk["num_channels"],
        label_size=gk["label_size"],
        latent_size=latent,
        fmap_base=gk["fmap_base"],
        fmap_decay=float(gk["fmap_decay"]),
        fmap_max=gk["fmap_max"],
        mbstd_group_size=group if group > 1 else 0,  # the official layer needs a group of 2+
        pixelnorm=bool(gk["use_pixelnorm"]),
        equalized_lr=bool(gk["use_wscale"]),
        normalize_latents=bool(gk["normalize_latents"]),
        d_pool_before_activation=bool(dk["fused_scale"]),
    )


_DENSE_SCOPE = re.compile(r"variable_scope\(['\"]Dense['\"]\):(.*?)(?:variable_scope|$)", re.S)


def dense_gain_factor(path: Path, state: NetworkState) -> float:
    """Multiplier that brings G's stored ``4x4/Dense`` weights to progan's gain sqrt(2)/4:
    1 when the file's ``networks.py`` text gives that layer ``gain=np.sqrt(2)/4`` (or the
    weights are stored scaled, ``use_wscale=False``), 4 when it gives no gain (the default
    sqrt(2), as the February 2018 code did) or ``gain=np.sqrt(2)``. The text is only
    searched, never run."""
    if not state.static_kwargs.get("use_wscale", True):
        return 1.0
    src = state.build_module_src
    start = src.find("def G_paper(")
    match = _DENSE_SCOPE.search(src, start) if start >= 0 else None
    if match is None:
        raise CheckpointError(
            f"{path}: network {state.role}: cannot find G_paper's Dense layer in the file's "
            "networks.py text (build_module_src), so its gain is unknown"
        )
    call = re.sub(r"\s", "", match.group(1))
    if "gain=np.sqrt(2)/4" in call:
        return 1.0
    if "gain=" not in call or re.search(r"gain=np\.sqrt\(2\)[,)]", call):
        return 4.0
    raise CheckpointError(
        f"{path}: network {state.role}: G_paper's Dense layer has an unknown gain in the file's "
        "networks.py text"
    )


def _take(path: Path, state: NetworkState, name: str, shape: tuple[int, ...]) -> np.ndarray:
    value = state.variables.get(name)
    if value is None:
        raise CheckpointError(f"{path}: network {state.role}: variable {name} is missing")
    if value.shape != shape:
        raise CheckpointError(
            f"{path}: network {state.role}: variable {name} has shape {list(value.shape)}, "
            f"expected {list(shape)}"
        )
    return value


class _Reader:
    """Takes variables by name with their expected shapes and remembers which were used."""

    def __init__(self, path: Path, state: NetworkState) -> None:
        self.path, self.state, self.used = path, state, {"lod"}

    def conv(self, name: str, k: int, cin: int, cout: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = _take(self.path, self.state, f"{name}/weight", (k, k, cin, cout))
        return torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), self.bias(name, cout)

    def conv_up(self, name: str, cin: int, cout: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = _take(self.path, self.state, f"{name}/weight", (3, 3, cout, cin))
        flipped = w.transpose(2, 3, 0, 1)[:, :, ::-1, ::-1]  # [out, in, kh, kw], flipped
        return torch.from_numpy(flipped.copy()), self.bias(name, cout)

    def dense(self, name: str, cin: int, cout: int) -> torch.Tensor:
        w = _take(self.path, self.state, f"{name}/weight", (cin, cout))
        self.used.add(f"{name}/weight")
        return torch.from_numpy(w.T.copy())

    def bias(self, name: str, n: int) -> torch.Tensor:
        self.used.update((f"{name}/weight", f"{name}/bias"))
        return torch.from_numpy(_take(self.path, self.state, f"{name}/bias", (n,)).copy())

    def check_all_used(self) -> None:
        extra = sorted(set(self.state.variables) - self.used)
        if extra:
            raise CheckpointError(
                f"{self.path}: network {self.state.role}: unexpected variable {extra[0]}"
                + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                + " for its settings"
            )


def _res(depth: int) -> str:
    r = 4 * 2**depth
    return f"{r}x{r}"


def _put(out: dict[str, torch.Tensor], key: str, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    out[f"{key}.weight"], out[f"{key}.bias"] = pair


def _start(path: Path, state: NetworkState) -> tuple[bool, _Reader, dict[str, torch.Tensor]]:
    """(fused_scale, a reader of the state's variables, an empty progan state dict)."""
    return bool(settings(path, state)["fused_scale"]), _Reader(path, state), {}


def generator_state_dict(
    path: Path, state: NetworkState, cfg: NetworkConfig
) -> dict[str, torch.Tensor]:
    """progan ``Generator`` weights from a ``G_paper`` state (G or Gs)."""
    fused, rd, out = _start(path, state)
    c0 = cfg.num_features(0)
    dense = rd.dense("4x4/Dense", cfg.latent_size + cfg.label_size, 16 * c0)
    out["blocks.0.dense.weight"] = dense * dense_gain_factor(path, state)
    out["blocks.0.bias"] = rd.bias("4x4/Dense", c0)
    _put(out, "blocks.0.conv1", rd.conv("4x4/Conv", 3, c0, c0))
    for depth in range(1, cfg.max_depth + 1):
        cin, cout, res = cfg.num_features(depth - 1), cfg.num_features(depth), _res(depth)
        if fused:
            _put(out, f"blocks.{depth}.conv0", rd.conv_up(f"{res}/Conv0_up", cin, cout))
        else:
            _put(out, f"blocks.{depth}.conv0", rd.conv(f"{res}/Conv0", 3, cin, cout))
        _put(out, f"blocks.{depth}.conv1", rd.conv(f"{res}/Conv1", 3, cout, cout))
    for depth in range(cfg.max_depth + 1):
        name = f"ToRGB_lod{cfg.max_depth - depth}"
        _put(out, f"to_rgb.{depth}", rd.conv(name, 1, cfg.num_features(depth), cfg.channels))
    rd.check_all_used()
    return out


def discriminator_state_dict(
    path: Path, state: NetworkState, cfg: NetworkConfig
) -> dict[str, torch.Tensor]:
    """progan ``Discriminator`` weights from a ``D_paper`` state."""
    fused, rd, out = _start(path, state)
    for depth in range(cfg.max_depth + 1):
        name = f"FromRGB_lod{cfg.max_depth - depth}"
        _put(out, f"from_rgb.{depth}", rd.conv(name, 1, cfg.channels, cfg.num_features(depth)))
    for depth in range(1, cfg.max_depth + 1):
        ch, cout, res = cfg.num_features(depth), cfg.num_features(depth - 1), _res(depth)
        _put(out, f"blocks.{depth}.conv0", rd.conv(f"{res}/Conv0", 3, ch, ch))
        conv1 = f"{res}/Conv1_down" if fused else f"{res}/Conv1"
        _put(out, f"blocks.{depth}.conv1", rd.conv(conv1, 3, ch, cout))
    c0 = cfg.num_features(0)
    extra = 1 if cfg.mbstd_group_size > 0 else 0
    _put(out, "blocks.0.conv", rd.conv("4x4/Conv", 3, c0 + extra, c0))
    out["blocks.0.dense0.weight"] = rd.dense("4x4/Dense0", 16 * c0, c0)
    out["blocks.0.dense0.bias"] = rd.bias("4x4/Dense0", c0)
    out["blocks.0.dense1.weight"] = rd.dense("4x4/Dense1", c0, 1 + cfg.label_size)
    out["blocks.0.dense1.bias"] = rd.bias("4x4/Dense1", 1 + cfg.label_size)
    rd.check_all_used()
    return out


def depth_and_alpha(path: Path, state: NetworkState, max_depth: int) -> tuple[int, float]:
    """The progan depth and fade that compute what the network's ``lod`` selects."""
    lod = min(max(lod_of(path, state), 0.0), float(max_depth))
    whole = math.floor(lod)
    return max_depth - whole, 1.0 - (lod - whole)
