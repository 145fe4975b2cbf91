"""``progan convert FILE.pkl OUT``: the command-line face of :func:`convert_official`."""

from __future__ import annotations

import argparse

from progan.official.convert import NETWORKS_FILE, SOURCE_FILE, convert_official


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``convert`` on the top-level sub-parsers."""
    p = subparsers.add_parser(
        "convert",
        help="convert an official ProGAN network pickle (karras2018iclr-*.pkl) to progan files",
        description="Read an official (G, D, Gs) network pickle without TensorFlow and without "
        "running anything in it, and write a new folder holding Gs as a progan snapshot "
        f"(snapshot-official.safetensors), G, D and Gs for --init-from ({NETWORKS_FILE}) and "
        f"where they came from ({SOURCE_FILE}).",
    )
    p.add_argument(
        "pickle", help="official network pickle, e.g. karras2018iclr-celebahq-1024x1024.pkl"
    )
    p.add_argument("out", help="new (or empty) output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    snapshot = convert_official(args.pickle, args.out)
    print(f"Wrote {snapshot}, {snapshot.parent / NETWORKS_FILE}, {snapshot.parent / SOURCE_FILE}")
    return 0
