"""Hostile and damaged network pickles are refused with one clear error, running nothing."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
from official_fixtures import (
    MARKER_NAME,
    dump_networks,
    make_network_class,
    official_kwargs,
    official_state,
    write_official,
)

from progan.cli import main
from progan.errors import CheckpointError
from progan.generate import load_generator
from progan.official import convert_official, read_official
from progan.official.unpickler import UnsafePickleError


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that a marker file written by executed code would show."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _valid(tmp_path, name="net.pkl", **kw):
    gk, dk = official_kwargs(8, fmap_base=16, fmap_max=4)
    return write_official(tmp_path / name, gk, dk, **kw)


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_SystemCall, _Eval], ids=["os.system", "builtins.eval"])
def test_code_in_the_pickle_is_refused_and_never_runs(in_tmp, payload):
    marker = in_tmp / "PWNED"
    path = in_tmp / "evil.pkl"
    path.write_bytes(pickle.dumps((payload(marker), 1, 2), protocol=4))
    with pytest.raises(UnsafePickleError) as err:
        read_official(path)
    message = str(err.value)
    assert str(path) in message and "refused" in message
    assert ("system" in message) or ("builtins.eval" in message)
    assert not marker.exists()


def test_payload_inside_a_network_state_is_refused(in_tmp):
    marker = in_tmp / "PWNED"
    gk, _ = official_kwargs(8, fmap_base=16, fmap_max=4)
    state = official_state("G_paper", "G_paper", gk, [("lod", _SystemCall(marker))])
    path = dump_networks(in_tmp / "evil.pkl", [state, state, state])
    with pytest.raises(UnsafePickleError, match=r"(posix|nt)\.system"):
        read_official(path)
    assert not marker.exists()


def test_object_dtype_array_is_refused(in_tmp):
    gk, _ = official_kwargs(8, fmap_base=16, fmap_max=4)
    objects = np.array(["a", 1, None], dtype=object)
    state = official_state("G_paper", "G_paper", gk, [("lod", objects)])
    path = dump_networks(in_tmp / "objects.pkl", [state, state, state])
    with pytest.raises(UnsafePickleError, match=r"data type '\|O"):
        read_official(path)


@pytest.mark.parametrize(
    "module, name", [("tfutil", "NetworkSubclass"), ("evil", "Network"),
                     ("progan.official.unpickler", "OfficialNetwork")],
)  # fmt: skip
def test_only_tfutil_network_itself_is_accepted(in_tmp, module, name):
    """A subclass of the network class, the same name in another module, or our own stub
    named directly: all refused by name."""
    base = make_network_class()
    cls = type(name, (base,), {"__module__": module})
    cls.__qualname__ = name
    _, _, states = _valid(in_tmp)
    if module.startswith("progan"):
        from progan.official import unpickler

        path = in_tmp / "stub.pkl"
        nets = []
        for state in states:
            net = object.__new__(unpickler.OfficialNetwork)
            net.__dict__["_s"] = state
            nets.append(net)
        path.write_bytes(pickle.dumps(tuple(nets), protocol=4))
    else:
        path = dump_networks(in_tmp / "sub.pkl", states, cls=cls)
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        read_official(path)


def test_build_module_src_is_never_executed(in_tmp):
    path, _, _ = _valid(in_tmp)
    assert b"EXECUTED_BUILD_MODULE_SRC" in path.read_bytes()
    convert_official(path, in_tmp / "out")
    load_generator(path)
    assert not (in_tmp / MARKER_NAME).exists()


def test_truncated_and_empty_files(in_tmp):
    path, _, _ = _valid(in_tmp)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            read_official(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def _rewrite(in_tmp, edit, role=0):
    _, _, states = _valid(in_tmp, "src.pkl")
    states = [dict(s) for s in states]
    edit(states[role])
    return dump_networks(in_tmp / "bad.pkl", states)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda s: s.update(version=3), "network G: unknown state version 3"),
        (lambda s: s.pop("build_module_src"), "missing \\['build_module_src'\\]"),
        (
            lambda s: s.update(variables=[v for v in s["variables"] if v[0] != "8x8/Conv1/weight"]),
            "network G: variable 8x8/Conv1/weight is missing",
        ),
        (
            lambda s: s.update(variables=[
                (n, np.zeros((3, 3, 4, 5), np.float32) if n == "4x4/Conv/weight" else v)
                for n, v in s["variables"]]),
            "variable 4x4/Conv/weight has shape \\[3, 3, 4, 5\\], expected \\[3, 3, 4, 4\\]",
        ),
        (
            lambda s: s["variables"].append(("8x8/Conv0_up/weight", np.zeros(3, np.float32))),
            "unexpected variable 8x8/Conv0_up/weight",
        ),
        (
            lambda s: s["variables"].append(("lod", np.float32(0))),
            "variable lod appears twice",
        ),
        (
            lambda s: s.update(variables=[
                (n, np.full_like(v, np.nan) if n == "4x4/Conv/bias" else v)
                for n, v in s["variables"]]),
            "variable 4x4/Conv/bias holds NaN",
        ),
        (lambda s: s.update(build_func_name="G_mnist"), "only the paper's networks"),
        (lambda s: s["static_kwargs"].update(use_leakyrelu=False), "ReLU generators"),
    ],
    ids=["version", "keys", "missing", "shape", "extra", "duplicate", "nan", "func", "relu"],
)  # fmt: skip
def test_bad_states_name_the_file_network_and_variable(in_tmp, edit, pattern):
    path = _rewrite(in_tmp, edit)
    with pytest.raises(CheckpointError, match=pattern) as err:
        read_official(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_theano_era_state_says_what_to_do(in_tmp):
    theano = {"build_func_spec": {"func": "G_paper"}, "build_module_src": "",
              "param_values": [], "toplevel_params": {}}  # fmt: skip
    path = dump_networks(in_tmp / "theano.pkl", [theano] * 3)
    with pytest.raises(CheckpointError, match=r"original Theano code.*legacy\.py"):
        read_official(path)
    # as the Theano code pickled it: class network.Network (refused by name, same advice)
    path = dump_networks(in_tmp / "theano2.pkl", [theano] * 3, cls=make_network_class("network"))
    with pytest.raises(CheckpointError, match=r"original Theano code.*legacy\.py") as err:
        read_official(path)
    assert not isinstance(err.value, UnsafePickleError)


def test_other_shapes_of_pickle(in_tmp):
    _, _, states = _valid(in_tmp)
    path = dump_networks(in_tmp / "two.pkl", states[:2])
    with pytest.raises(CheckpointError, match="expected the official tuple"):
        read_official(path)
    (in_tmp / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CheckpointError, match="expected the official tuple"):
        read_official(in_tmp / "list.pkl")


def test_codecs_encode_only_for_latin1(in_tmp):
    # protocol 2 writes bytes as _codecs.encode(text, 'latin1'); any other use is refused
    import codecs

    mod = types.ModuleType("evilbytes")
    sys.modules["evilbytes"] = mod

    class Rot:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    Rot.__module__ = "evilbytes"
    mod.Rot = Rot
    try:
        data = pickle.dumps((Rot(),), protocol=2)
    finally:
        del sys.modules["evilbytes"]
    assert b"c_codecs\nencode" in data
    (in_tmp / "rot.pkl").write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"latin-1"):
        read_official(in_tmp / "rot.pkl")


def test_cli_prints_one_error_and_writes_nothing(in_tmp, capsys):
    marker = in_tmp / "PWNED"
    path = in_tmp / "evil.pkl"
    path.write_bytes(pickle.dumps((_SystemCall(marker),), protocol=2))
    assert main(["convert", str(path), str(in_tmp / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and "refused" in err and err.count("\n") == 1
    assert not (in_tmp / "out").exists() and not marker.exists()
    assert main(["generate", str(path), "--grid", str(in_tmp / "g.png")]) == 2
    assert not (in_tmp / "g.png").exists()
