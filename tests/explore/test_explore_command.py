"""`progan explore` reports a bad checkpoint and a missing Gradio before any server starts."""

from __future__ import annotations

import sys

import pytest

import progan.explore.commands as commands
from progan.cli import build_parser, main


@pytest.fixture
def no_server(monkeypatch):
    """Fail the test if the command gets as far as building the app."""

    def refuse(*_args, **_kw):
        raise AssertionError("the server must not start")

    fake = type(sys)("progan.explore.app")
    fake.build_app = fake.launch = refuse
    monkeypatch.setitem(sys.modules, "progan.explore.app", fake)


def test_bad_checkpoint_path_is_a_clear_error(tmp_path, capsys, no_server):
    missing = tmp_path / "nope.safetensors"
    assert main(["explore", str(missing), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and str(missing) in err


def test_a_file_that_is_no_snapshot_is_a_clear_error(tmp_path, capsys, no_server):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["explore", str(bad), "--device", "cpu"]) == 2
    assert "not a valid safetensors file" in capsys.readouterr().err


def test_missing_gradio_says_how_to_install_it(snapshot, capsys, monkeypatch, no_server):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    assert main(["explore", str(snapshot), "--device", "cpu"]) == 2
    assert "pip install 'progan[explore]'" in capsys.readouterr().err


def test_sharing_is_off_by_default_and_host_is_local():
    args = build_parser().parse_args(["explore", "x"])
    assert args.share is False and args.host == "127.0.0.1" and args.port == 7860
    assert args.func is commands.cmd_explore


def test_core_modules_do_not_import_gradio():
    import subprocess

    code = (
        "import sys, progan.cli, progan.explore.commands, progan.explore.model, "
        "progan.tools.project_cli; progan.cli.build_parser(); "
        "print('gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
