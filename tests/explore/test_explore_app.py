"""The explorer app, started in this process on a free local port and driven through its HTTP
API with gradio_client (skipped where Gradio is not installed: `pip install progan[explore]`)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from tests
gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from progan.explore.app import BALANCED, build_app, launch  # noqa: E402
from progan.explore.model import Explorer  # noqa: E402
from progan.generate import generate_images, load_generator  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hwc(images) -> list[np.ndarray]:
    return [img.permute(1, 2, 0).numpy() for img in images]


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture
def serve():
    """serve(generator) -> a gradio_client.Client of the running app (closed afterwards)."""
    started = []

    def start(G):
        demo = build_app(Explorer(G), page_size=4)
        _, url, _ = launch(demo, "127.0.0.1", _free_port(), prevent_thread_lock=True, quiet=True)
        started.append(demo)
        return gradio_client.Client(url, verbose=False)

    yield start
    for demo in started:
        demo.close()


def test_sample_page_and_interpolation_endpoints(snapshot, serve):
    G = load_generator(snapshot)
    client = serve(G)
    depth = str(G.default_depth)
    expected = _hwc(generate_images(G, [7, 3, 9]))
    # the image served for a seed equals `progan generate` for that seed
    np.testing.assert_array_equal(
        _png(client.predict(7, BALANCED, depth, api_name="/sample")), expected[0]
    )
    # the interpolation at 0 and at 1 equals the two samples; in between it is neither
    at = {
        t: _png(client.predict(3, 9, t, BALANCED, depth, None, api_name="/interpolate"))
        for t in (0.0, 0.5, 1.0)
    }
    np.testing.assert_array_equal(at[0.0], expected[1])
    np.testing.assert_array_equal(at[1.0], expected[2])
    assert not np.array_equal(at[0.5], expected[1]) and not np.array_equal(at[0.5], expected[2])
    # a page: seeds 12..15, each captioned with its seed
    page = client.predict(12, BALANCED, depth, api_name="/page")
    assert [item["caption"] for item in page] == [f"seed {s}" for s in range(12, 16)]
    for item, ref in zip(page, _hwc(generate_images(G, range(12, 16))), strict=True):
        np.testing.assert_array_equal(_png(item["image"]), ref)
    # the animation: an MP4 file
    video = client.predict(3, 9, BALANCED, depth, None, api_name="/animate")
    path = video["video"] if isinstance(video, dict) else video
    with open(path, "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"


def test_class_selector_of_a_conditional_generator(cond_snapshot, serve):
    G = load_generator(cond_snapshot)
    client = serve(G)
    depth = str(G.default_depth)
    balanced = _png(client.predict(4, BALANCED, depth, api_name="/sample"))
    np.testing.assert_array_equal(balanced, _hwc(generate_images(G, [4], [1]))[0])  # 4 mod 3
    chosen = _png(client.predict(4, "2", depth, api_name="/sample"))
    np.testing.assert_array_equal(chosen, _hwc(generate_images(G, [4], [2]))[0])
    # balanced: the interpolation's ends are the two seeds' samples, classes 1 and 2
    for t, seed in ((0.0, 4), (1.0, 5)):
        got = _png(client.predict(4, 5, t, BALANCED, depth, None, api_name="/interpolate"))
        np.testing.assert_array_equal(got, _hwc(generate_images(G, [seed]))[0])


def test_projected_latent_as_endpoint_a(snapshot, serve, tmp_path):
    import torch
    from safetensors.torch import save_file

    from progan.tools.project_io import LATENT_FORMAT

    G = load_generator(snapshot)
    z = torch.randn(1, G.latent_size)
    path = tmp_path / "face-latent.safetensors"
    save_file({"z": z}, str(path), {"format": LATENT_FORMAT})
    client = serve(G)
    got = client.predict(
        0, 1, 0.0, BALANCED, str(G.default_depth), gradio_client.handle_file(str(path)),
        api_name="/interpolate",
    )  # fmt: skip
    ref = (G(z) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_png(got), ref)


def test_early_snapshot_depths(early_snapshot, serve):
    G = load_generator(early_snapshot)
    client = serve(G)
    assert _png(client.predict(2, BALANCED, "1", api_name="/sample")).shape == (8, 8, 3)
    assert _png(client.predict(2, BALANCED, "0", api_name="/sample")).shape == (4, 4, 3)
