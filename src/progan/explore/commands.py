"""``progan explore CHECKPOINT``: start the explorer web app (optional extra
``pip install progan[explore]``).

The checkpoint is loaded (and any error reported) before Gradio is imported or a server
starts; a missing Gradio is reported with the command that installs it.
"""

from __future__ import annotations

import argparse

from progan.cli_options import add_device
from progan.errors import ProganError

__all__ = ["add_command", "cmd_explore", "require_gradio"]

INSTALL_HINT = "pip install 'progan[explore]'  (or: pip install gradio)"


def add_command(subparsers) -> None:
    """Register ``progan explore``."""
    p = subparsers.add_parser(
        "explore",
        help="interactive explorer of a generator in the browser (needs progan[explore])",
        description="A local web app on a generator snapshot, run folder or official .pkl: "
        "pages of samples by seed, interpolation between two of them on the latent "
        "hypersphere (slider or animation), a class selector for conditional generators "
        "(default: balanced, seed mod number of classes, as `progan generate`), the depth of "
        "snapshots taken before full growth, latents from `progan project`, PNG downloads at "
        "full resolution. Needs the "
        f"optional extra: {INSTALL_HINT}.",
    )
    p.add_argument("checkpoint", help="snapshot-*.safetensors or a run folder (newest snapshot)")
    p.add_argument("--best", action="store_true", help="a run folder's best snapshot (best.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=int, default=7860, help="port [7860]")
    p.add_argument(
        "--share",
        action="store_true",
        help="also open a public gradio.live link (off by default: the app stays local)",
    )
    p.add_argument("--page-size", type=int, default=16, help="samples per page [16]")
    add_device(p)
    p.set_defaults(func=cmd_explore)


def require_gradio():
    """The ``gradio`` module, or a :class:`ProganError` saying how to install it."""
    try:
        import gradio
    except ImportError as exc:
        raise ProganError(
            f"progan explore needs Gradio, which is not installed: {INSTALL_HINT}"
        ) from exc
    return gradio


def cmd_explore(args: argparse.Namespace) -> int:
    from progan.explore.model import Explorer
    from progan.generate import load_generator
    from progan.train.trainer import resolve_device

    if args.page_size < 1:
        raise ProganError("--page-size must be >= 1")
    device = resolve_device(args.device)
    G = load_generator(args.checkpoint, device, best=args.best)  # errors before any server
    require_gradio()
    from progan.explore.app import build_app, launch

    demo = build_app(Explorer(G, device), f"progan explorer: {args.checkpoint}", args.page_size)
    print(f"Serving on http://{args.host}:{args.port} (Ctrl-C stops it)")
    launch(demo, args.host, args.port, share=args.share)
    return 0
