"""Data-parallel training on ``torch.distributed``: several GPUs, several nodes.

Launch with ``torchrun --nproc_per_node=N -m progan train ...`` (one node) or with torchrun's
rendezvous across nodes; ``progan train --gpus N`` starts N local workers itself
(:mod:`progan.train.launch`). :func:`init_from_env` reads torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins the process group:
NCCL for CUDA tensors and gloo for CPU tensors (one process group ``cpu:gloo,cuda:nccl`` on
GPU machines, plain gloo elsewhere), every collective with a timeout.

How N ranks compute the update of one process with the whole global batch (see
docs/ARCHITECTURE.md, "Distributed training"):

* every rank draws the random numbers of the *global* batch from the shared RNG (same seed, same
  draws) and keeps its rows (:func:`shard_offsets`), and reads only its own real images;
* the rows are chosen so that each minibatch-stddev group of the global batch lies inside one
  rank (exactly, when the group size divides the per-rank batch);
* gradients are averaged over ranks (:mod:`progan.train.gradients`): per-rank mean losses
  averaged over equal shards are the global mean loss.

Weights, Adam states, EMA, schedule position and RNG therefore stay identical on all ranks, and
rank 0's checkpoint is the same as one process would write: a run resumes with any number of
ranks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from progan.errors import ConfigError, ProganError
from progan.metrics.parallel import from_rank_zero
from progan.train.launch import launch_local as launch_local  # its home before the split

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 300.0
# Ranks wait this long for rank 0's snapshot and checkpoint (or its loading of a checkpoint)
# and for each other in the metrics' exchanges; a rank that dies is noticed at once, this only
# bounds a *hung* rank.
SLOW_TIMEOUT_S = 3 * 3600.0
DEBUG_FAIL_ENV = "PROGAN_DEBUG_FAIL"  # "RANK:STEP": raise on that rank at that step (tests)


class DistributedError(ProganError):
    """A collective operation failed or timed out (usually because another rank failed)."""


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when not launched by it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from exc


def env_rank() -> int:
    """``RANK`` set by torchrun (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0") or 0)


# --------------------------------------------------------------------------------------------
# How the global batch is split


def shard_offsets(batch: int, world: int, rank: int, group_size: int = 0) -> np.ndarray:
    """int64 offsets within a global batch of ``batch`` samples that ``rank`` of ``world``
    trains on, in the order of its local batch; the shards of all ranks are disjoint and
    cover the batch.

    The minibatch-stddev layer (:class:`progan.nn.layers.MinibatchStdDev`) puts sample ``n``
    of a batch of N into group ``n % (N // g)``. With ``g`` dividing the per-rank batch, rank
    ``r`` takes the groups ``r*M_r .. (r+1)*M_r - 1`` (``M_r`` = per-rank batch // g), laid out
    so that the layer forms exactly the same groups on the rank as on the whole batch. Otherwise
    (or without the layer) the rank takes a contiguous slice.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} of {world}")
    if batch % world:
        raise ConfigError(f"a global minibatch of {batch} does not split over {world} ranks")
    per = batch // world
    from progan.nn.layers import effective_group_size

    g = effective_group_size(batch, group_size) if group_size > 0 else 1
    if per % g:
        return np.arange(rank * per, (rank + 1) * per, dtype=np.int64)
    m, m_r = batch // g, per // g
    offsets = np.arange(g)[:, None] * m + rank * m_r + np.arange(m_r)[None, :]
    return offsets.reshape(-1).astype(np.int64)


def groups_stay_exact(batch: int, world: int, group_size: int) -> bool:
    """Whether the minibatch-stddev groups on the ranks are those of one process."""
    if group_size <= 0 or batch % world:
        return True
    from progan.nn.layers import effective_group_size

    return (batch // world) % effective_group_size(batch, group_size) == 0


def check_batch_sizes(segments: list[Any], world: int, group_size: int) -> list[str]:
    """Raise :class:`ConfigError` naming the first phase whose global minibatch does not
    split over ``world`` ranks; return warnings for phases whose stddev groups differ from
    one process's."""
    warnings = []
    for seg in segments:
        kind = "fade-in" if seg.fading else "stabilization"
        name = f"{kind} phase at {seg.resolution}x{seg.resolution}"
        if seg.batch_size % world:
            raise ConfigError(
                f"the {name} ({seg.start_kimg:g}-{seg.end_kimg:g} kimg) has a global minibatch "
                f"of {seg.batch_size}, which does not split evenly over {world} ranks; use a "
                f"minibatch that is a multiple of {world} (--batch, or schedule.minibatch)"
            )
        if not groups_stay_exact(seg.batch_size, world, group_size):
            warnings.append(
                f"{name}: {seg.batch_size // world} images per rank is not a multiple of the "
                f"minibatch-stddev group size; groups form within each rank's images, so "
                f"training differs slightly from one process with the same global minibatch"
            )
    return warnings


# --------------------------------------------------------------------------------------------
# The process group


class Dist:
    """This process's place in a data-parallel job and the collectives the trainer uses.

    Every collective is wrapped so that a failure or timeout becomes a
    :class:`DistributedError` naming this rank and saying that another rank probably failed.
    """

    def __init__(
        self, rank: int, world_size: int, local_rank: int, timeout_s: float, owns_group: bool
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.timeout_s = float(timeout_s)
        self.owns_group = owns_group
        self.cpu = torch.device("cpu")
        # A gloo group with a long timeout for waiting on rank 0's files and checkpoint loading
        # and for the metrics' exchanges (a CPU group also carries the pickled objects).
        with self.guard("creating the process group for waiting on rank 0"):
            self.slow_group = dist.new_group(
                backend="gloo", timeout=timedelta(seconds=max(self.timeout_s, SLOW_TIMEOUT_S))
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world_size={self.world_size})"

    # devices

    def device_for(self, name: str) -> torch.device:
        """The training device of this rank for a ``--device`` value: ``auto``/``cuda``
        -> ``cuda:LOCAL_RANK`` (``auto`` falls back to the CPU); ``cpu`` -> CPU."""
        kind = torch.device("cuda" if name == "auto" else name).type
        if name == "auto" and not torch.cuda.is_available():
            kind = "cpu"
        if kind == "cpu":
            return self.cpu
        if kind != "cuda":
            raise ConfigError(f"device {name!r} is not supported for distributed training")
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} but CUDA is not available on rank {self.rank}")
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"rank {self.rank} has LOCAL_RANK {self.local_rank} but only "
                f"{torch.cuda.device_count()} GPUs are visible; start at most that many "
                "processes per node"
            )
        return torch.device("cuda", self.local_rank)

    # collectives

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a failing/timed-out collective into a clear :class:`DistributedError`."""
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, OSError) as exc:  # DistBackendError etc. are RuntimeErrors
            detail = (str(exc).strip().splitlines() or [repr(exc)])[0].strip("'\"")
            raise DistributedError(
                f"{what} failed or timed out (timeout {self.timeout_s:g} s) on rank "
                f"{self.rank} of {self.world_size}. Another rank has probably failed first; "
                f"see its message. Details: {detail}"
            ) from exc

    def broadcast_object(self, obj: Any = None, what: str = "waiting for rank 0") -> Any:
        """Rank 0's ``obj`` (picklable) on every rank, over the slow CPU group."""
        box = [obj if self.is_main else None]
        with self.guard(what):
            dist.broadcast_object_list(box, src=0, group=self.slow_group, device=self.cpu)
        return box[0]

    def all_gather_object(self, obj: Any, what: str = "exchanging results") -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, over the slow CPU group."""
        out: list[Any] = [None] * self.world_size
        with self.guard(what):
            dist.all_gather_object(out, obj, group=self.slow_group)
        return out

    def sum_tensors(self, tensors: list[torch.Tensor], what: str = "adding up") -> None:
        """Sum each CPU tensor over ranks in place, over the slow CPU group (metrics)."""
        with self.guard(what):
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.slow_group)

    def gather_rows(
        self, tensor: torch.Tensor, what: str = "gathering"
    ) -> list[torch.Tensor] | None:
        """Every rank's (n_r, ...) CPU tensor on rank 0, in rank order (None elsewhere);
        ``n_r`` may differ between ranks. Over the slow CPU group (metrics)."""
        rows = self.all_gather_object(int(tensor.shape[0]), what)
        padded = tensor.new_zeros((max(rows), *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in rows] if self.is_main else None
        with self.guard(what):
            dist.gather(padded, parts, dst=0, group=self.slow_group)
        if parts is None:
            return None
        return [p[:n] for p, n in zip(parts, rows, strict=True)]

    def all_reduce_sum(self, tensor: torch.Tensor, what: str = "all-reduce") -> torch.Tensor:
        """In-place sum over ranks (NCCL for CUDA tensors, gloo for CPU tensors)."""
        with self.guard(what):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_tensors(self, tensors: list[torch.Tensor], what: str) -> None:
        """Overwrite ``tensors`` with rank 0's values."""
        with self.guard(what), torch.no_grad():
            for t in tensors:
                dist.broadcast(t, src=0)

    def run_on_main(self, fn: Callable[[], Any], what: str, share: bool = False) -> Any:
        """Run ``fn`` on rank 0 only while the others wait (on the slow group). A failure on
        rank 0 is re-raised there and reported on the others as a ``RankFailed`` error
        (``progan.metrics.parallel.from_rank_zero``). Returns ``fn()``'s result on rank 0,
        and on the others None, or with ``share`` rank 0's result (it must be picklable)."""
        if share:
            return from_rank_zero(self, fn, what)
        kept: list[Any] = []
        from_rank_zero(self, lambda: kept.append(fn()), what)  # sends None
        return kept[0] if kept else None

    # teardown

    def report_failure(self, exc: BaseException) -> None:
        """One clear line on stderr naming this rank (the first failing rank's line is the
        cause; the others usually report a failed collective)."""
        if isinstance(exc, KeyboardInterrupt):
            text = "interrupted"
        else:
            text = f"{type(exc).__name__}: {exc}"
        print(
            f"progan: rank {self.rank} of {self.world_size} failed: {text}",
            file=sys.stderr,
            flush=True,
        )

    def close(self, failed: bool = False) -> None:
        """Leave the process group (if we created it). After a failure this must not hang:
        the teardown runs in a helper thread that is abandoned after a few seconds."""
        if not (self.owns_group and dist.is_available() and dist.is_initialized()):
            return
        if not failed:
            with contextlib.suppress(RuntimeError):
                dist.destroy_process_group()
            return
        t = threading.Thread(target=_quiet_destroy, daemon=True)
        t.start()
        t.join(10.0)


def _quiet_destroy() -> None:
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist | None:
    """Join the job described by torchrun's environment; None for a single process.

    Uses an already initialized default process group as it is (and leaves it open).
    """
    if timeout_s <= 0:
        raise ConfigError(f"--dist-timeout must be > 0 seconds, got {timeout_s}")
    initialized = dist.is_available() and dist.is_initialized()
    if env_world_size() <= 1 and not (initialized and dist.get_world_size() > 1):
        return None
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if initialized:
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return Dist(rank, world, local_rank, timeout_s, owns_group=False)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set: start distributed "
            "training with torchrun (or progan train --gpus N)"
        )
    rank, world = env_rank(), env_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    if cuda and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)
    backend = "cpu:gloo,cuda:nccl" if cuda and dist.is_nccl_available() else "gloo"
    try:
        dist.init_process_group(
            backend=backend, timeout=timedelta(seconds=timeout_s), rank=rank, world_size=world
        )
    except (RuntimeError, ValueError, OSError) as exc:
        raise DistributedError(
            f"rank {rank} of {world}: could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend}): {exc}"
        ) from exc
    return Dist(rank, world, local_rank, timeout_s, owns_group=True)


def run_as_rank(fn: Callable[[Dist | None], T], timeout_s: float = DEFAULT_TIMEOUT_S) -> T:
    """``fn(dist)`` as one rank of the job torchrun started (``fn(None)`` outside torchrun):
    joins the process group (:func:`init_from_env`), prints a line naming this rank when
    ``fn`` fails, and leaves the group without hanging."""
    ctx = init_from_env(timeout_s)
    if ctx is None:
        return fn(None)
    failed = True
    try:
        result = fn(ctx)
        failed = False
        return result
    except BaseException as exc:
        ctx.report_failure(exc)
        raise
    finally:
        ctx.close(failed=failed)


def on_main_shared(dist: Dist | None, fn: Callable[[], T], what: str) -> T:
    """``fn()`` in a single process; data-parallel, rank 0 runs it and every rank gets the
    result (a rank-0 failure is reported on all ranks)."""
    if dist is None:
        return fn()
    return dist.run_on_main(fn, what, share=True)


def debug_fail_point(rank: int, step: int) -> None:
    """Raise on purpose when ``PROGAN_DEBUG_FAIL=RANK:STEP`` names this rank and step (for
    testing that a failing rank stops the whole job)."""
    spec = os.environ.get(DEBUG_FAIL_ENV)
    if not spec:
        return
    want_rank, _, want_step = spec.partition(":")
    if int(want_rank) == rank and int(want_step or 0) == step:
        raise RuntimeError(f"{DEBUG_FAIL_ENV}: injected failure on rank {rank} at step {step}")
