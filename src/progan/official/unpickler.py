"""A restricted reader for the official ProGAN network pickles, without TensorFlow.

The official code (tkarras/progressive_growing_of_gans, ``misc.save_pkl``) pickles the tuple
``(G, D, Gs)`` of ``tfutil.Network`` objects. ``Network.__getstate__`` gives a plain dict:
``version`` (2), ``name``, ``static_kwargs`` (the build function's keyword arguments),
``build_module_src`` (the whole ``networks.py`` text), ``build_func_name`` (``G_paper`` or
``D_paper``) and ``variables``, a list of ``(local name, float32 array)`` pairs. The official
``__setstate__`` executes ``build_module_src``; this reader never does: the text is kept as a
string and only searched (:mod:`progan.official.mapping`).

:class:`RestrictedUnpickler` resolves only the globals in :data:`ALLOWED_GLOBALS` (the stub
network class, NumPy's array/dtype/scalar reconstructors under their NumPy 1 and NumPy 2 module
names, and ``_codecs.encode`` for protocol-2 bytes); any other global is refused before anything
is called, with an error naming the file and the global. Data types other than booleans,
integers and floats (object arrays above all) are refused as they are built.
"""

from __future__ import annotations

import importlib
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from progan.errors import CheckpointError


class UnsafePickleError(CheckpointError):
    """The pickle asks for something outside the allow-list (nothing of it was run)."""


class OfficialNetwork:
    """Stand-in for ``tfutil.Network``: stores the pickled state dict, runs nothing."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Refused(pickle.UnpicklingError):
    """An allowed global was called with arguments outside the format (nothing was run)."""


def _numpy_function(names: tuple[str, ...], attr: str) -> Any:
    for name in names:
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {attr} in {names}")  # pragma: no cover - numpy changed


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_SAFE_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def _checked_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in _SAFE_DTYPE_KINDS:
        raise _Refused(f"data type {dtype.str!r} refused (only numbers allowed)")
    return dtype


def _safe_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` restricted to numeric types given by a type string such as 'f4'."""
    if not isinstance(spec, str):
        raise _Refused(f"data type {spec!r} refused (only type strings allowed)")
    return _checked_dtype(np.dtype(spec, align=bool(align), copy=bool(copy)))


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused("only plain numpy arrays are allowed")
    return _RECONSTRUCT(subtype, shape, dtype)


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise _Refused("numpy scalar with unexpected arguments refused")
    return _SCALAR(_checked_dtype(dtype), data)


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype):
        raise _Refused("array buffer with unexpected arguments refused")
    return _FROMBUFFER(buffer, _checked_dtype(dtype), shape, order)


def _safe_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: str -> latin-1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only for latin-1 text")
    return text.encode("latin-1")


_RECONSTRUCT = _numpy_function(_MULTIARRAY, "_reconstruct")
_SCALAR = _numpy_function(_MULTIARRAY, "scalar")
_FROMBUFFER = _numpy_function(_NUMERIC, "_frombuffer")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("tfutil", "Network"): OfficialNetwork,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    **{(m, "_reconstruct"): _safe_reconstruct for m in _MULTIARRAY},
    **{(m, "scalar"): _safe_scalar for m in _MULTIARRAY},
    **{(m, "_frombuffer"): _safe_frombuffer for m in _NUMERIC},
    ("_codecs", "encode"): _safe_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("network", "Network"):  # the original Theano code's class
            raise CheckpointError(f"{self.source}: {THEANO_MESSAGE}")
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refused: the pickle asks for {module}.{name}, which is not "
                "part of the official network format (nothing in the file was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refused: persistent references are not allowed")


THEANO_MESSAGE = (
    "a network of the original Theano code (network.Network, a state without 'version'); "
    "only the TensorFlow-era format (version 2, the published karras2018iclr-*.pkl) is "
    "supported: convert it once with the official code (legacy.py: misc.load_pkl, then "
    "misc.save_pkl)"
)
STATE_KEYS = {"version", "name", "static_kwargs", "build_module_src", "build_func_name",
              "variables"}  # fmt: skip
THEANO_KEYS = {"build_func_spec", "param_values"}


@dataclass
class NetworkState:
    """One validated ``tfutil.Network`` state: ``variables`` maps each local name (e.g.
    ``8x8/Conv0/weight``) to a float32 array in the TF layout; ``role`` is G, D or Gs."""

    role: str
    name: str
    build_func_name: str
    static_kwargs: dict[str, Any]
    build_module_src: str
    variables: dict[str, np.ndarray]


def read_pickle(path: str | Path) -> tuple[NetworkState, NetworkState, NetworkState]:
    """(G, D, Gs) states of an official network pickle, validated; raises
    :class:`~progan.errors.CheckpointError` (or :class:`UnsafePickleError`) naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from exc
    try:
        loaded = RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except CheckpointError:
        raise
    except _Refused as exc:
        raise UnsafePickleError(f"{path}: refused: {exc} (nothing in the file was run)") from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a complete network pickle (truncated or corrupt: "
            f"{type(exc).__name__}: {exc})"
        ) from exc
    if not (
        isinstance(loaded, tuple)
        and len(loaded) == 3
        and all(type(n) is OfficialNetwork for n in loaded)
    ):
        raise CheckpointError(
            f"{path}: expected the official tuple (G, D, Gs) of tfutil.Network objects, got "
            f"{_describe(loaded)}"
        )
    return tuple(  # type: ignore[return-value]
        _validate_state(path, role, net.state)
        for role, net in zip(("G", "D", "Gs"), loaded, strict=True)
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, tuple):
        return f"a tuple of {len(obj)} ({', '.join(type(o).__name__ for o in obj)})"
    return f"a {type(obj).__name__}"


def _validate_state(path: Path, role: str, state: Any) -> NetworkState:
    where = f"{path}: network {role}"
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: state is a {type(state).__name__}, not a dict")
    if set(state) >= THEANO_KEYS and "version" not in state:
        raise CheckpointError(f"{where}: {THEANO_MESSAGE}")
    if state.get("version") != 2:
        raise CheckpointError(
            f"{where}: unknown state version {state.get('version')!r} (only 2 is known)"
        )
    if set(state) != STATE_KEYS:
        missing, extra = STATE_KEYS - set(state), set(state) - STATE_KEYS
        raise CheckpointError(
            f"{where}: state keys differ from the official format (missing "
            f"{sorted(missing)}, unexpected {sorted(extra)})"
        )
    for key in ("name", "build_module_src", "build_func_name"):
        if not isinstance(state[key], str):
            raise CheckpointError(f"{where}: {key} is not a string")
    kwargs = state["static_kwargs"]
    if not isinstance(kwargs, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str)))
        for k, v in kwargs.items()
    ):
        raise CheckpointError(f"{where}: static_kwargs is not a dict of plain settings")
    variables: dict[str, np.ndarray] = {}
    if not isinstance(state["variables"], list):
        raise CheckpointError(f"{where}: variables is not a list")
    for item in state["variables"]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise CheckpointError(f"{where}: variables holds {_describe(item)}, not (name, value)")
        name, value = item
        if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.kind != "f":
            raise CheckpointError(f"{where}: variable {name} is not a float array")
        if name in variables:
            raise CheckpointError(f"{where}: variable {name} appears twice")
        array = np.asarray(value, dtype=np.float32)
        if not np.isfinite(array).all():
            raise CheckpointError(f"{where}: variable {name} holds NaN or infinite values")
        variables[name] = array
    return NetworkState(
        role, state["name"], state["build_func_name"], dict(kwargs),
        state["build_module_src"], variables,
    )  # fmt: skip


def lod_of(path: Path, state: NetworkState) -> float:
    """The network's ``lod`` variable (level of detail: 0 = full resolution) as a float."""
    value = state.variables.get("lod")
    if value is None or value.shape != ():
        raise CheckpointError(f"{path}: network {state.role}: variable lod missing or not a scalar")
    lod = float(value)
    if not math.isfinite(lod):  # pragma: no cover - rejected above
        raise CheckpointError(f"{path}: network {state.role}: lod is not finite")
    return lod
