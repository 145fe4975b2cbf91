"""``TrainConfig.compile``: torch.compile of the parts of a training step that need no double
backward.

What is compiled (train/step.py uses them):

* G's forward, in both steps (no-grad in the D step; forward and backward in the G step);
* D's forward in the G step: a separate compiled callable over the same module (so the same
  parameters), with D frozen there (no weight gradients, first-order input gradients only).

What is not: D's calls in the D step, and above all the gradient penalty's, which is
differentiated twice (``autograd.grad(create_graph=True)`` then ``backward``); AOTAutograd
does not compile a double backward. Inside a compiled graph D's ``conv_impl="explicit"``
layers run ``F.conv2d`` (``torch.compiler.is_compiling()``, nn/layers.py): the explicit
backward exists only for the double backward, and the values are the same.

Each compiled callable holds one graph per (depth, fading or not, minibatch size, grad mode):
shapes are static (``dynamic=False``), and while a block fades in, alpha goes in as a 0-d
tensor on the device (:meth:`CompiledCalls.alpha`), so that a new alpha every step is new
data, not a recompilation. The networks' forwards cast that tensor to their activations'
dtype (under bf16 autocast alpha is then rounded to bf16).

Where compiling cannot work (no C++ compiler for inductor's CPU code, no Triton for CUDA),
:func:`compile_calls` finds out with a tiny probe, warns once and the step runs eagerly; a
compiled call that fails later falls back to eager the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# Graphs per compiled callable: up to 9 depths x (stable, fade) x (no-grad, grad) for G,
# plus the schedule's few minibatch sizes; PyTorch's default limit is 8.
RECOMPILE_LIMIT = 64

_warned = False


def _warn_eager(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"--compile: torch.compile does not work here ({reason}); training runs eagerly",
            RuntimeWarning,
            stacklevel=3,
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the latter before PyTorch 2.6
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
            return


def probe(device: torch.device) -> str | None:
    """None when torch.compile (inductor) compiles and runs a forward and backward on
    ``device``; else why not."""
    try:
        fn = torch.compile(lambda x: (x * 2.0 + 1.0).square().sum(), dynamic=False)
        x = torch.ones(4, device=device, requires_grad=True)
        fn(x).backward()
        if x.grad is None or float(x.grad[0]) != 12.0:
            return "the probe computed a wrong gradient"
    except Exception as exc:  # any failure of the compiler toolchain
        return _reason(exc)
    finally:
        torch._dynamo.reset()
    return None


class _Fallback:
    """A compiled callable that turns into the eager module after the first failure."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.compiled: Callable[..., Any] | None = torch.compile(module, dynamic=False)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:
                self.compiled = None
                _warn_eager(_reason(exc))
        return self.module(*args)


class CompiledCalls:
    """``generator(z, labels, depth, alpha)`` and ``discriminator_g_step(x, depth, alpha)``:
    the compiled forwards of G and D; pass ``alpha(a)`` as their alpha."""

    def __init__(self, G: nn.Module, D: nn.Module, device: torch.device) -> None:
        _raise_recompile_limit()
        self.generator = _Fallback(G)
        self.discriminator_g_step = _Fallback(D)
        self._alpha = torch.zeros((), device=device)

    def alpha(self, a: float) -> float | torch.Tensor:
        """1.0 when stable (part of the graph); during a fade a 0-d device tensor holding
        ``a`` (filled in place: no host-device copy, no new graph per value)."""
        if a >= 1.0:
            return 1.0
        return self._alpha.fill_(a)


def compile_calls(G: nn.Module, D: nn.Module, device: torch.device) -> CompiledCalls | None:
    """The compiled calls, or None (with one warning) when torch.compile does not work here."""
    reason = probe(device)
    if reason is not None:
        _warn_eager(reason)
        return None
    return CompiledCalls(G, D, device)
