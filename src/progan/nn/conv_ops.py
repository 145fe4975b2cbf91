"""Convolution and dense layer with an explicit, twice-differentiable backward.

Why: the WGAN-GP gradient penalty differentiates D twice (``autograd.grad(create_graph=True)``
then ``loss.backward()``). With ``F.conv2d``, PyTorch records the first backward as one
``convolution_backward`` call, and differentiating *that* goes through its generic
double-backward formula (autograd node ``ConvolutionBackwardBackward0``), which on a GPU lands on
slow kernels (26% of an H100 step in fp32, over half in bf16: ``/work/shared/ANCHORS.md``).

Here a convolution is three autograd functions, each a bilinear map whose backward is written
in terms of the other two:

* :class:`_Conv2d`            ``y  = conv(x, w) + b``
* :class:`_Conv2dInputGrad`   ``gx = conv_input_grad(gy, w)``   (adjoint of ``x -> conv(x, w)``)
* :class:`_Conv2dWeightGrad`  ``gw = conv_weight_grad(x, gy)``  (adjoint of ``w -> conv(x, w)``)

From ``<gy, conv(x, w)> = <conv_input_grad(gy, w), x> = <conv_weight_grad(x, gy), w>``:

* d/dx, d/dw of ``conv``             = ``conv_input_grad(gy, w)``, ``conv_weight_grad(x, gy)``;
* d/dgy, d/dw of ``conv_input_grad`` = ``conv(ggx, w)``,          ``conv_weight_grad(ggx, gy)``;
* d/dx, d/dgy of ``conv_weight_grad`` = ``conv_input_grad(gy, ggw)``, ``conv(x, ggw)``.

Every derivative of every order is therefore one ordinary forward convolution
(``F.conv2d``) or one half of an ordinary convolution backward
(``torch.ops.aten.convolution_backward`` with a one-entry output mask): the kernels that a
plain first-order training step already uses. The bias gradient is ``gy.sum((0, 2, 3))``.
NVlabs' ``conv2d_gradfix`` (StyleGAN2-ADA) uses the same idea; this is a separate
implementation.

Weight gradients are only computed when the running backward pass will use them (checked with
``torch._C._will_engine_execute_node``): the penalty's ``autograd.grad(..., mixed)`` needs
input gradients only, as PyTorch's own convolution node already knows.

The dense layer (:func:`linear`) gets the same treatment for uniformity, although PyTorch's
``F.linear`` backward is already made of differentiable matrix products.

Values: the forward is ``F.conv2d``/``F.linear`` itself (bit-identical); first derivatives are
the same kernels as PyTorch's (bit-identical on the CPU, see ``tests/nn/test_conv_ops.py``,
except the bias gradient, which is summed separately); second derivatives agree to float
rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from progan.config import CONV_IMPLS

Pair = tuple[int, int]


def _pair(v: int | tuple[int, int]) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _will_run(node: Any) -> bool:
    """Whether the backward pass now running will execute ``node`` (True when unknown)."""
    if node is None:
        return True
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (RuntimeError, AttributeError):
        return True


def _grad_node(t: torch.Tensor) -> Any:
    """The autograd node that receives ``t``'s gradient, or None when ``t`` needs none."""
    if not (t.requires_grad and torch.is_grad_enabled()):
        return None
    try:
        return torch.autograd.graph.get_gradient_edge(t).node
    except (RuntimeError, AttributeError):
        return None


def _input_grad(gy, w, x_like, stride, padding, dilation, groups):
    """conv_input_grad: gradient of sum(gy * conv(x, w)) w.r.t. x, shaped like ``x_like``."""
    return torch.ops.aten.convolution_backward(
        gy, x_like, w, None, stride, padding, dilation, False, (0, 0), groups,
        (True, False, False),
    )[0]  # fmt: skip


def _weight_grad(x, gy, w_like, stride, padding, dilation, groups):
    """conv_weight_grad: gradient of sum(gy * conv(x, w)) w.r.t. w, shaped like ``w_like``."""
    return torch.ops.aten.convolution_backward(
        gy, x, w_like, None, stride, padding, dilation, False, (0, 0), groups,
        (False, True, False),
    )[1]  # fmt: skip


class _Conv2d(torch.autograd.Function):
    """y = conv(x, w) + b. Inputs: x (N, C, H, W), w (O, C/groups, kh, kw), b (O,) or None."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups, w_node):
        ctx.conf = (stride, padding, dilation, groups)
        ctx.w_node = w_node
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        conf = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:
            gx = _Conv2dInputGrad.apply(gy, w, x.detach(), *conf)
        if need_w and _will_run(ctx.w_node):
            gw = _Conv2dWeightGrad.apply(x, gy, w.detach(), *conf)
        if need_b and ctx.has_bias:
            gb = gy.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


class _Conv2dInputGrad(torch.autograd.Function):
    """gx = conv_input_grad(gy, w); ``x_like`` only gives gx's shape and memory format."""

    @staticmethod
    def forward(ctx, gy, w, x_like, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups)
        ctx.save_for_backward(gy, w)
        return _input_grad(gy, w, x_like, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, ggx):
        gy, w = ctx.saved_tensors
        conf = ctx.conf
        g_gy = g_w = None
        if ctx.needs_input_grad[0]:
            g_gy = _Conv2d.apply(ggx, w, None, *conf, None)
        if ctx.needs_input_grad[1]:
            g_w = _Conv2dWeightGrad.apply(ggx, gy, w.detach(), *conf)
        return g_gy, g_w, None, None, None, None, None


class _Conv2dWeightGrad(torch.autograd.Function):
    """gw = conv_weight_grad(x, gy); ``w_like`` only gives gw's shape and memory format."""

    @staticmethod
    def forward(ctx, x, gy, w_like, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups)
        ctx.save_for_backward(x, gy)
        return _weight_grad(x, gy, w_like, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, ggw):
        x, gy = ctx.saved_tensors
        conf = ctx.conf
        g_x = g_gy = None
        if ctx.needs_input_grad[0]:
            g_x = _Conv2dInputGrad.apply(gy, ggw, x.detach(), *conf)
        if ctx.needs_input_grad[1]:
            g_gy = _Conv2d.apply(x, ggw, None, *conf, None)
        return g_x, g_gy, None, None, None, None, None


def _common_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the convolution runs in: autocast's when it is on for x's device, else x's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` with the explicit backward: x (N, C, H, W) float, weight
    (O, C/groups, kh, kw), bias (O,) or None -> (N, O, H', W'). Numeric padding only.

    Under autocast the three tensors are cast to autocast's dtype first (as ``F.conv2d`` does).
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d expects (N, C, H, W) input, got shape {tuple(x.shape)}")
    dtype = _common_dtype(x)
    x, weight = x.to(dtype), weight.to(dtype)
    bias = bias.to(dtype) if bias is not None else None
    conf = (_pair(stride), _pair(padding), _pair(dilation), int(groups))
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.conv2d(x, weight, bias, *conf)
    with torch.autocast(x.device.type, enabled=False):
        return _Conv2d.apply(x, weight, bias, *conf, _grad_node(weight))


class _Linear(torch.autograd.Function):
    """y = x @ w.T + b with x (N, I), w (O, I), b (O,) or None; backward in matrix products."""

    @staticmethod
    def forward(ctx, x, w, b, w_node):
        ctx.w_node = w_node
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:
            gx = gy.mm(w)
        if need_w and _will_run(ctx.w_node):
            gw = gy.t().mm(x)
        if need_b and ctx.has_bias:
            gb = gy.sum(dim=0)
        return gx, gw, gb, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for 2-D input with the explicit backward: x (N, I), weight (O, I),
    bias (O,) or None -> (N, O)."""
    if x.ndim != 2:
        raise ValueError(f"linear expects (N, in_features) input, got shape {tuple(x.shape)}")
    dtype = _common_dtype(x)
    x, weight = x.to(dtype), weight.to(dtype)
    bias = bias.to(dtype) if bias is not None else None
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return F.linear(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):
        return _Linear.apply(x, weight, bias, _grad_node(weight))


def check_conv_impl(impl: str) -> str:
    """``impl`` if it is one of :data:`CONV_IMPLS`, else ValueError."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}, got {impl!r}")
    return impl
