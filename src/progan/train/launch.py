"""``progan train --gpus N``: N local worker processes forming one job without torchrun
(rendezvous on a free localhost port, rank = local rank), with failure and signal handling."""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from progan.errors import ConfigError, ProganError


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(rank: int, world: int, port: int, fn: Callable[..., int], args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        GROUP_RANK="0",
    )
    if "OMP_NUM_THREADS" not in os.environ:  # do not oversubscribe the CPU cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        code = int(fn(*args) or 0)
    except ProganError as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.exit(code)


def launch_local(nprocs: int, fn: Callable[..., int], *args: Any, grace_s: float = 30.0) -> int:
    """Run ``fn(*args)`` in ``nprocs`` local worker processes forming one job (rank = local
    rank, rendezvous on a free localhost port), as ``torchrun --nproc_per_node`` would.

    ``fn`` and ``args`` must be picklable. When a worker fails, the others get SIGTERM and,
    after ``grace_s`` seconds, SIGKILL. SIGTERM to this process is passed on to the workers
    (which then checkpoint and stop together); Ctrl-C reaches them directly from the terminal.
    Returns 0, or the exit status of the first worker that failed.
    """
    if nprocs < 1:
        raise ConfigError(f"--gpus must be >= 1, got {nprocs}")
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [
        ctx.Process(target=_local_worker, args=(r, nprocs, port, fn, args), name=f"progan-rank{r}")
        for r in range(nprocs)
    ]

    def forward(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM:
            for p in procs:
                if p.is_alive() and p.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGTERM)

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            old[sig] = signal.signal(sig, forward)
    failed: tuple[int, int] | None = None
    try:
        for p in procs:
            p.start()
        running = set(range(nprocs))
        while running and failed is None:
            ready = multiprocessing.connection.wait(
                [procs[r].sentinel for r in running], timeout=1.0
            )
            for r in sorted(running):
                if procs[r].sentinel in ready:
                    procs[r].join(5.0)  # reap it: its exit status follows the sentinel
                code = procs[r].exitcode
                if code is None:
                    continue
                running.discard(r)
                if code != 0 and failed is None:
                    failed = (r, code)
    finally:
        _stop_all(procs, grace_s)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if failed is None:
        return 0
    rank, code = failed
    how = f"signal {-code}" if code < 0 else f"status {code}"
    print(
        f"Error: rank {rank} of {nprocs} exited with {how}; the other ranks were stopped.",
        file=sys.stderr,
        flush=True,
    )
    return code if code > 0 else 1


def _stop_all(procs: list[Any], grace_s: float) -> None:
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.terminate()
    deadline = time.time() + grace_s
    for p in alive:
        p.join(max(0.0, deadline - time.time()))
    for p in alive:
        if p.is_alive():
            p.kill()
            p.join()
