"""Metrics evaluated by several processes at once: who takes which images, and the merge.

``progan.metrics.api.evaluate(..., comm=...)`` runs every pass over the images (real and
generated) split across the ranks of a job: the pass's batches, in order, are dealt out in
contiguous blocks (rank 0 first, :func:`shard_range`). A rank therefore sees exactly the batches
one process would see at those positions -- the same generator seeds, the same dataset order,
and the same SWD patches, which are drawn per batch from a generator keyed by the index of the
batch's first image. Each metric's accumulator then merges across ranks
(``merge(comm, total)`` in ``progan.metrics.registry``):

* FID: float64 feature sums and outer products, re-centred on rank 0's shift, summed;
* MS-SSIM: the sum of pair scores and the number of pairs, summed (blocks start at even image
  indices, so the pairs are one process's pairs);
* Inception Score: per split, the sums of ``p(y|x)`` and of ``sum_y p log p``, summed;
* SWD: descriptors gathered to rank 0 in rank order (the sliced distances sort all of them).

Rank 0 computes the values and sends them to the others: every rank returns the same result,
equal to one process's up to float64 summation order.

``comm`` is anything with the :class:`Collectives` methods; the training loop passes its
``progan.train.distributed.Dist``. :class:`SingleProcess` is the one-rank case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from progan.errors import ProganError

__all__ = [
    "Collectives",
    "RankFailed",
    "SingleProcess",
    "from_rank_zero",
    "on_every_rank",
    "shard_range",
]

T = TypeVar("T")


class RankFailed(ProganError):
    """Another rank failed while the metrics were evaluated (this rank's work was fine)."""


class Collectives(Protocol):
    """The collective operations metrics need (blocking; every rank calls each in turn)."""

    rank: int
    world_size: int

    def broadcast_object(self, obj: Any = None, what: str = "") -> Any:
        """Rank 0's picklable ``obj`` on every rank."""

    def all_gather_object(self, obj: Any, what: str = "") -> list[Any]:
        """Every rank's picklable ``obj``, in rank order, on every rank."""

    def sum_tensors(self, tensors: list[torch.Tensor], what: str = "") -> None:
        """Replace each CPU tensor by its sum over ranks (in place)."""

    def gather_rows(self, tensor: torch.Tensor, what: str = "") -> list[torch.Tensor] | None:
        """Every rank's (n_r, ...) CPU tensor (n_r may differ) on rank 0, in rank order;
        None on the other ranks."""


class SingleProcess:
    """:class:`Collectives` of a job with one process (no communication)."""

    rank = 0
    world_size = 1

    def broadcast_object(self, obj: Any = None, what: str = "") -> Any:
        return obj

    def all_gather_object(self, obj: Any, what: str = "") -> list[Any]:
        return [obj]

    def sum_tensors(self, tensors: list[torch.Tensor], what: str = "") -> None:
        return None

    def gather_rows(self, tensor: torch.Tensor, what: str = "") -> list[torch.Tensor] | None:
        return [tensor]


def shard_range(total: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Image indices ``[lo, hi)`` of ``rank``'s block of a pass over ``total`` images.

    The ``ceil(total / batch_size)`` batches are dealt out in contiguous blocks whose sizes
    differ by at most one batch, the larger blocks first (so rank 0 has images whenever the
    pass has any); ``lo`` is a multiple of ``batch_size`` (or ``lo == hi == total`` for a
    rank left without a batch).
    """
    num_batches = -(-total // batch_size)
    per, extra = divmod(num_batches, world_size)
    first = rank * per + min(rank, extra)
    count = per + (1 if rank < extra else 0)
    return min(first * batch_size, total), min((first + count) * batch_size, total)


def on_every_rank(comm: Collectives, fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` on every rank, then agree on success before anyone goes on.

    A rank whose ``fn`` raised re-raises its own exception; the others raise
    :class:`RankFailed` naming it, instead of waiting in the next collective until its
    timeout. ``what`` says what was being done (for the message).
    """
    try:
        result, error, exc = fn(), None, None
    except Exception as e:  # every failure must reach the other ranks
        result, error, exc = None, f"{type(e).__name__}: {e}", e
    if comm.world_size == 1:
        if exc is not None:
            raise exc
        return result  # type: ignore[return-value]
    errors = comm.all_gather_object(error, what=what)
    if exc is not None:
        raise exc
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        rank, message = failed[0]
        raise RankFailed(f"rank {rank} of {comm.world_size} failed while {what}: {message}")
    return result  # type: ignore[return-value]


def from_rank_zero(comm: Collectives, fn: Callable[[], T], what: str) -> T:
    """``fn()`` computed on rank 0 and sent to every rank (it must be picklable). A failure
    on rank 0 (an interrupt included) is re-raised there and raised as :class:`RankFailed` on
    the others. The trainer's ``Dist.run_on_main`` is built on this."""
    if comm.rank != 0:
        error, result = comm.broadcast_object(None, what=f"waiting for rank 0 ({what})")
        if error is not None:
            raise RankFailed(f"rank 0 failed while {what}: {error}")
        return result
    try:
        result = fn()
    except BaseException as exc:
        if comm.world_size > 1:
            # best effort: the others may be gone already, and rank 0's own error matters
            with contextlib.suppress(Exception):
                comm.broadcast_object((f"{type(exc).__name__}: {exc}", None), what=what)
        raise
    if comm.world_size > 1:
        comm.broadcast_object((None, result), what=what)
    return result
