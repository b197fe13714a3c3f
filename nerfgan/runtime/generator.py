"""The generator an application embeds: seeds (or z, or w) and poses in, uint8 images out.

    import nerfgan.runtime as nr
    with nr.load("export/") as g:                       # an export folder, .onnx, .plan or student .safetensors
        w = g.style(seed=7)                             # (1, w_dim): run the mapping once per object
        frames = g.render(w=w, yaw=[-30, 0, 30])        # (3, H, W, 3) uint8: one object, three poses

Poses are nerfgan's (nerfgan.camera): yaw and pitch in degrees from the frontal view (+yaw moves
the camera to the subject's left, +pitch up), radius in world units (default: the camera radius the
student was trained at), a diagonal field of view in degrees (default: focal 4.2647, about 18.8
degrees). The conditioning camera of the mapping is the frontal camera with the same intrinsics, as
upstream's scripts use. Objects and poses broadcast: one object and N poses, N objects and one pose,
or N and N pairwise. Batches larger than an engine's profile are split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from nerfgan import camera
from nerfgan.errors import ConfigError, PoseError, TensorError, UsageError
from nerfgan.io import to_uint8
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend
from nerfgan.sampling import z_from_seed

Floats = float | Sequence[float] | np.ndarray


class Generator:
    """A student (and optionally its mapping) behind one contract. Build with :func:`nerfgan.runtime.load`."""

    def __init__(self, student: Backend, mapping: Backend | None = None) -> None:
        if student.spec.kind != "student":
            raise UsageError(f"{student.path}: is a {student.spec.kind} model, not a student")
        self.student, self.mapping = student, mapping
        if mapping is not None and mapping.spec.kind != "mapping":
            raise UsageError(f"{mapping.path}: is a {mapping.spec.kind} model, not a mapping")
        spec = student.spec
        self.w_dim = int(spec.input("w").shape[1])  # dims from the files' own input/output specs
        self.img_resolution = int(spec.output("image").shape[2])  # H = W
        self.resolution = int(spec.output("image_raw").shape[2])  # R
        self.z_dim = int(mapping.spec.input("z").shape[1]) if mapping is not None else 0
        if mapping is not None and int(mapping.spec.output("w").shape[1]) != self.w_dim:
            raise ConfigError(f"{mapping.path}: its w does not fit {student.path}'s")
        try:
            cam = json.loads(student.metadata[S.META_CAMERA])
            self.radius = float(cam["radius"])
            self.pivot = tuple(float(v) for v in cam["pivot"])
            self.focal = float(cam["focal"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise ConfigError(f"{student.path}: nerfgan metadata incomplete ({e})") from None

    @property
    def backend(self) -> str:
        return self.student.name

    @property
    def precision(self) -> str:
        return self.student.precision

    def __repr__(self) -> str:
        return (f"Generator({self.student.name}, {self.img_resolution}px, student={self.student.path.name}, "
                f"mapping={self.mapping.path.name if self.mapping else None})")

    # --- style codes ------------------------------------------------------------------------------
    def latents(self, seeds: int | Sequence[int]) -> np.ndarray:
        """z (B, z_dim) for seeds, drawn as upstream's scripts draw them."""
        seq = [seeds] if isinstance(seeds, (int, np.integer)) else list(seeds)
        if not seq or not all(isinstance(s, (int, np.integer)) and 0 <= s < 2**32 for s in seq):
            raise UsageError(f"seeds: expected integers in [0, 2**32), got {seeds!r}")
        return np.concatenate([z_from_seed(int(s), self.z_dim) for s in seq])

    def style(self, seed: int | Sequence[int] | None = None, z: np.ndarray | None = None, truncation: float = 0.7,
              fov: float | None = None) -> np.ndarray:
        """The teacher's style code w (B, w_dim) for seeds or latents z, with truncation psi."""
        if self.mapping is None:
            raise UsageError(f"{self.student.path}: no mapping model beside it (mapping.onnx); pass w instead of seeds/z")
        if (seed is None) == (z is None):
            raise UsageError("style: give exactly one of seed or z")
        if not 0.0 <= float(truncation) <= 1.0:
            raise UsageError(f"truncation: must be in [0, 1], got {truncation}")
        zz = self.latents(seed) if seed is not None else np.asarray(z, dtype=np.float32)
        if zz.ndim != 2 or zz.shape[1] != self.z_dim:
            raise TensorError(f"z: expected shape (B, {self.z_dim}), got {zz.shape}")
        focal = self.focal if fov is None else camera.fov_to_focal(fov)
        c_cond = np.repeat(camera.frontal(self.radius, self.pivot, focal)[None], len(zz), 0).astype(np.float32)
        psi = np.full((len(zz),), truncation, np.float32)
        return self._chunked(self.mapping, {"z": zz, "c_cond": c_cond, "psi": psi})["w"]

    # --- images -----------------------------------------------------------------------------------
    def cameras(self, yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None,
                fov: float | None = None) -> np.ndarray:
        """Render cameras (N, 25) for poses that broadcast against each other."""
        yaw_a, pitch_a = np.atleast_1d(np.asarray(yaw, np.float64)), np.atleast_1d(np.asarray(pitch, np.float64))
        radius_a = np.atleast_1d(np.asarray(self.radius if radius is None else radius, np.float64))
        try:
            yaw_a, pitch_a, radius_a = np.broadcast_arrays(yaw_a, pitch_a, radius_a)
        except ValueError:
            raise PoseError(f"yaw, pitch and radius do not broadcast: {yaw_a.shape}, {pitch_a.shape}, "
                            f"{radius_a.shape}") from None
        if fov is not None and not 1.0 <= fov <= 120.0:
            raise PoseError(f"fov: {fov} degrees is outside [1, 120]")
        focal = self.focal if fov is None else camera.fov_to_focal(fov)
        return camera.pose(yaw_a, pitch_a, radius_a, self.pivot, focal).reshape(-1, 25).astype(np.float32)

    def generate(self, seeds: int | Sequence[int] | None = None, z: np.ndarray | None = None, w: np.ndarray | None = None,
                 yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None, fov: float | None = None,
                 truncation: float = 0.7) -> dict[str, np.ndarray]:
        """Float outputs: image (B, 3, H, W) and image_raw (B, 3, R, R), about [-1, 1]."""
        if sum(x is not None for x in (seeds, z, w)) != 1:
            raise UsageError("give exactly one of seeds, z or w")
        if w is None:
            w = self.style(seed=seeds, z=z, truncation=truncation, fov=fov)
        ww = np.asarray(w, dtype=np.float32)
        if ww.ndim == 1:
            ww = ww[None]
        if ww.ndim != 2 or ww.shape[1] != self.w_dim:
            raise TensorError(f"w: expected shape (B, {self.w_dim}), got {np.shape(w)}")
        c = self.cameras(yaw, pitch, radius, fov)
        n = max(len(ww), len(c))
        if len(ww) not in (1, n) or len(c) not in (1, n):
            raise UsageError(f"{len(ww)} objects and {len(c)} poses: give one of either, or the same number")
        ww, c = np.broadcast_to(ww, (n, ww.shape[1])), np.broadcast_to(c, (n, 25))
        return self._chunked(self.student, {"w": ww, "c": c})

    def render(self, seeds: int | Sequence[int] | None = None, z: np.ndarray | None = None, w: np.ndarray | None = None,
               yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None, fov: float | None = None,
               truncation: float = 0.7) -> np.ndarray:
        """uint8 images (B, H, W, 3)."""
        out = self.generate(seeds=seeds, z=z, w=w, yaw=yaw, pitch=pitch, radius=radius, fov=fov, truncation=truncation)
        return to_uint8(out["image"])

    def _chunked(self, backend: Backend, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run in chunks of at most the backend's max batch; a chunk below its min batch is padded by
        repeating its last sample, and the padding is dropped from the outputs."""
        n = len(next(iter(feeds.values())))
        step = backend.max_batch or n
        parts = []
        for i in range(0, n, step):
            chunk = {k: v[i:i + step] for k, v in feeds.items()}
            size = len(next(iter(chunk.values())))
            pad = max(0, backend.min_batch - size)
            if pad:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in chunk.items()}
            out = backend.infer(chunk)
            parts.append({k: v[:size] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # --- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        self.student.close()
        if self.mapping is not None:
            self.mapping.close()

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
