"""Gradient averaging over ranks: :class:`GradientReducer`, DDP's bucketed all-reduce for
networks that run several forward passes per backward pass (see docs/ARCHITECTURE.md,
"Gradient averaging"). One reducer per network; used by the training step
(:mod:`progan.train.step`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.distributed as dist

from progan.train.distributed import Dist, DistributedError

BUCKET_BYTES = 25 * 2**20


class _Bucket:
    __slots__ = ("flat", "indices", "numels", "pending", "work")

    def __init__(self, indices: list[int], numels: list[int], flat: torch.Tensor) -> None:
        self.indices = indices
        self.numels = numels
        self.flat = flat
        self.pending = 0
        self.work: Any = None


class _Layout:
    def __init__(self, buckets: list[_Bucket]) -> None:
        self.buckets = buckets
        self.bucket_of = {i: b for b, bucket in enumerate(buckets) for i in bucket.indices}
        self.next = 0

    def reset(self) -> None:
        self.next = 0
        for bucket in self.buckets:
            bucket.pending = len(bucket.indices)
            bucket.work = None


class GradientReducer:
    """Averages a module's gradients over all ranks, in buckets of about ``bucket_bytes``.

    Use ``begin(key)`` before ``loss.backward()`` and ``finish()`` after it (before the
    optimizer step). ``key`` names the set of parameters that get gradients (the phase: the
    networks are static and run only the active blocks). The first step of a key averages all
    gradients after the backward pass and records the order in which they became ready (rank 0's
    order is used everywhere); later steps of that key start each bucket's asynchronous
    all-reduce from a post-accumulate-grad hook as soon as its gradients are ready, in a fixed
    bucket order on all ranks, so communication overlaps the rest of the backward pass.
    Parameters without a gradient keep ``grad = None`` (so Adam skips them, as in one process).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        ctx: Dist,
        bucket_bytes: int = BUCKET_BYTES,
        overlap: bool = True,
    ) -> None:
        self.ctx = ctx
        self.params = list(module.parameters())
        self.bucket_bytes = int(bucket_bytes)
        self.overlap = overlap
        self._layouts: dict[Hashable, _Layout] = {}
        self._layout: _Layout | None = None
        self._key: Hashable = None
        self._active = False
        self._ready: list[int] = []
        self._handles = []
        if overlap:
            for i, p in enumerate(self.params):
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook(i)))

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def hook(_param: torch.Tensor) -> None:
            if self._active:
                self._on_ready(index)

        return hook

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def begin(self, key: Hashable) -> None:
        self._key = key
        self._ready = []
        self._layout = self._layouts.get(key)
        if self._layout is not None:
            self._layout.reset()
        self._active = True

    def _on_ready(self, index: int) -> None:  # runs inside the backward pass
        self._ready.append(index)
        lay = self._layout
        if lay is None:
            return
        b = lay.bucket_of.get(index)
        if b is None:
            return
        lay.buckets[b].pending -= 1
        while lay.next < len(lay.buckets) and lay.buckets[lay.next].pending == 0:
            self._launch(lay.buckets[lay.next])
            lay.next += 1

    def _launch(self, bucket: _Bucket) -> None:
        """Flatten the bucket's gradients (zeros where None), pre-divide, start all-reduce."""
        flat, offset = bucket.flat, 0
        for i, n in zip(bucket.indices, bucket.numels, strict=True):
            grad = self.params[i].grad
            if grad is None:
                flat[offset : offset + n].zero_()
            else:
                flat[offset : offset + n].copy_(grad.reshape(-1))
            offset += n
        flat.div_(self.ctx.world_size)
        with self.ctx.guard("gradient all-reduce"):
            bucket.work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)

    def finish(self) -> None:
        self._active = False
        lay = self._layout
        if lay is None:
            lay = self._new_layout()
        extra = [
            i for i, p in enumerate(self.params) if p.grad is not None and i not in lay.bucket_of
        ]
        while lay.next < len(lay.buckets):
            self._launch(lay.buckets[lay.next])
            lay.next += 1
        extra_bucket = None
        if extra:  # the graph changed within a phase: average these too, re-plan next time
            self._layouts.pop(self._key, None)
            extra_bucket = self._make_bucket(extra)
            self._launch(extra_bucket)
        for bucket in [*lay.buckets, *([extra_bucket] if extra_bucket else [])]:
            with self.ctx.guard("gradient all-reduce"):
                bucket.work.wait()
            offset = 0
            for i, n in zip(bucket.indices, bucket.numels, strict=True):
                grad = self.params[i].grad
                if grad is not None:
                    grad.copy_(bucket.flat[offset : offset + n].view_as(grad))
                offset += n
            bucket.work = None

    def _make_bucket(self, indices: list[int]) -> _Bucket:
        numels = [self.params[i].numel() for i in indices]
        p0 = self.params[indices[0]]
        flat = torch.empty(sum(numels), dtype=p0.dtype, device=p0.device)
        return _Bucket(indices, numels, flat)

    def _new_layout(self) -> _Layout:
        """Buckets over the parameters that have gradients, in rank 0's readiness order."""
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        ready = [i for i in self._ready if self.params[i].grad is not None]
        if sorted(ready) != have:  # no hooks (overlap off): reverse registration order
            ready = have[::-1]
        order = self.ctx.broadcast_object(ready, what="agreeing on gradient buckets")
        if sorted(order) != have:
            raise DistributedError(
                f"rank {self.ctx.rank}: the parameters with gradients differ between ranks in "
                f"phase {self._key} ({len(have)} here, {len(order)} on rank 0)"
            )
        buckets, current, size = [], [], 0
        for i in order:
            p = self.params[i]
            same_kind = not current or (
                p.dtype == self.params[current[0]].dtype
                and p.device == self.params[current[0]].device
            )
            nbytes = p.numel() * p.element_size()
            if current and (size + nbytes > self.bucket_bytes or not same_kind):
                buckets.append(self._make_bucket(current))
                current, size = [], 0
            current.append(i)
            size += nbytes
        if current:
            buckets.append(self._make_bucket(current))
        lay = _Layout(buckets)
        lay.reset()
        self._layouts[self._key] = lay
        return lay
