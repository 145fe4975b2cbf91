"""The explicit convolution / dense layer (nn/conv_ops.py) against F.conv2d / F.linear.

Values and first derivatives are compared exactly (float32, same kernels), second derivatives
to float rounding, and the functions' own derivatives are checked numerically in float64
(gradcheck / gradgradcheck) for every convolution shape that G and D use, plus strided,
dilated and grouped ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from progan.nn import conv_ops

# (kernel, padding, stride, dilation, groups)
NETWORK_CONVS = [
    (3, 1, 1, 1, 1),  # every 3x3 'same' convolution of G and D
    (1, 0, 1, 1, 1),  # toRGB / fromRGB
    (4, 0, 1, 1, 1),  # a 4x4 'valid' convolution (the paper's D head as a conv: 4x4 -> 1x1)
]
OTHER_CONVS = [
    (3, 1, 2, 1, 1),  # strided
    (3, 2, 1, 2, 1),  # dilated
    (3, 1, 1, 1, 2),  # grouped
    (2, 0, 2, 1, 4),  # strided depthwise (a learnable 2x2 downsample)
]


def _tensors(kernel, groups, dtype, size=(6, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, *size, dtype=dtype, generator=gen, requires_grad=True)
    w = torch.randn(8, 4 // groups, kernel, kernel, dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn(8, dtype=dtype, generator=gen, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize("conf", NETWORK_CONVS + OTHER_CONVS)
def test_gradcheck_and_gradgradcheck_float64(conf):
    k, p, s, d, g = conf
    x, w, b = _tensors(k, g, torch.float64)

    def fn(x, w, b):
        return conv_ops.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=g)

    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("conf", NETWORK_CONVS + OTHER_CONVS)
def test_equals_f_conv2d_in_value_first_and_second_derivatives(conf):
    k, p, s, d, g = conf
    x, w, b = _tensors(k, g, torch.float32, size=(8, 8))
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    y_ref = F.conv2d(x, w, b, **kw)
    y = conv_ops.conv2d(x, w, b, **kw)
    assert torch.equal(y, y_ref)
    gy = torch.randn_like(y)
    ref = torch.autograd.grad(y_ref, (x, w, b), gy, create_graph=True)
    got = torch.autograd.grad(y, (x, w, b), gy, create_graph=True)
    assert torch.equal(got[0], ref[0])  # input gradient: the same backward-data kernel
    assert torch.equal(got[1], ref[1])  # weight gradient: the same backward-filter kernel
    torch.testing.assert_close(got[2], ref[2])  # bias: a separate sum, rounding only
    # second derivatives (of a penalty on the first derivatives), in float64 where the two
    # summation orders agree to ~1e-15
    x, w, b = (t.detach().double().requires_grad_() for t in (x, w, b))
    gy = gy.double()
    sec = []
    for fn in (F.conv2d, conv_ops.conv2d):
        gx, gw = torch.autograd.grad(fn(x, w, b, **kw), (x, w), gy, create_graph=True)
        sec.append(torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, w)))
    for a, r in zip(*sec, strict=True):
        assert r.abs().max() > 0
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_linear_matches_f_linear_and_is_twice_differentiable():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert gradcheck(conv_ops.linear, (x, w, b))
    assert gradgradcheck(conv_ops.linear, (x, w, b))
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, b))
    y, y_ref = conv_ops.linear(x32, w32, b32), F.linear(x32, w32, b32)
    assert torch.equal(y, y_ref)
    gy = torch.randn_like(y)
    for a, r in zip(
        torch.autograd.grad(y, (x32, w32, b32), gy),
        torch.autograd.grad(y_ref, (x32, w32, b32), gy),
        strict=True,
    ):
        torch.testing.assert_close(a, r, rtol=1e-6, atol=1e-6)


def _node_names(t: torch.Tensor) -> set[str]:
    """Names of every autograd node reachable from t.grad_fn."""
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def test_penalty_graph_has_no_generic_convolution_double_backward():
    """The graph of a first-order input gradient (what the penalty's second backward walks):
    native conv2d records ConvolutionBackwardBackward0 (PyTorch's generic double backward);
    the explicit one only records its own three functions."""
    x, w, b = _tensors(3, 1, torch.float32)
    names = {}
    for label, fn in (("native", F.conv2d), ("explicit", conv_ops.conv2d)):
        y = fn(x, w * 1.5, b, padding=1)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        names[label] = _node_names(gx)
    assert "ConvolutionBackwardBackward0" in names["native"]
    assert not any(n.startswith("Convolution") for n in names["explicit"])
    assert {"_Conv2dBackward", "_Conv2dInputGradBackward"} <= names["explicit"]


def test_weight_gradient_skipped_when_only_input_gradient_is_asked(monkeypatch):
    calls = []
    real = conv_ops._weight_grad
    monkeypatch.setattr(conv_ops, "_weight_grad", lambda *a: calls.append(1) or real(*a))
    x, w, b = _tensors(3, 1, torch.float32)
    w2 = w * 2.0  # a scaled weight (non-leaf), as the equalized layers pass it
    y = conv_ops.conv2d(x, w2, b, padding=1)
    torch.autograd.grad(y.sum(), x, retain_graph=True)
    assert calls == []
    torch.autograd.grad(y.sum(), (x, w), retain_graph=True)
    assert calls == [1]
    y.sum().backward()
    assert calls == [1, 1] and w.grad is not None


def test_bf16_autocast_runs_in_bf16_and_matches_native():
    x, w, b = _tensors(3, 1, torch.float32, size=(8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv_ops.conv2d(x, w, b, padding=1)
        y_ref = F.conv2d(x, w, b, padding=1)
        assert y.dtype == y_ref.dtype == torch.bfloat16
        (gx,) = torch.autograd.grad(y.float().square().sum(), x, create_graph=True)
        (gx_ref,) = torch.autograd.grad(y_ref.float().square().sum(), x, create_graph=True)
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=2e-2, atol=2e-2)
    gw = torch.autograd.grad(gx.square().sum(), w)[0]
    gw_ref = torch.autograd.grad(gx_ref.square().sum(), w)[0]
    assert gw.dtype == torch.float32
    torch.testing.assert_close(gw, gw_ref, rtol=5e-2, atol=5e-2)


def test_channels_last_keeps_layout_and_equals_native_channels_last():
    x, w, b = _tensors(3, 1, torch.float32, size=(8, 8))
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    wc = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y, y_ref = conv_ops.conv2d(xc, wc, b, padding=1), F.conv2d(xc, wc, b, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, y_ref)
    gx, gw = torch.autograd.grad(y.square().sum(), (xc, wc))
    gx_ref, gw_ref = torch.autograd.grad(y_ref.square().sum(), (xc, wc))
    assert gx.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(gx, gx_ref) and torch.equal(gw, gw_ref)
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1), rtol=1e-5, atol=1e-5)


def test_no_grad_and_bad_input():
    x, w, b = _tensors(1, 1, torch.float32)
    with torch.no_grad():
        assert torch.equal(conv_ops.conv2d(x, w, b), F.conv2d(x, w, b))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        conv_ops.conv2d(x[0], w, b)
    with pytest.raises(ValueError, match="conv_impl"):
        conv_ops.check_conv_impl("cudnn")
