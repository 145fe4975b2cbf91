"""What the explorer computes, without any web framework (so it is tested on its own).

Images come from integer seeds exactly as in ``progan generate`` (the latent of seed ``s`` is
:func:`progan.generate.latents_for_seeds`), so the explorer's image for a seed equals
``progan generate --seeds s``; conditional generators without a chosen class use the balanced
rule ``class = seed mod number of classes`` (:func:`progan.generate.balanced_labels`).

Interpolation between two latents ``a`` and ``b`` follows the latent hypersphere as
``progan video`` does: the direction moves along the great circle (spherical linear
interpolation, "slerp") and the length is interpolated linearly, so a point between two
N(0, I) latents keeps the norm about sqrt(L) that such latents have (a straight line would cut
through the inside of the sphere, where the generator saw no latents). ``t = 0`` and ``t = 1``
return ``a`` and ``b`` themselves.
"""

from __future__ import annotations

import math
import os

import torch

from progan.generate import balanced_labels, latents_for_seeds, to_uint8

__all__ = ["Explorer", "slerp"]


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(L,) latents -> the point at fraction ``t`` in [0, 1] from ``a`` to ``b`` along the
    great circle of their directions, with the length interpolated linearly."""
    if t <= 0.0:
        return a.clone()
    if t >= 1.0:
        return b.clone()
    na, nb = a.norm(), b.norm()
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    omega = torch.arccos((ua * ub).sum().clamp(-1.0, 1.0))
    if omega < 1e-6:  # (nearly) the same direction: a straight line is the arc
        direction = ua
    else:
        so = torch.sin(omega)
        direction = torch.sin((1 - t) * omega) / so * ua + torch.sin(t * omega) / so * ub
    return direction * ((1 - t) * na + t * nb)


class Explorer:
    """A loaded generator and the images the app shows.

    Args:
        G: a :class:`progan.nn.Generator` (eval mode), e.g. from
            :func:`progan.generate.load_generator`.
        device: where it runs.

    ``depths``: the depths that can be shown (0 = 4x4, ..., ``G.default_depth``: the depth it
    was trained to; the last one with the snapshot's own fade). Labels: ``None`` = balanced
    (seed mod classes), else a class index. Images are uint8 (C, r, r) tensors, r = 4 * 2**depth.
    """

    def __init__(self, G: torch.nn.Module, device: str | torch.device = "cpu") -> None:
        self.G = G
        self.device = torch.device(device)
        self.latent_size = int(G.latent_size)
        self.label_size = int(getattr(G, "label_size", 0) or 0)
        self.trained_depth = int(getattr(G, "default_depth", 0))
        self.depths = list(range(self.trained_depth + 1))

    def resolution(self, depth: int | None = None) -> int:
        """Side in pixels of the images at ``depth`` (None: the trained depth)."""
        return 4 * 2 ** (self.trained_depth if depth is None else int(depth))

    def latent(self, seed: int) -> torch.Tensor:
        """(L,) float32 latent of an integer seed (as ``progan generate``)."""
        return latents_for_seeds([int(seed)], self.latent_size)[0]

    def label_for(self, seed: int, label: int | None) -> int | None:
        """The class an image of ``seed`` gets: ``label``, or balanced when None."""
        if not self.label_size:
            return None
        if label is None:
            return balanced_labels([seed], self.label_size)[0]
        if not 0 <= int(label) < self.label_size:
            raise ValueError(f"class must be in [0, {self.label_size - 1}], got {label}")
        return int(label)

    @torch.no_grad()
    def render(self, latents: torch.Tensor, labels, depth: int | None = None) -> torch.Tensor:
        """uint8 (N, C, r, r) images of (N, L) latents with one class each: a list of ints
        (None for unconditional generators) or an (N, label_size) float tensor of class
        weights (a one-hot row is the same as its class)."""
        if depth is not None and not 0 <= int(depth) <= self.trained_depth:
            raise ValueError(f"depth must be in [0, {self.trained_depth}], got {depth}")
        z = latents.to(self.device, torch.float32)
        lab = None
        if self.label_size and isinstance(labels, torch.Tensor):
            lab = labels.to(self.device, torch.float32)
        elif self.label_size:
            lab = torch.tensor(labels, dtype=torch.int64, device=self.device)
        if depth is None or int(depth) == self.trained_depth:
            images = self.G(z, lab)  # the snapshot's own depth and fade, as progan generate
        else:
            images = self.G(z, lab, int(depth), 1.0)
        return to_uint8(images).cpu()

    def page(
        self, first_seed: int, count: int, label: int | None = None, depth: int | None = None
    ) -> tuple[list[int], torch.Tensor]:
        """Seeds ``first_seed .. first_seed + count - 1`` and their images (N, C, r, r)."""
        seeds = list(range(int(first_seed), int(first_seed) + int(count)))
        latents = latents_for_seeds(seeds, self.latent_size)
        return seeds, self.render(latents, [self.label_for(s, label) for s in seeds], depth)

    def sample(self, seed: int, label: int | None = None, depth: int | None = None):
        """uint8 (C, r, r) image of one seed."""
        return self.render(self.latent(seed)[None], [self.label_for(seed, label)], depth)[0]

    def mixed_labels(self, label_a: int | None, label_b: int | None, ts) -> torch.Tensor | list:
        """Classes along a path from class ``label_a`` to ``label_b``: (len(ts), label_size)
        float weights, the one-hot rows mixed linearly (t = 0: A's class, t = 1: B's); a list
        of None for unconditional generators."""
        if not self.label_size:
            return [None] * len(ts)
        eye = torch.eye(self.label_size)
        t = torch.as_tensor(list(ts), dtype=torch.float32)[:, None]
        b = label_a if label_b is None else label_b
        return (1 - t) * eye[int(label_a)] + t * eye[int(b)]

    def interpolate(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        t: float,
        label_a: int | None,
        depth: int | None = None,
        label_b: int | None = None,
    ) -> torch.Tensor:
        """uint8 (C, r, r) image at fraction ``t`` between latents ``a`` and ``b`` (slerp);
        for conditional generators the class moves from ``label_a`` to ``label_b`` (default:
        stays ``label_a``) along with it."""
        labels = self.mixed_labels(label_a, label_b, [float(t)])
        return self.render(slerp(a, b, float(t))[None], labels, depth)[0]

    def animation(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        label_a: int | None,
        depth: int | None = None,
        frames: int = 60,
        batch_size: int = 16,
        label_b: int | None = None,
    ):
        """Yield uint8 (C, r, r) frames going a -> b -> a (a loop), ``frames`` in all; the
        path is the slerp with an eased (cosine) time, so it slows down at both ends."""
        ts = [0.5 - 0.5 * math.cos(2 * math.pi * i / frames) for i in range(frames)]
        for lo in range(0, frames, batch_size):
            chunk = ts[lo : lo + batch_size]
            latents = torch.stack([slerp(a, b, t) for t in chunk])
            yield from self.render(latents, self.mixed_labels(label_a, label_b, chunk), depth)

    def load_projected(self, path: str | os.PathLike) -> tuple[torch.Tensor, int | None]:
        """(z, class or None) from a ``progan project`` latent file; checks the size."""
        from progan.errors import ProganError
        from progan.tools.project_io import load_latent

        z, label = load_latent(path)
        if z.numel() != self.latent_size:
            raise ProganError(
                f"{path}: latent of size {z.numel()}, this generator takes {self.latent_size}"
            )
        return z, label
