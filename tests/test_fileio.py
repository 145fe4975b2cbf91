"""Atomic writes: all or nothing, no temporary files left, ordinary permissions."""

import os
import stat

import pytest

from progan.fileio import atomic_write, atomic_write_bytes, atomic_write_json


def test_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(path, b"old")
    atomic_write_bytes(path, b"new content")
    assert path.read_bytes() == b"new content"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["x.bin"]


def test_failure_keeps_old_file_and_removes_temporary(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})

    def fail(f):
        f.write(b"{partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, fail)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert os.listdir(tmp_path) == ["x.json"]
