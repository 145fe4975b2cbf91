"""2x resampling (nn/sampling.py) against F.avg_pool2d / F.interpolate, and its derivatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from progan.nn.layers import downsample2x, upsample2x
from progan.nn.sampling import box_downsample2x, upsample_nearest2x


def _x(shape=(2, 3, 6, 8), dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=gen, requires_grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_downsample_equals_avg_pool2d_in_value_and_gradient(dtype):
    x = _x(dtype=dtype)
    y, y_ref = box_downsample2x(x), F.avg_pool2d(x, 2)
    assert y.shape == (2, 3, 3, 4) and torch.equal(y, y_ref)
    gy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    (g_ref,) = torch.autograd.grad(y_ref, x, gy)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_upsample_equals_interpolate_nearest_in_value_and_gradient(dtype):
    x = _x((2, 3, 5, 7), dtype=dtype)
    y, y_ref = upsample_nearest2x(x), F.interpolate(x, scale_factor=2, mode="nearest")
    assert y.shape == (2, 3, 10, 14) and torch.equal(y, y_ref)
    gy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    (g_ref,) = torch.autograd.grad(y_ref, x, gy)
    if dtype == torch.float64:  # 4-term sums in another order: equal to rounding
        torch.testing.assert_close(g, g_ref, rtol=1e-14, atol=1e-14)
    else:
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("fn", [box_downsample2x, upsample_nearest2x])
def test_gradcheck_and_gradgradcheck(fn):
    x = _x((2, 2, 4, 6), dtype=torch.float64)
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


def test_second_derivative_through_downsample_equals_avg_pool2d():
    """A penalty on the input gradient of sum(w * down(x)^2): the downsample's backward is
    differentiated, as in D's gradient penalty."""
    x = _x((2, 3, 8, 8), dtype=torch.float64)
    w = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = []
    for fn in (box_downsample2x, lambda t: F.avg_pool2d(t, 2)):
        (gx,) = torch.autograd.grad((w * fn(x).square()).sum(), x, create_graph=True)
        out.append(torch.autograd.grad(gx.square().sum(), (x, w)))
    for a, r in zip(*out, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [box_downsample2x, upsample_nearest2x])
def test_channels_last_kept_in_value_and_gradient(fn):
    x = _x((2, 4, 6, 6)).detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = fn(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert g.is_contiguous(memory_format=torch.channels_last)
    xn = x.detach().contiguous().requires_grad_()
    y_ref = F.avg_pool2d(xn, 2) if fn is box_downsample2x else F.interpolate(xn, scale_factor=2)
    assert torch.equal(y, y_ref)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), xn)
    torch.testing.assert_close(g, g_ref)


def test_layers_use_them_and_odd_sizes_are_refused():
    x = _x((1, 2, 4, 4))
    assert downsample2x(x).grad_fn.__class__.__name__ == "_BoxDown2xBackward"
    assert torch.equal(upsample2x(x), upsample_nearest2x(x))
    with pytest.raises(ValueError, match="even"):
        box_downsample2x(torch.zeros(1, 1, 5, 4))
    with torch.no_grad():  # no autograd function needed then
        assert torch.equal(box_downsample2x(x), F.avg_pool2d(x, 2))
