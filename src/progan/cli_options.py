"""The command-line options that several commands share, added one way everywhere.

Each command keeps its own help text (and, for ``--device``, its default); these helpers fix
the option's name, type and action, so that ``--seed`` is always an int defaulting to 0,
``--quiet`` always a flag, and so on. Used by :mod:`progan.cli` and the ``commands`` modules of
``data``, ``metrics``, ``tools`` and ``experiments``.
"""

from __future__ import annotations

import argparse

AUTO_DEVICE_HELP = "cuda, cpu or auto [auto]"


def add_device(
    p: argparse.ArgumentParser, help: str | None = AUTO_DEVICE_HELP, default: str | None = "auto"
) -> None:
    """``--device``: a torch device name (``auto``: CUDA when available)."""
    p.add_argument("--device", default=default, help=help)


def add_seed(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--seed``: an int, 0 by default."""
    p.add_argument("--seed", type=int, default=0, help=help)


def add_quiet(p: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    """``--quiet``: no progress bars."""
    p.add_argument("--quiet", action="store_true", help=help)


def add_json(p: argparse.ArgumentParser, help: str, to_file: bool = False) -> None:
    """``--json``: print JSON (a flag), or with ``to_file`` write it to the given path."""
    if to_file:
        p.add_argument("--json", help=help)
    else:
        p.add_argument("--json", action="store_true", help=help)


def add_inception(
    p: argparse.ArgumentParser, help: str = "Inception weights file (optional)"
) -> None:
    """``--inception``: the path of the Inception weights (found or downloaded when absent)."""
    p.add_argument("--inception", default=None, help=help)


def add_fid_preprocess(p: argparse.ArgumentParser, default: str | None = "tf") -> None:
    """``--fid-preprocess tf|pytorch-fid``: the FID/IS Inception's input convention."""
    from progan.config import FID_PREPROCESS

    p.add_argument(
        "--fid-preprocess",
        choices=list(FID_PREPROCESS),
        default=default,
        help="FID/IS Inception input convention: tf = the TensorFlow graph's resize and "
        "scaling, comparable with the paper, TTUR, NVIDIA and torch-fidelity; pytorch-fid = "
        "pytorch-fid's [tf]",
    )
