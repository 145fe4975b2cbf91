"""Tests for progan.tools.video (interpolation video, time-lapse) and progan.tools.mp4."""

from __future__ import annotations

import json
import math

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from progan.errors import ProganError
from progan.tools.mp4 import write_mp4
from progan.tools.video import (
    interpolation_latents,
    make_interpolation_video,
    make_timelapse,
    read_timelapse_snapshots,
)


def _read_video(path):
    """(frames uint8 (T, H, W, 3), fps, (W, H)) of an MP4 file."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    return np.stack(frames), meta["fps"], (w, h)


def test_latents_on_sphere_and_deterministic():
    z = interpolation_latents(60, 3, 16, fps=30, smoothing_sec=0.75, seed=5)
    assert z.shape == (60, 3, 16) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=2), 4.0, rtol=1e-5)
    np.testing.assert_array_equal(z, interpolation_latents(60, 3, 16, 30, 0.75, 5))
    assert not np.array_equal(z, interpolation_latents(60, 3, 16, 30, 0.75, 6))


def test_latents_smooth_and_loop():
    t, latent = 240, 64
    smooth = interpolation_latents(t, 2, latent, fps=30, smoothing_sec=0.75, seed=0)
    iid = interpolation_latents(t, 2, latent, fps=30, smoothing_sec=0.0, seed=0)
    step = np.linalg.norm(np.diff(smooth, axis=0), axis=2)
    step_iid = np.linalg.norm(np.diff(iid, axis=0), axis=2)
    assert step.max() < 0.1 * step_iid.mean()
    # wrap-around: the last -> first step is as small as the others
    wrap = np.linalg.norm(smooth[0] - smooth[-1], axis=1)
    assert wrap.max() < 2 * step.max()
    # and the stream actually moves: far-apart frames differ a lot
    assert np.linalg.norm(smooth[0] - smooth[t // 2], axis=1).min() > 0.5 * math.sqrt(latent)


def test_interpolation_video_frames_fps_shape(tmp_path, tiny_generator):
    out = make_interpolation_video(
        tiny_generator, tmp_path / "v" / "interp.mp4", seconds=1.0, fps=12, grid=(3, 2), seed=1
    )
    frames, fps, size = _read_video(out)
    assert frames.shape == (12, 16, 24, 3)
    assert fps == pytest.approx(12)
    assert size == (24, 16)
    nframes, _ = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert nframes == 12
    assert [p.name for p in out.parent.iterdir()] == ["interp.mp4"]  # no temp files left


def test_interpolation_video_resolution_and_labels(tmp_path, tiny_generator_cls):
    G = tiny_generator_cls(latent_size=4, resolution=8, channels=1, labels=3).eval()
    out = make_interpolation_video(
        G, tmp_path / "c.mp4", seconds=0.5, fps=10, grid=(2, 1), resolution=20
    )
    frames, _, size = _read_video(out)
    assert len(frames) == 5 and size == (40, 20)
    with pytest.raises(ProganError):
        make_interpolation_video(G, tmp_path / "x.mp4", 0.5, fps=10, labels=7)


def test_write_mp4_pads_odd_sizes_and_cleans_up_on_error(tmp_path):
    frames = [np.full((7, 9, 3), 40 * i, np.uint8) for i in range(3)]
    out = write_mp4(tmp_path / "odd.mp4", frames, fps=5)
    video, _, size = _read_video(out)
    assert size == (10, 8) and len(video) == 3
    assert abs(int(video[2, 3, 4, 0]) - 80) < 6  # content survives the encode

    def bad():
        yield np.zeros((8, 8, 3), np.uint8)
        yield np.zeros((4, 4, 3), np.uint8)

    with pytest.raises(ValueError):
        write_mp4(tmp_path / "bad.mp4", bad(), fps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def _fake_run(run_dir):
    """Snapshot grids of 2x1 images, 16 px (kimg 0, 100) then 32 px (200, 300), and a log."""
    run_dir.mkdir()
    colours = {0: 50, 100: 100, 200: 150, 300: 200}
    for kimg, value in colours.items():
        size = 16 if kimg < 200 else 32
        # training's names (kimg to the image), and one older whole-kimg name
        name = f"fakes{kimg:06d}.png" if kimg == 300 else f"fakes-{kimg + 0.016:010.3f}.png"
        Image.fromarray(np.full((size, size * 2, 3), value, np.uint8)).save(run_dir / name)
    lines = [
        {"kimg": 0.0, "resolution": 4},
        {"kimg": 150.0, "resolution": 8},
        {"kimg": 250.0, "resolution": 8},
    ]
    text = "\n".join(json.dumps(r) for r in lines) + "\n{broken"
    (run_dir / "log.jsonl").write_text(text)
    return run_dir


def test_timelapse_snapshots_and_video(tmp_path):
    run = _fake_run(tmp_path / "run")
    snaps = read_timelapse_snapshots(run)
    assert [(k, r) for _, k, r in snaps] == [(0.016, 4), (100.016, 4), (200.016, 8), (300, 8)]
    out = make_timelapse(run, tmp_path / "tl.mp4", fps=10, frame_seconds=0.2, hold_last_seconds=0.5)
    frames, fps, size = _read_video(out)
    assert size == (64, 32) and fps == pytest.approx(10)
    assert len(frames) == 4 * 2 + 5
    # the top of each frame (above the text box) shows the snapshot's colour, resized nearest
    tops = frames[:, 2, 40, 0].astype(int)
    for i, value in enumerate([50, 50, 100, 100, 150, 150, 200, 200]):
        assert abs(tops[i] - value) < 8
    # text drawn: the bottom-left corner holds bright text pixels on a dark box
    corner = frames[0, 16:, :20]
    assert corner.max() > 150 and corner.min() < 30


def test_timelapse_missing_grids(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProganError):
        make_timelapse(tmp_path / "empty", tmp_path / "x.mp4")
