"""Colour conversion, decoding errors and the square transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from progan.data.images import (
    BadImageError,
    decode_image,
    fit_to_square,
    natural_channels,
    to_uint8_hwc,
)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_grayscale_to_three_channels_and_back():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "L")
    assert natural_channels(gray) == 1
    rgb = to_uint8_hwc(gray, 3)
    assert rgb.shape == (8, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], np.asarray(gray))
    np.testing.assert_array_equal(to_uint8_hwc(gray)[:, :, 0], np.asarray(gray))
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    luma = to_uint8_hwc(red, 1)
    assert luma.shape == (4, 4, 1) and int(luma[0, 0, 0]) == 76  # 0.299 * 255


def test_rgba_composited_over_black():
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[0, 0] = (200, 100, 50, 255)  # opaque: kept
    arr[0, 1] = (200, 100, 50, 0)  # transparent: black
    arr[1, 0] = (200, 100, 50, 128)  # half: scaled towards black
    out = to_uint8_hwc(Image.fromarray(arr, "RGBA"))
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 100, 50)
    assert tuple(out[0, 1]) == (0, 0, 0)
    np.testing.assert_allclose(out[1, 0], np.array([200, 100, 50]) * 128 / 255, atol=1)
    # the same rule for grayscale + alpha, and for a raw 4-channel array
    la = Image.fromarray(np.array([[[90, 0], [90, 255]]], np.uint8), "LA")
    assert to_uint8_hwc(la).reshape(-1).tolist() == [0, 90]
    assert tuple(to_uint8_hwc(arr)[0, 1]) == (0, 0, 0)


def test_palette_images_expanded():
    pal = Image.new("P", (3, 1))
    pal.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    pal.putdata([0, 1, 0])
    assert natural_channels(pal) == 3
    out = to_uint8_hwc(pal)
    assert out[0].tolist() == [[10, 20, 30], [200, 0, 0], [10, 20, 30]]
    pal.info["transparency"] = 1  # colour 1 transparent -> black
    decoded = decode_image(_png_bytes(pal), "p.png")
    assert to_uint8_hwc(decoded)[0].tolist() == [[10, 20, 30], [0, 0, 0], [10, 20, 30]]


def test_sixteen_bit_grayscale_scaled():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert natural_channels(img) == 1
    assert to_uint8_hwc(img)[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty file"), (b"this is not an image", "not a readable image")],
)
def test_decode_errors_name_the_file(data, reason):
    with pytest.raises(BadImageError, match=reason) as info:
        decode_image(data, "folder/x.png")
    assert info.value.name == "folder/x.png"
    assert "folder/x.png" in str(info.value)


def test_truncated_png_is_bad():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    data = _png_bytes(Image.fromarray(noise))
    with pytest.raises(BadImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], "t.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit grayscale pixels (no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    """A tiny file that claims 100,000 x 100,000 pixels (10 GB decoded) is reported as too
    large, without allocating the image."""
    data = _png_header_only(100_000, 100_000)
    assert len(data) < 100
    with pytest.raises(BadImageError, match="image too large") as info:
        decode_image(data, "bomb.png")
    assert "bomb.png" in str(info.value)


def test_center_crop_takes_the_middle():
    arr = np.zeros((8, 16, 1), np.uint8)
    arr[:, 4:12] = 255  # the central 8x8 square is white, the sides black
    out = fit_to_square(arr, 8, "center-crop", "x")
    assert out.shape == (8, 8, 1) and (out == 255).all()
    down = fit_to_square(arr, 4, "center-crop", "x")
    assert down.shape == (4, 4, 1) and (down >= 250).all()


def test_pad_and_resize():
    arr = np.full((4, 8, 3), 200, np.uint8)
    padded = fit_to_square(arr, 8, "pad", "x")
    assert padded.shape == (8, 8, 3)
    assert (padded[:2] == 0).all() and (padded[6:] == 0).all() and (padded[2:6] == 200).all()
    stretched = fit_to_square(arr, 4, "resize", "x")
    assert stretched.shape == (4, 4, 3) and (stretched == 200).all()


@pytest.mark.parametrize(("transform", "shape"), [("center-crop", (30, 64)), ("pad", (16, 20))])
def test_too_small_is_bad(transform, shape):
    with pytest.raises(BadImageError, match="smaller than the target resolution 32") as info:
        fit_to_square(np.zeros((*shape, 3), np.uint8), 32, transform, "small.png")
    assert info.value.name == "small.png"
