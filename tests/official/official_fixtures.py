"""Official-format network pickles built without TensorFlow, and a NumPy reference forward.

The fixtures follow the official code (tkarras/progressive_growing_of_gans): a module named
``tfutil`` with a ``Network`` class whose ``__getstate__`` returns the version-2 dict of
``tfutil.Network``; variables named and shaped as ``networks.py`` creates them in its linear
template graph (``lod`` first), or in the order of ``legacy.py`` (``lod`` last).

The reference forward (``g_paper``, ``d_paper``) is written from ``networks.py`` in NumPy
(float64) and uses no progan code: TF conv layouts, run-time He scaling, the stride-2
transposed convolution of ``Conv0_up``, the stride-2 convolution of ``Conv1_down``,
``lerp_clip`` fades by ``lod``.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np

SQRT2 = np.sqrt(2.0)

# A stand-in for the file's networks.py text: enough for the loader's search for G's dense
# gain; if anything ever executed it, it would create MARKER_NAME in the current folder.
MODULE_SRC = """
import os
open(os.path.join(os.getcwd(), 'EXECUTED_BUILD_MODULE_SRC'), 'w').close()

def G_paper(latents_in, labels_in, **kwargs):
    def block(x, res):
        if res == 2:
            with tf.variable_scope('Dense'):
                x = dense(x, fmaps=nf(res-1)*16, {gain}use_wscale=use_wscale)
            with tf.variable_scope('Conv'):
                x = conv2d(x, fmaps=nf(res-1), kernel=3, use_wscale=use_wscale)
        return x

def D_paper(images_in, **kwargs):
    pass
"""
MARKER_NAME = "EXECUTED_BUILD_MODULE_SRC"


def module_src(early_gain: bool | str = False) -> str:
    """early_gain: False = gain=np.sqrt(2)/4 (April 2018 on); True = no gain (February
    2018: the default sqrt(2)); a string = that text in place of the gain argument."""
    gain = (
        early_gain if isinstance(early_gain, str) else "" if early_gain else "gain=np.sqrt(2)/4, "
    )
    return MODULE_SRC.replace("{gain}", gain)


def nf(kw: dict, stage: int) -> int:
    return min(int(kw["fmap_base"] / (2.0 ** (stage * kw.get("fmap_decay", 1.0)))),
               kw["fmap_max"])  # fmt: skip


def _variable_list(rng: np.random.Generator, lod: float):
    """(list starting with lod, layer(name, weight shape, bias size) appending random values)."""
    out: list[tuple[str, object]] = [("lod", np.float32(lod))]

    def layer(name, shape, nbias):
        out.append((f"{name}/weight", rng.standard_normal(shape).astype(np.float32)))
        out.append((f"{name}/bias", (0.3 * rng.standard_normal(nbias)).astype(np.float32)))

    return out, layer


def g_variables(kw: dict, rng: np.random.Generator, lod: float) -> list[tuple[str, object]]:
    """G_paper's variables in template-graph order: lod, 4x4, ToRGB(4x4), then per res."""
    r2 = int(np.log2(kw["resolution"]))
    latent = kw.get("latent_size") or nf(kw, 0)
    fused = kw.get("fused_scale", True)
    ch = kw["num_channels"]
    out, layer = _variable_list(rng, lod)

    layer("4x4/Dense", (latent + kw.get("label_size", 0), nf(kw, 1) * 16), nf(kw, 1))
    layer("4x4/Conv", (3, 3, nf(kw, 1), nf(kw, 1)), nf(kw, 1))
    layer(f"ToRGB_lod{r2 - 2}", (1, 1, nf(kw, 1), ch), ch)
    for res in range(3, r2 + 1):
        cin, cout, s = nf(kw, res - 2), nf(kw, res - 1), f"{2**res}x{2**res}"
        if fused:
            layer(f"{s}/Conv0_up", (3, 3, cout, cin), cout)
        else:
            layer(f"{s}/Conv0", (3, 3, cin, cout), cout)
        layer(f"{s}/Conv1", (3, 3, cout, cout), cout)
        layer(f"ToRGB_lod{r2 - res}", (1, 1, cout, ch), ch)
    return out


def d_variables(kw: dict, rng: np.random.Generator, lod: float) -> list[tuple[str, object]]:
    """D_paper's variables in template-graph order: lod, FromRGB_lod0, per res, 4x4."""
    r2 = int(np.log2(kw["resolution"]))
    fused = kw.get("fused_scale", True)
    ch = kw["num_channels"]
    out, layer = _variable_list(rng, lod)
    layer("FromRGB_lod0", (1, 1, ch, nf(kw, r2 - 1)), nf(kw, r2 - 1))
    for res in range(r2, 2, -1):
        s = f"{2**res}x{2**res}"
        layer(f"{s}/Conv0", (3, 3, nf(kw, res - 1), nf(kw, res - 1)), nf(kw, res - 1))
        name = f"{s}/Conv1_down" if fused else f"{s}/Conv1"
        layer(name, (3, 3, nf(kw, res - 1), nf(kw, res - 2)), nf(kw, res - 2))
        layer(f"FromRGB_lod{r2 - res + 1}", (1, 1, ch, nf(kw, res - 2)), nf(kw, res - 2))
    mb = 1 if kw.get("mbstd_group_size", 4) > 1 else 0
    layer("4x4/Conv", (3, 3, nf(kw, 1) + mb, nf(kw, 1)), nf(kw, 1))
    layer("4x4/Dense0", (nf(kw, 1) * 16, nf(kw, 0)), nf(kw, 0))
    layer("4x4/Dense1", (nf(kw, 0), 1 + kw.get("label_size", 0)), 1 + kw.get("label_size", 0))
    return out


def official_state(name, func, kwargs, variables, src=None, version=2) -> dict:
    return {
        "version": version,
        "name": name,
        "static_kwargs": dict(kwargs),
        "build_module_src": src if src is not None else module_src(),
        "build_func_name": func,
        "variables": list(variables),
    }


def make_network_class(module_name: str = "tfutil", name: str = "Network"):
    """A class that pickles as ``module_name.name`` (registered in sys.modules while dumping)."""

    def getstate(self):
        return self._state

    cls = type(name, (), {"__getstate__": getstate, "__module__": module_name})
    cls.__qualname__ = name
    return cls


def dump_networks(path: Path, states: list[dict] | tuple, protocol: int = 4,
                  numpy1_names: bool = False, cls=None) -> Path:  # fmt: skip
    """Pickle ``states`` as a tuple of ``tfutil.Network`` objects, as misc.save_pkl did.
    ``numpy1_names`` (protocol 2 only) writes the NumPy 1 module names of 2018's files."""
    cls = cls or make_network_class()
    module = types.ModuleType(cls.__module__)
    setattr(module, cls.__qualname__, cls)
    saved = sys.modules.get(cls.__module__)
    sys.modules[cls.__module__] = module
    try:
        nets = []
        for state in states:
            net = object.__new__(cls)
            net._state = state
            nets.append(net)
        data = pickle.dumps(tuple(nets), protocol=protocol)
    finally:
        if saved is None:
            del sys.modules[cls.__module__]
        else:
            sys.modules[cls.__module__] = saved
    if numpy1_names:
        assert protocol == 2  # text GLOBAL opcodes: the names can be replaced in place
        data = data.replace(b"numpy._core.", b"numpy.core.")
    path.write_bytes(data)
    return path


def official_kwargs(resolution, fmap_base, fmap_max, channels=3, fused=False, **extra):
    """static_kwargs as legacy.py leaves them in the published files (G, D)."""
    g = dict(num_channels=channels, resolution=resolution, fmap_base=fmap_base,
             fmap_decay=1.0, fmap_max=fmap_max, latent_size=nf(
                 dict(fmap_base=fmap_base, fmap_max=fmap_max), 0),
             normalize_latents=True, use_wscale=True, use_pixelnorm=True,
             use_leakyrelu=True, fused_scale=fused, mbstd_group_size=16)  # fmt: skip
    d = dict(num_channels=channels, resolution=resolution, fmap_base=fmap_base,
             fmap_decay=1.0, fmap_max=fmap_max, use_wscale=True, fused_scale=fused,
             mbstd_group_size=16)  # fmt: skip
    g.update(extra)
    d.update({k: v for k, v in extra.items() if k in ("label_size", "mbstd_group_size")})
    return g, d


def write_official(path: Path, gk: dict, dk: dict, seed=0, lod=0.0, protocol=4,
                   lod_last=False, early_gain=False, numpy1_names=False):  # fmt: skip
    """A complete (G, D, Gs) file; returns (path, {role: {name: array}}, (G, D, Gs) states)."""
    rng = np.random.default_rng(seed)
    g_vars, d_vars, gs_vars = (g_variables(gk, rng, lod), d_variables(dk, rng, lod),
                               g_variables(gk, rng, lod))  # fmt: skip
    if lod_last:  # legacy.py appends lod after the layers
        g_vars, d_vars, gs_vars = (v[1:] + v[:1] for v in (g_vars, d_vars, gs_vars))
    src = module_src(early_gain)
    states = [official_state("G_paper", "G_paper", gk, g_vars, src),
              official_state("D_paper", "D_paper", dk, d_vars, src),
              official_state("G_paper", "G_paper", gk, gs_vars, src)]  # fmt: skip
    dump_networks(path, states, protocol=protocol, numpy1_names=numpy1_names)
    roles = {"G": g_vars, "D": d_vars, "Gs": gs_vars}
    arrays = {role: {k: np.asarray(v) for k, v in vs} for role, vs in roles.items()}
    return path, arrays, states


# --------------------------------------------------------------------------------------------
# NumPy reference of networks.py (float64)


def wscale(w, gain=SQRT2, fan_in=None):
    fan_in = np.prod(w.shape[:-1]) if fan_in is None else fan_in
    return w.astype(np.float64) * (gain / np.sqrt(fan_in))


def conv2d(x, w):
    """'SAME' cross-correlation, x NCHW, w [k, k, in, out]."""
    k = w.shape[0]
    p = k // 2
    n, _c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, w.shape[3], h, wd))
    for ky in range(k):
        for kx in range(k):
            out += np.einsum("nchw,co->nohw", xp[:, :, ky : ky + h, kx : kx + wd], w[ky, kx])
    return out


def summed_4x4(w):
    """networks.py's pad-by-one and sum of four shifted copies: 3x3 -> 4x4 kernel."""
    w = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
    return w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]


def upscale2d_conv2d(x, w):
    """TF conv2d_transpose, stride 2, 'SAME', of the summed kernel; w [3, 3, out, in]."""
    kern = summed_4x4(w)  # [4, 4, out, in]
    n, _c, h, wd = x.shape
    full = np.zeros((n, kern.shape[2], 2 * h + 2, 2 * wd + 2))
    for ky in range(4):
        for kx in range(4):
            full[:, :, ky : ky + 2 * h : 2, kx : kx + 2 * wd : 2] += np.einsum(
                "nchw,oc->nohw", x, kern[ky, kx]
            )
    return full[:, :, 1 : 1 + 2 * h, 1 : 1 + 2 * wd]  # SAME: one row/column cropped each side


def conv2d_downscale2d(x, w):
    """TF conv2d stride 2 'SAME' of the summed kernel times 1/4; w [3, 3, in, out]."""
    kern = summed_4x4(w) * 0.25
    n, _c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, kern.shape[3], h // 2, wd // 2))
    for ky in range(4):
        for kx in range(4):
            out += np.einsum(
                "nchw,co->nohw", xp[:, :, ky : ky + h : 2, kx : kx + wd : 2], kern[ky, kx]
            )
    return out


def upscale2d(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def downscale2d(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def pixel_norm(x):
    return x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-8)


def lrelu(x):
    return np.maximum(x * 0.2, x)


def bias(x, b):
    return x + (b.reshape(1, -1, 1, 1) if x.ndim == 4 else b)


def lerp_clip(a, b, t):
    return a + (b - a) * np.clip(t, 0.0, 1.0)


def g_paper(v: dict, kw: dict, latents, labels=None, early_gain=False):
    """G_paper (linear structure) on float64 latents; v maps local names to arrays."""
    r2 = int(np.log2(kw["resolution"]))
    lod = float(v["lod"])
    x = latents if labels is None else np.concatenate([latents, labels], axis=1)
    x = x.astype(np.float64)

    def block(x, res):
        s = f"{2**res}x{2**res}"
        if res == 2:
            x = pixel_norm(x)
            gain = SQRT2 if early_gain else SQRT2 / 4
            x = x @ wscale(v["4x4/Dense/weight"], gain)
            x = x.reshape(x.shape[0], -1, 4, 4)
            x = pixel_norm(lrelu(bias(x, v["4x4/Dense/bias"])))
            return pixel_norm(lrelu(bias(conv2d(x, wscale(v["4x4/Conv/weight"])),
                                         v["4x4/Conv/bias"])))  # fmt: skip
        if f"{s}/Conv0_up/weight" in v:
            w = v[f"{s}/Conv0_up/weight"]
            x = upscale2d_conv2d(x, wscale(w, fan_in=9 * w.shape[3]))
            x = pixel_norm(lrelu(bias(x, v[f"{s}/Conv0_up/bias"])))
        else:
            x = conv2d(upscale2d(x), wscale(v[f"{s}/Conv0/weight"]))
            x = pixel_norm(lrelu(bias(x, v[f"{s}/Conv0/bias"])))
        x = conv2d(x, wscale(v[f"{s}/Conv1/weight"]))
        return pixel_norm(lrelu(bias(x, v[f"{s}/Conv1/bias"])))

    def torgb(x, res):
        name = f"ToRGB_lod{r2 - res}"
        return bias(conv2d(x, wscale(v[f"{name}/weight"], 1.0)), v[f"{name}/bias"])

    x = block(x, 2)
    images = torgb(x, 2)
    for res in range(3, r2 + 1):
        x = block(x, res)
        images = lerp_clip(torgb(x, res), upscale2d(images), lod - (r2 - res))
    return images


def minibatch_stddev(x, group_size):
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, -1, c, h, w)
    y = y - y.mean(axis=0, keepdims=True)
    y = np.sqrt((y * y).mean(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # [M]
    y = np.tile(y.reshape(-1, 1, 1, 1), (g, 1, h, w))
    return np.concatenate([x, y], axis=1)


def d_paper(v: dict, kw: dict, images):
    """D_paper (linear structure): (scores [N, 1], label logits [N, label_size])."""
    r2 = int(np.log2(kw["resolution"]))
    lod = float(v["lod"])

    def fromrgb(x, res):
        name = f"FromRGB_lod{r2 - res}"
        return lrelu(bias(conv2d(x, wscale(v[f"{name}/weight"])), v[f"{name}/bias"]))

    def block(x, res):
        s = f"{2**res}x{2**res}"
        if res >= 3:
            x = lrelu(bias(conv2d(x, wscale(v[f"{s}/Conv0/weight"])), v[f"{s}/Conv0/bias"]))
            if f"{s}/Conv1_down/weight" in v:
                x = conv2d_downscale2d(x, wscale(v[f"{s}/Conv1_down/weight"]))
                return lrelu(bias(x, v[f"{s}/Conv1_down/bias"]))
            x = lrelu(bias(conv2d(x, wscale(v[f"{s}/Conv1/weight"])), v[f"{s}/Conv1/bias"]))
            return downscale2d(x)
        if kw.get("mbstd_group_size", 4) > 1:
            x = minibatch_stddev(x, kw["mbstd_group_size"])
        x = lrelu(bias(conv2d(x, wscale(v["4x4/Conv/weight"])), v["4x4/Conv/bias"]))
        x = x.reshape(x.shape[0], -1)
        x = lrelu(bias(x @ wscale(v["4x4/Dense0/weight"]), v["4x4/Dense0/bias"]))
        return bias(x @ wscale(v["4x4/Dense1/weight"], 1.0), v["4x4/Dense1/bias"])

    img = images.astype(np.float64)
    x = fromrgb(img, r2)
    for res in range(r2, 2, -1):
        x = block(x, res)
        img = downscale2d(img)
        x = lerp_clip(x, fromrgb(img, res - 1), lod - (r2 - res))
    out = block(x, 2)
    return out[:, :1], out[:, 1:]
