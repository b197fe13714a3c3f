"""A request's engine work (:class:`Job`) and how a batch of them runs on one Generator (:func:`run_jobs`).

Jobs of one batch share engine calls: the style codes of every seeded job with the same (truncation, fov) come from
one mapping call, and every pose of every job with the same fov from one ``Generator.render`` call (which splits it
into chunks only beyond the engine's memory budget or profile).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from nerfgan.runtime import Generator


@dataclass(frozen=True)
class Job:
    """One object (a seed, or a style code ``w`` of shape (w_dim,) float32) seen from N poses.

    yaw, pitch: N values each in degrees (N = 0: only the style code is wanted); radius: world units, None for the
    engine's; fov: diagonal degrees, None for the engine's; truncation: psi of a seed's mapping.
    """

    seed: int | None = None
    w: np.ndarray | None = None
    yaw: tuple[float, ...] = ()
    pitch: tuple[float, ...] = ()
    radius: float | None = None
    fov: float | None = None
    truncation: float = 0.7

    @property
    def size(self) -> int:
        """What the job adds to a batch: its images, or 1 for a style code alone."""
        return max(1, len(self.yaw))


@dataclass(frozen=True)
class Result:
    """w: (w_dim,) float32, the style code used; images: (N, H, W, 3) uint8, one per pose of the job."""

    w: np.ndarray
    images: np.ndarray


def run_jobs(g: Generator, jobs: list[Job]) -> list[Result]:
    """Results of ``jobs`` in order, from one mapping call per (truncation, fov) and one render call per fov."""
    ws: list[np.ndarray | None] = [None if j.w is None else np.asarray(j.w, np.float32) for j in jobs]
    seeded: dict[tuple[float, float | None], list[int]] = defaultdict(list)
    for i, j in enumerate(jobs):
        if ws[i] is None:
            seeded[(j.truncation, j.fov)].append(i)
    for (psi, fov), idx in seeded.items():
        codes = g.style(seed=[int(jobs[i].seed or 0) for i in idx], truncation=psi, fov=fov)
        for i, code in zip(idx, codes):
            ws[i] = code
    styles = [w for w in ws if w is not None]
    assert len(styles) == len(jobs)

    empty = np.zeros((0, g.img_resolution, g.img_resolution, 3), np.uint8)
    images: list[np.ndarray] = [empty] * len(jobs)
    by_fov: dict[float | None, list[int]] = defaultdict(list)
    for i, j in enumerate(jobs):
        if j.yaw:
            by_fov[j.fov].append(i)
    for fov, idx in by_fov.items():
        counts = [len(jobs[i].yaw) for i in idx]
        w = np.concatenate([np.repeat(styles[i][None], n, axis=0) for i, n in zip(idx, counts)])
        yaw = np.concatenate([np.asarray(jobs[i].yaw, np.float64) for i in idx])
        pitch = np.concatenate([np.asarray(jobs[i].pitch, np.float64) for i in idx])
        radius = np.concatenate([np.full(n, g.radius if jobs[i].radius is None else jobs[i].radius, np.float64)
                                 for i, n in zip(idx, counts)])
        out = g.render(w=w, yaw=yaw, pitch=pitch, radius=radius, fov=fov)
        for i, part in zip(idx, np.split(out, np.cumsum(counts)[:-1])):
            images[i] = part
    return [Result(w, imgs) for w, imgs in zip(styles, images)]
