"""Tests for progan.tools.align: geometry on synthetic faces, a real photo, landmark parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from progan.errors import DatasetError
from progan.tools.align import align_face, crop_quad, read_celeba_landmarks

# An upright synthetic "face": eyes 60 px apart, mouth 70 px below the eyes.
UPRIGHT = np.array([[100, 120], [160, 120], [130, 155], [108, 190], [152, 190]], np.float64)
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 3: (0, 0, 255), 4: (0, 0, 255)}


def _rotate_points(points: np.ndarray, degrees: float, size: tuple[int, int]) -> np.ndarray:
    """Where PIL's ``Image.rotate(degrees)`` (counter-clockwise, about the centre) moves pixels."""
    t = math.radians(degrees)
    centre = np.array(size, np.float64) / 2
    d = points + 0.5 - centre
    rotated = np.stack(
        [
            d[:, 0] * math.cos(t) + d[:, 1] * math.sin(t),
            -d[:, 0] * math.sin(t) + d[:, 1] * math.cos(t),
        ],
        1,
    )
    return rotated + centre - 0.5


def _synthetic_face(degrees: float, size: int = 256) -> tuple[Image.Image, np.ndarray]:
    im = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    for i, colour in COLOURS.items():
        x, y = UPRIGHT[i]
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    return im.rotate(degrees, Image.Resampling.BILINEAR), _rotate_points(UPRIGHT, degrees, im.size)


def _centroid(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(x, y) centroid of the pixels where ``colour``'s channel dominates the others."""
    c = int(np.argmax(colour))
    rgb = image.astype(np.float64)
    others = np.delete(rgb, c, axis=2).max(axis=2)
    weight = np.clip(rgb[..., c] - others, 0, None)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def _to_output(points: np.ndarray, landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """Where source pixel positions land in the aligned output (pixel-index coordinates)."""
    quad = crop_quad(landmarks)
    ex, ey = quad[3] - quad[0], quad[1] - quad[0]
    d = points + 0.5 - quad[0]
    u = d @ ex / (ex @ ex) * resolution
    v = d @ ey / (ey @ ey) * resolution
    return np.stack([u, v], 1) - 0.5


def _expected_eyes(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Output positions of the eyes for UPRIGHT: half side s = max(2*60, 1.8*70) = 126."""
    s, shift = 126.0, 7.0  # centre = eye midpoint + 0.1 * (0, 70)
    y = (s - shift) / (2 * s) * resolution - 0.5
    dx = 30.0 / (2 * s) * resolution
    return np.array([resolution / 2 - dx - 0.5, y]), np.array([resolution / 2 + dx - 0.5, y])


def test_quad_of_upright_face():
    quad = crop_quad(UPRIGHT)
    centre = np.array([130.5, 127.5])
    corners = np.array([[-126, -126], [-126, 126], [126, 126], [126, -126]])
    np.testing.assert_allclose(quad, centre + corners)


@pytest.mark.parametrize("degrees", [0.0, 30.0, -75.0])
def test_rotated_synthetic_face_comes_out_upright(degrees):
    image, landmarks = _synthetic_face(degrees)
    # the helper's rotation agrees with where PIL actually moved the marks
    np.testing.assert_allclose(_centroid(np.asarray(image), COLOURS[0]), landmarks[0], atol=0.3)
    out = align_face(image, landmarks, resolution=64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    left, right = _centroid(out, COLOURS[0]), _centroid(out, COLOURS[1])
    exp_left, exp_right = _expected_eyes(64)
    np.testing.assert_allclose(left, exp_left, atol=0.35)
    np.testing.assert_allclose(right, exp_right, atol=0.35)
    mouth = _centroid(out, COLOURS[3])
    assert abs(mouth[0] - 31.5) < 0.5 and mouth[1] > left[1] + 15  # mouth centred, below


def test_shrink_path_and_padding_are_seamless():
    image, landmarks = _synthetic_face(45.0)
    out = align_face(np.asarray(image), landmarks, resolution=32)  # ndarray input, shrink x3
    left, right = _centroid(out, COLOURS[0]), _centroid(out, COLOURS[1])
    exp_left, exp_right = _expected_eyes(32)
    np.testing.assert_allclose(left, exp_left, atol=0.4)
    np.testing.assert_allclose(right, exp_right, atol=0.4)
    # the corners lie outside the rotated source (black there): the mirrored, blurred padding
    # must fill them with the grey background instead
    big = align_face(image, landmarks, resolution=128)
    assert np.abs(big[:4, :4].astype(int) - 128).max() < 20


def test_grayscale_and_chw_inputs():
    image, landmarks = _synthetic_face(10.0)
    gray = np.asarray(image.convert("L"))
    out = align_face(gray, landmarks, 32)
    assert out.shape == (32, 32, 3) and (out[..., 0] == out[..., 1]).all()
    chw = np.asarray(image).transpose(2, 0, 1)
    np.testing.assert_array_equal(align_face(chw, landmarks, 32), align_face(image, landmarks, 32))


# Hand-measured on ../shared/data/photos/astronaut.png (512x512): pupils, nose tip, mouth corners.
ASTRONAUT = np.array([[203.5, 101.5], [247, 103.5], [224.5, 127], [204.5, 142.5], [244, 143]])


def test_real_photo_upright_and_centred(shared_data):
    photo = Image.open(shared_data / "photos" / "astronaut.png").convert("RGB")
    out = align_face(photo, ASTRONAUT, resolution=128).astype(np.float64)
    (lx, ly), (rx, ry) = _to_output(ASTRONAUT[:2], ASTRONAUT, 128)
    assert abs(ly - ry) < 0.02 * 128  # the measured eyes come out (nearly) level

    # the eyes (dark pupils) sit where the geometry puts them, darker than the cheeks below
    # and the forehead above
    def patch(x, y, r=2):
        return out[round(y) - r : round(y) + r + 1, round(x) - r : round(x) + r + 1].mean()

    for x, y in ((lx, ly), (rx, ry)):
        assert patch(x, y) < patch(x, y + 16) - 25
        assert patch(x, y) < patch(x, y - 12) - 25
    # face centred: the central column is skin (red > blue), left-right brightness balanced
    centre = out[40:100, 54:74]
    assert centre[..., 0].mean() > centre[..., 2].mean() + 30
    # rotating the photo (and its landmarks) does not change the aligned crop much
    rotated = photo.rotate(25.0, Image.Resampling.BILINEAR)
    again = align_face(rotated, _rotate_points(ASTRONAUT, 25.0, photo.size), 128)
    diff = np.abs(again.astype(np.float64) - out)[16:112, 16:112]
    assert diff.mean() < 6


def test_read_celeba_landmarks(tmp_path):
    header = (
        "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
        "leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    )
    text = f"2\n{header}\n000001.jpg 69 109 106 113 77 142 73 152 108 154\n"
    text += "000002.jpg    69   110   107   112    81   135    70   151   108   153\n"
    path = tmp_path / "list_landmarks_celeba.txt"
    path.write_text(text)
    lm = read_celeba_landmarks(path)
    assert list(lm) == ["000001.jpg", "000002.jpg"]
    np.testing.assert_array_equal(lm["000001.jpg"][4], [108, 154])
    path.write_text(text.replace("2\n", "3\n", 1))
    with pytest.raises(DatasetError):
        read_celeba_landmarks(path)
