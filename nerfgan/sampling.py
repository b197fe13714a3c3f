"""The distribution of (z, conditioning camera, truncation, render camera) that distillation draws from.

numpy only. Every sample is a pure function of (seed, index): sample i of a set is the same
whichever shard, process or resume produces it, so render sets, the on-the-fly trainer and
calibration all see the same data for the same seed.

Defaults (documented choices, all configurable):

* z ~ N(0, I), as upstream.
* Render camera: yaw and pitch offsets from the frontal view, Gaussian with standard deviations
  ``yaw_std_deg`` = 20 and ``pitch_std_deg`` = 10 degrees, clipped to +-``max_yaw_deg`` = 60 and
  +-``max_pitch_deg`` = 30; camera on the teacher's sphere (its avg_camera_radius, around the world
  origin) looking at its avg_camera_pivot; focal 4.2647.
* Conditioning camera: the frontal camera at the same radius and pivot with the same intrinsics,
  as upstream's gen_samples.py and gen_videos.py condition the mapping network.
* Truncation psi ~ U[``psi_min``, ``psi_max``] = U[0.5, 1.0] over all ws (cutoff None), so the
  student sees the range users pick from (upstream's examples use 0.7).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from nerfgan import camera
from nerfgan.errors import ConfigError


def z_from_seed(seed: int, z_dim: int = 512) -> np.ndarray:
    """The latent (1, z_dim) upstream's scripts draw for ``seed`` (numpy RandomState, float32)."""
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


@dataclass(frozen=True)
class PoseDistribution:
    yaw_std_deg: float = 20.0  # std of the yaw offset from frontal, degrees
    pitch_std_deg: float = 10.0  # std of the pitch offset, degrees
    max_yaw_deg: float = 60.0  # yaw is clipped to +-this
    max_pitch_deg: float = 30.0  # pitch is clipped to +-this
    psi_min: float = 0.5  # truncation psi is uniform in [psi_min, psi_max]
    psi_max: float = 1.0
    focal: float = camera.DEFAULT_FOCAL  # normalised focal length of both cameras

    def __post_init__(self) -> None:
        if self.yaw_std_deg < 0 or self.pitch_std_deg < 0:
            raise ConfigError("pose distribution: standard deviations must be >= 0")
        if not (0 <= self.max_yaw_deg <= 180 and 0 <= self.max_pitch_deg < 90):
            raise ConfigError("pose distribution: need 0 <= max_yaw_deg <= 180 and 0 <= max_pitch_deg < 90")
        if not (0 <= self.psi_min <= self.psi_max <= 1):
            raise ConfigError("pose distribution: need 0 <= psi_min <= psi_max <= 1")
        if self.focal <= 0:
            raise ConfigError("pose distribution: focal must be positive")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PoseDistribution":
        return cls(**json.loads(text))


@dataclass
class Samples:
    """N samples; arrays are float32 (yaw/pitch in degrees)."""

    index: np.ndarray  # (N,) int64 sample indices
    z: np.ndarray  # (N, z_dim)
    c: np.ndarray  # (N, 25) render cameras
    c_cond: np.ndarray  # (N, 25) conditioning cameras
    psi: np.ndarray  # (N,) truncation
    yaw: np.ndarray  # (N,) degrees from frontal
    pitch: np.ndarray  # (N,) degrees from frontal

    def subset(self, sel: slice | np.ndarray) -> "Samples":
        return Samples(self.index[sel], self.z[sel], self.c[sel], self.c_cond[sel], self.psi[sel], self.yaw[sel],
                       self.pitch[sel])


def draw(
    seed: int,
    indices: np.ndarray | list[int] | range,
    dist: PoseDistribution,
    radius: float,
    pivot: tuple[float, float, float],
    z_dim: int = 512,
) -> Samples:
    """Samples ``indices`` of the set with this ``seed`` (each from its own generator seeded by (seed, index))."""
    idx = np.asarray(list(indices), dtype=np.int64)
    zs, yaws, pitches, psis = [], [], [], []
    for i in idx:
        rng = np.random.default_rng([int(seed), int(i)])
        zs.append(rng.standard_normal(z_dim))
        yaws.append(np.clip(rng.normal(0.0, dist.yaw_std_deg), -dist.max_yaw_deg, dist.max_yaw_deg))
        pitches.append(np.clip(rng.normal(0.0, dist.pitch_std_deg), -dist.max_pitch_deg, dist.max_pitch_deg))
        psis.append(rng.uniform(dist.psi_min, dist.psi_max))
    yaw = np.asarray(yaws, dtype=np.float32)
    pitch = np.asarray(pitches, dtype=np.float32)
    n = len(idx)
    c = camera.pose(yaw, pitch, radius=radius, pivot=pivot, focal=dist.focal).reshape(n, camera.CAMERA_DIM)
    c_cond = np.repeat(camera.frontal(radius, pivot, dist.focal)[None], n, axis=0)
    return Samples(idx, np.asarray(zs, np.float32).reshape(n, z_dim), c.astype(np.float32), c_cond.astype(np.float32),
                   np.asarray(psis, np.float32), yaw, pitch)
