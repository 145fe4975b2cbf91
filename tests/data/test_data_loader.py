"""RealImageStream: deterministic order, batch-size independence, exact resume, workers/cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from progan.data.dataset import ImageDataset
from progan.data.loader import RealImageStream, ShuffledOrder, labels_tensor, mirror_flags

N = 23  # not a multiple of any batch or chunk size used below


@pytest.fixture
def dataset(tmp_path, make_dataset) -> ImageDataset:
    make_dataset(tmp_path / "d.zip", count=N, resolution=8, channels=3)
    return ImageDataset(tmp_path / "d.zip")


def _take(stream: RealImageStream, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [stream.next(b) for b in sizes]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _identify(dataset: ImageDataset, images: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Dataset index and mirror flag of every streamed image."""
    table = {}
    for i in range(len(dataset)):
        img = dataset[i][0]
        table[img.tobytes()] = (i, False)
        table[np.ascontiguousarray(img[..., ::-1]).tobytes()] = (i, True)
    found = [table[img.numpy().tobytes()] for img in images]
    return [f[0] for f in found], [f[1] for f in found]


def test_shapes_dtypes_labels(dataset):
    with RealImageStream(dataset, "cpu", num_workers=0) as s:
        images, labels = s.next(5)
        assert images.shape == (5, 3, 8, 8) and images.dtype == torch.uint8
        assert labels.shape == (5,) and labels.dtype == torch.int64
        idx, _ = _identify(dataset, images)
        assert labels.tolist() == [int(dataset.labels[i]) for i in idx]
        assert s.position == 5
    assert labels_tensor(dataset).tolist() == dataset.labels.tolist()


def test_epochs_are_reshuffled_permutations(dataset):
    with RealImageStream(dataset, "cpu", seed=1, num_workers=0) as s:
        images, _ = s.next(3 * N)
    idx, flips = _identify(dataset, images)
    assert not any(flips)
    epochs = [idx[e * N : (e + 1) * N] for e in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(N))  # every image exactly once per epoch
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != list(range(N))
    assert idx == ShuffledOrder(1, N).indices(0, 3 * N).tolist()


def test_same_seed_same_sequence_other_seed_differs(dataset):
    a = _take(RealImageStream(dataset, seed=7, mirror=True, num_workers=0), [10, 10])
    b = _take(RealImageStream(dataset, seed=7, mirror=True, num_workers=0), [20])
    c = _take(RealImageStream(dataset, seed=8, mirror=True, num_workers=0), [20])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_batch_sizes_do_not_change_the_sequence(dataset):
    total = 3 * N + 5
    ref = _take(RealImageStream(dataset, seed=2, mirror=True, num_workers=0), [total])
    for sizes in ([1] * total, [7, 13, 54], [N, N, N, 5], [2, 64, 8]):
        assert sum(sizes) == total
        got = _take(RealImageStream(dataset, seed=2, mirror=True, num_workers=0), sizes)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_mirror_decided_per_position(dataset):
    with RealImageStream(dataset, seed=4, mirror=True, num_workers=0) as s:
        images, _ = s.next(4 * N)
    idx, flips = _identify(dataset, images)
    expect = mirror_flags(4, np.arange(4 * N))
    assert flips == expect.tolist()
    assert 0.3 < np.mean(flips) < 0.7
    assert 0.45 < mirror_flags(4, np.arange(100_000)).mean() < 0.55
    assert idx == ShuffledOrder(4, N).indices(0, 4 * N).tolist()


@pytest.mark.parametrize("split", [1, 16, 37, N])
def test_resume_from_position_is_exact(dataset, split):
    full = _take(RealImageStream(dataset, seed=3, mirror=True, num_workers=0), [split, 60])
    first = RealImageStream(dataset, seed=3, mirror=True, num_workers=0)
    first.next(split)
    resumed = RealImageStream(dataset, seed=3, mirror=True, start=first.position, num_workers=0)
    rest = _take(resumed, [60])
    assert torch.equal(rest[0], full[0][split:]) and torch.equal(rest[1], full[1][split:])


def test_workers_no_workers_and_caches_identical(dataset):
    sizes = [5, 17, 40, 9, 30]
    kwargs = dict(seed=11, mirror=True, chunk_size=6)
    ref = _take(RealImageStream(dataset, num_workers=0, **kwargs), sizes)
    streams = [
        RealImageStream(dataset, num_workers=2, **kwargs),
        RealImageStream(dataset, num_workers=0, cache="cpu", **kwargs),
        RealImageStream(dataset, "cpu", num_workers=2, cache="device", **kwargs),
        RealImageStream(dataset, num_workers=0, seed=11, mirror=True, chunk_size=4),
    ]
    for s in streams:
        got = _take(s, sizes)
        s.close()
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_resume_with_workers_and_close_restart(dataset):
    ref = _take(RealImageStream(dataset, seed=5, mirror=True, num_workers=0), [50])
    s = RealImageStream(dataset, seed=5, mirror=True, start=13, num_workers=2, chunk_size=4)
    a = s.next(10)
    s.close()  # stop the workers; the next call restarts them at position 23
    b = s.next(27)
    s.close()
    assert s.position == 50
    assert torch.equal(torch.cat([a[0], b[0]]), ref[0][13:])
    assert torch.equal(torch.cat([a[1], b[1]]), ref[1][13:])


def test_unlabeled_dataset_gives_minus_one(tmp_path, make_dataset):
    make_dataset(tmp_path / "u", count=5, labels=False)
    with RealImageStream(tmp_path / "u", num_workers=0, cache="cpu") as s:
        _, labels = s.next(7)
    assert labels.tolist() == [-1] * 7


def test_bad_arguments(dataset):
    from progan.errors import ConfigError

    with pytest.raises(ConfigError):
        RealImageStream(dataset, cache="gpu")
    with pytest.raises(ConfigError):
        RealImageStream(dataset, num_workers=0).next(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_streams_match_cpu(dataset):
    ref = _take(RealImageStream(dataset, seed=9, mirror=True, num_workers=0), [10, 30])
    for kwargs in ({"num_workers": 2}, {"cache": "cpu"}, {"cache": "device"}):
        with RealImageStream(dataset, "cuda", seed=9, mirror=True, **kwargs) as s:
            got = _take(s, [10, 30])
        assert got[0].device.type == "cuda" and got[1].device.type == "cuda"
        assert torch.equal(got[0].cpu(), ref[0]) and torch.equal(got[1].cpu(), ref[1])
