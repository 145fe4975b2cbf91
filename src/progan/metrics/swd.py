"""Sliced Wasserstein distance (SWD) between Laplacian-pyramid patch distributions.

Follows Karras et al. (2018), Section 5, and the official implementation
(``metrics/sliced_wasserstein.py`` of tkarras/progressive_growing_of_gans):

* one-channel (grayscale) images are tiled to three identical channels first, as the official
  ``util_scripts.evaluate_metrics`` does before every metric (``np.tile(images, [1, 3, 1, 1])``;
  its SWD asserts three channels), so SWD of MNIST is comparable with the official numbers;
* every image (uint8, values 0..255, as float32) is decomposed into a Laplacian pyramid with
  the 5-tap binomial filter ``[1, 4, 6, 4, 1] / 16`` (separable; mirror boundary, like
  ``cv2.pyrDown``/``pyrUp``), from full resolution down to 16x16;
* 128 random 7x7xC patches ("descriptors") are taken per image and level;
* at each level the descriptors of one set are normalized per colour channel by the mean and
  standard deviation over all of that set's descriptors;
* the sliced Wasserstein distance uses 512 random unit directions (4 repeats of 128); along each
  direction the 1-D Wasserstein-1 distance of two equally sized samples is the mean absolute
  difference of the sorted projections;
* each level's distance and the average over levels are reported multiplied by 1e3, the levels
  named by resolution (``"128"``, ``"64"``, ...) plus ``"avg"``.

Everything runs with torch ops on the chosen device. Images are fed in batches and only the
sampled descriptors are kept (``PatchDescriptors``), so memory is bounded by
``num_images * 128 * C * 49 * 4`` bytes per level, stored on ``store_device`` (CPU by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "PatchDescriptors",
    "laplacian_pyramid",
    "pyr_down",
    "pyr_up",
    "reconstruct_laplacian_pyramid",
    "sample_patches",
    "sliced_wasserstein",
    "swd_from_descriptors",
    "swd_levels",
    "swd_resolutions",
]

_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _kernel_1d(scale: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    k = torch.tensor(_BINOMIAL_5, device=device, dtype=dtype) / 16.0 * scale
    return k


def _separable_filter(x: torch.Tensor, scale: float, stride: int) -> torch.Tensor:
    """Filter (N, C, H, W) with the 5x5 binomial kernel * ``scale**2`` after mirror padding.

    ``stride`` subsamples the result (the 2-D kernel is the outer product of two 1-D kernels,
    so filtering then keeping every ``stride``-th pixel equals a strided separable convolution).
    """
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (2, 2, 2, 2), mode="reflect")  # torch "reflect" == scipy.ndimage "mirror"
    k = _kernel_1d(scale, x.device, x.dtype)
    y = F.conv2d(y, k.view(1, 1, 1, 5), stride=(1, stride))
    y = F.conv2d(y, k.view(1, 1, 5, 1), stride=(stride, 1))
    return y.reshape(n, c, y.shape[-2], y.shape[-1])


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur and halve: (N, C, H, W) float -> (N, C, H/2, W/2) (like ``cv2.pyrDown``)."""
    return _separable_filter(x, 1.0, 2)


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Upsample by zero insertion and blur with 4x the kernel: (N, C, H, W) -> (N, C, 2H, 2W)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _separable_filter(up, 2.0, 1)


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of float images (N, C, H, W), finest level first.

    Returns ``num_levels`` tensors: band-pass levels of size H, H/2, ... and, last, the Gaussian
    (low-pass) level. ``reconstruct_laplacian_pyramid`` inverts it exactly (up to float error).
    """
    x = x.float()
    levels = [x]
    for _ in range(1, num_levels):
        low = pyr_down(levels[-1])
        levels[-1] = levels[-1] - pyr_up(low)
        levels.append(low)
    return levels


def reconstruct_laplacian_pyramid(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Invert ``laplacian_pyramid``: returns the (N, C, H, W) float images."""
    x = levels[-1]
    for band in reversed(levels[:-1]):
        x = pyr_up(x) + band
    return x


def swd_resolutions(resolution: int, min_resolution: int = 16) -> list[int]:
    """Pyramid level resolutions, e.g. 128 -> [128, 64, 32, 16].

    Images smaller than ``min_resolution`` (but at least 8x8) get a single level.
    """
    if resolution < 8:
        raise ValueError(f"SWD needs images of at least 8x8 pixels, got {resolution}x{resolution}")
    out = []
    res = resolution
    while res >= min_resolution:
        out.append(res)
        res //= 2
    return out or [resolution]


def sample_patches(
    level: torch.Tensor,
    patches_per_image: int,
    patch_size: int = 7,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Take random ``patch_size`` x ``patch_size`` x C patches from each image.

    Args:
        level: (N, C, H, W) float tensor (one pyramid level).
        patches_per_image: patches per image (128 in the paper).
        generator: CPU ``torch.Generator`` for the patch centres (deterministic sampling).

    Returns:
        (N * patches_per_image, C * patch_size**2) float tensor on ``level.device``; rows are
        grouped by image, each row laid out (channel, y, x) like the official code.
    """
    n, c, h, w = level.shape
    r = patch_size // 2
    # centres in [r, size - r) as in the official code (np.random.randint(H, S - H))
    ys = torch.randint(r, h - r, (n, patches_per_image, 1, 1, 1), generator=generator)
    xs = torch.randint(r, w - r, (n, patches_per_image, 1, 1, 1), generator=generator)
    dev = level.device
    ys, xs = ys.to(dev), xs.to(dev)
    offs = torch.arange(-r, r + 1, device=dev)
    img = torch.arange(n, device=dev).view(n, 1, 1, 1, 1)
    chan = torch.arange(c, device=dev).view(1, 1, c, 1, 1)
    rows = ys + offs.view(1, 1, 1, -1, 1)
    cols = xs + offs.view(1, 1, 1, 1, -1)
    idx = ((img * c + chan) * h + rows) * w + cols
    patches = level.reshape(-1)[idx.reshape(-1)]
    return patches.view(n * patches_per_image, c * patch_size * patch_size)


class PatchDescriptors:
    """Streaming collector of Laplacian-pyramid patch descriptors for one image set.

    Args:
        resolution: image size R (images are (N, C, R, R)).
        channels: C of the images fed, 1 or 3. One-channel images are tiled to three channels
            before the pyramid (official ``util_scripts``), so ``self.channels`` (the
            descriptors' channels) is 3 either way; ``input_channels`` is C.
        patches_per_image: 128 in the paper.
        patch_size: 7 in the paper.
        min_resolution: coarsest pyramid level (16 in the paper).
        seed: seed of the patch-centre sampling (one stream over all batches, or, when
            ``feed`` is given the index of the batch's first image, a stream per batch keyed
            by that index: then any split of the set into batches of the same images draws
            the same patches, which lets several processes share one set).
        device: where the pyramid is computed (e.g. ``"cuda"``).
        store_device: where descriptors are kept between batches (``"cpu"`` keeps GPU memory
            bounded; pass the compute device to avoid transfers when memory allows).

    ``feed`` images (uint8 or float NCHW, values 0..255) batch by batch, then call
    ``finalize`` for the normalized descriptors.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        *,
        patches_per_image: int = 128,
        patch_size: int = 7,
        min_resolution: int = 16,
        seed: int = 0,
        device: str | torch.device = "cpu",
        store_device: str | torch.device = "cpu",
    ) -> None:
        self.resolution = int(resolution)
        self.input_channels = int(channels)
        self.channels = 3 if self.input_channels == 1 else self.input_channels
        self.patches_per_image = int(patches_per_image)
        self.patch_size = int(patch_size)
        self.resolutions = swd_resolutions(self.resolution, min_resolution)
        self.device = torch.device(device)
        self.store_device = torch.device(store_device)
        self.num_images = 0
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._chunks: list[list[torch.Tensor]] = [[] for _ in self.resolutions]

    @torch.no_grad()
    def feed(self, images: torch.Tensor, start: int | None = None) -> None:
        """Add a batch: (N, C, R, R) uint8 (or float in 0..255) tensor on any device;
        ``start``: the set index of ``images[0]`` (keys the patch sampling, see above)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (
            self.input_channels,
            self.resolution,
            self.resolution,
        ):
            raise ValueError(
                f"expected images of shape (N, {self.input_channels}, {self.resolution}, "
                f"{self.resolution}), got {tuple(images.shape)}"
            )
        if start is not None:
            self._generator.manual_seed((self.seed * 2**32 + int(start)) % 2**63)
        x = images.to(self.device, non_blocking=True).float()
        if x.shape[1] == 1:  # grayscale => RGB, as the official evaluation
            x = x.repeat(1, 3, 1, 1)
        for i, level in enumerate(laplacian_pyramid(x, len(self.resolutions))):
            desc = sample_patches(level, self.patches_per_image, self.patch_size, self._generator)
            self._chunks[i].append(desc.to(self.store_device))
        self.num_images += images.shape[0]

    def take_level(self, index: int) -> torch.Tensor:
        """Remove and return the raw (unnormalized) descriptors of level ``index`` fed so far:
        (num_images * patches_per_image, C * patch_size**2) float32 (0 rows if none)."""
        chunks, self._chunks[index] = self._chunks[index], []
        if not chunks:
            return torch.zeros(0, self.channels * self.patch_size**2, device=self.store_device)
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def replace_descriptors(self, levels: list[torch.Tensor], num_images: int) -> None:
        """Make ``levels`` (raw descriptors per level, as ``take_level``) this set's content."""
        self._chunks = [[t] for t in levels]
        self.num_images = int(num_images)

    def finalize(self) -> list[torch.Tensor]:
        """Normalized descriptors per level: list of (num_images * 128, C * 49) float32.

        Each channel is shifted and scaled by the mean and (population) standard deviation over
        all of this set's descriptors at that level, as in the official code. Releases the
        collected chunks.
        """
        out = []
        for chunks in self._chunks:
            desc = torch.cat(chunks) if len(chunks) != 1 else chunks[0]
            out.append(normalize_descriptors(desc, self.channels))
        self._chunks = [[] for _ in self.resolutions]
        return out


def normalize_descriptors(desc: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-channel standardization of (M, C * k * k) descriptors (statistics in float64)."""
    m = desc.shape[0]
    v = desc.view(m, channels, -1)
    count = v.shape[0] * v.shape[2]
    s1 = v.sum(dim=(0, 2), dtype=torch.float64)
    s2 = v.square().sum(dim=(0, 2), dtype=torch.float64)
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-8)
    v = (v - mean.float().view(1, -1, 1)) / std.float().view(1, -1, 1)
    return v.reshape(m, -1)


@torch.no_grad()
def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    num_directions: int = 512,
    directions_per_repeat: int = 128,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Sliced Wasserstein-1 distance between two equally sized point sets.

    Args:
        a, b: (M, D) float tensors (same M; rows are samples).
        num_directions: random unit directions in total (512 = 4 x 128 in the official code).
        directions_per_repeat: directions projected at once (bounds memory to M x this).
        generator: CPU generator for the directions (same generator state -> same directions).
        device: where to compute (default: ``a.device``).

    Returns:
        The mean over directions of the 1-D W1 distance, i.e. the mean of
        ``|sort(a @ u) - sort(b @ u)|`` over samples and directions.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"need two (M, D) tensors of equal shape, got {a.shape} and {b.shape}")
    dev = torch.device(device) if device is not None else a.device
    a = a.to(dev, torch.float32)
    b = b.to(dev, torch.float32)
    repeats = max(1, math.ceil(num_directions / directions_per_repeat))
    total = 0.0
    done = 0
    for r in range(repeats):
        k = min(directions_per_repeat, num_directions - r * directions_per_repeat)
        dirs = torch.randn(a.shape[1], k, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(dev, torch.float32)
        # (k, M) layout: each direction's projections are contiguous for the sort
        pa = torch.sort(dirs.T @ a.T, dim=1).values
        pb = torch.sort(dirs.T @ b.T, dim=1).values
        total += float((pa - pb).abs().sum(dtype=torch.float64)) / a.shape[0]
        done += k
        del pa, pb
    return total / done


def swd_from_descriptors(
    desc_a: Sequence[torch.Tensor],
    desc_b: Sequence[torch.Tensor],
    resolutions: Sequence[int],
    *,
    num_directions: int = 512,
    directions_per_repeat: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """SWD x 1e3 per level plus their average, from normalized descriptors.

    If the two sets hold different numbers of descriptors, the first ``min`` rows of each are
    used (rows are grouped by image, so this drops whole images from the larger set).

    Returns:
        ``{"128": d128, "64": d64, ..., "avg": mean}`` (keys are resolutions as strings).
    """
    out: dict[str, float] = {}
    for i, (res, a, b) in enumerate(zip(resolutions, desc_a, desc_b, strict=True)):
        m = min(a.shape[0], b.shape[0])
        g = torch.Generator().manual_seed(int(seed) * 1000 + i)
        d = sliced_wasserstein(
            a[:m], b[:m], num_directions, directions_per_repeat, generator=g, device=device
        )
        out[str(res)] = d * 1e3
    out["avg"] = sum(out.values()) / len(resolutions)
    return out


def swd_levels(resolution: int) -> list[str]:
    """Result keys for images of ``resolution``: level names plus ``"avg"``."""
    return [str(r) for r in swd_resolutions(resolution)] + ["avg"]
