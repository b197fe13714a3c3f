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
or N and N pairwise.

Memory: a batch is run in chunks, each within an engine's profile and within CALL_BUDGET_BYTES (1 GiB)
of outputs and activations, estimated as ACTIVATION_FACTOR times the outputs of one sample: for the
128 px students that is 31 MB per image (21.5 MB measured with ONNX Runtime on CPU), so 34 images per
call, and render(seeds=range(1024)) peaks near 1 GB instead of 27 GB. render() keeps only uint8 images
(49 kB per 128 px image); generate() returns every float output. A student whose activations are
larger per output pixel than the tiny preset's can lower ``call_budget_bytes``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from nerfgan import camera
from nerfgan.errors import ConfigError, PoseError, TensorError, UsageError
from nerfgan.io import to_uint8
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend
from nerfgan.sampling import z_from_seed

Floats = float | Sequence[float] | np.ndarray

CALL_BUDGET_BYTES = 1 << 30  # outputs and activations of one engine call
ACTIVATION_FACTOR = 128  # activations + outputs per sample / outputs per sample (~88 measured, tiny 128 px student)


def _dim(backend: Backend, name: str, output: bool, rank: int, axis: int) -> int:
    """A fixed size from a file's own spec (ConfigError naming the file when its spec does not have it)."""
    t = backend.spec.output(name) if output else backend.spec.input(name)
    if len(t.shape) != rank or t.shape[0] != S.BATCH or not isinstance(t.shape[axis], int):
        raise ConfigError(f"{backend.path}: {S.META_IO} metadata gives {name} the shape {list(t.shape)}, "
                          f"expected {rank} axes with the batch first")
    return int(t.shape[axis])


class Generator:
    """A student (and optionally its mapping) behind one contract. Build with :func:`nerfgan.runtime.load`.

    ``no_mapping``: why there is no mapping (said when seeds are asked for). ``call_budget_bytes``: the memory one
    engine call may take (see the module docstring).
    """

    def __init__(self, student: Backend, mapping: Backend | None = None, no_mapping: str | None = None,
                 call_budget_bytes: int = CALL_BUDGET_BYTES) -> None:
        if student.spec.kind != "student":
            raise UsageError(f"{student.path}: is a {student.spec.kind} model, not a student")
        self.student, self.mapping = student, mapping
        self.no_mapping = no_mapping
        self.call_budget_bytes = call_budget_bytes
        self._closed = False
        if mapping is not None and mapping.spec.kind != "mapping":
            raise UsageError(f"{mapping.path}: is a {mapping.spec.kind} model, not a mapping")
        self.w_dim = _dim(student, "w", False, 2, 1)  # dims from the files' own input/output specs
        self.img_resolution = _dim(student, "image", True, 4, 2)  # H = W
        self.resolution = _dim(student, "image_raw", True, 4, 2)  # R
        _dim(student, "c", False, 2, 1)
        self.z_dim = _dim(mapping, "z", False, 2, 1) if mapping is not None else 0
        if mapping is not None and _dim(mapping, "w", True, 2, 1) != self.w_dim:
            raise ConfigError(f"{mapping.path}: its w does not fit {student.path}'s")
        try:
            cam = json.loads(student.metadata[S.META_CAMERA])
            self.radius = float(cam["radius"])
            self.pivot = tuple(float(v) for v in cam["pivot"])
            self.focal = float(cam["focal"])
        except (KeyError, TypeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise ConfigError(f"{student.path}: nerfgan metadata {S.META_CAMERA} incomplete or malformed "
                              f"({str(e)[:120]})") from None
        if len(self.pivot) != 3 or not all(math.isfinite(v) for v in (self.radius, self.focal, *self.pivot)) \
                or self.radius <= 0 or self.focal <= 0:
            raise ConfigError(f"{student.path}: nerfgan metadata {S.META_CAMERA}: radius and focal must be positive "
                              "numbers and pivot three numbers")

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
        def seed_ok(s: object) -> bool:
            return bool(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and 0 <= s < 2**32)

        seq: list[Any] = []
        if seed_ok(seeds):
            seq = [seeds]
        elif not isinstance(seeds, (str, bytes)):
            items: Any = seeds  # a user's value: any iterable is tried
            try:
                seq = list(items)
            except TypeError:  # not iterable (a float, a 0-d array): refused below
                pass
        if not seq or not all(seed_ok(s) for s in seq):
            raise UsageError(f"seeds: expected an integer or a sequence of integers in [0, 2**32), "
                             f"got {str(seeds)[:80]}")
        return np.concatenate([z_from_seed(int(s), self.z_dim) for s in seq])

    def style(self, seed: int | Sequence[int] | None = None, z: np.ndarray | None = None, truncation: float = 0.7,
              fov: float | None = None) -> np.ndarray:
        """The teacher's style code w (B, w_dim) for seeds or latents z, with truncation psi."""
        self._refuse_closed()
        if self.mapping is None:
            why = self.no_mapping or "no mapping model beside it (mapping.onnx)"
            raise UsageError(f"{self.student.path}: {why}; pass w instead of seeds/z")
        if (seed is None) == (z is None):
            raise UsageError("style: give exactly one of seed or z")
        psi = _number(truncation, "truncation", UsageError)
        if not 0.0 <= psi <= 1.0:
            raise UsageError(f"truncation: must be in [0, 1], got {truncation}")
        zz = self.latents(seed) if seed is not None else _array(z, "z")
        if zz.ndim != 2 or zz.shape[1] != self.z_dim:
            raise TensorError(f"z: expected shape (B, {self.z_dim}), got {zz.shape}")
        focal = self.focal if fov is None else camera.fov_to_focal(_fov(fov))
        c_cond = np.repeat(camera.frontal(self.radius, self.pivot, focal)[None], len(zz), 0).astype(np.float32)
        return self._chunked(self.mapping, {"z": zz, "c_cond": c_cond, "psi": np.full((len(zz),), psi, np.float32)})["w"]

    # --- images -----------------------------------------------------------------------------------
    def cameras(self, yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None,
                fov: float | None = None) -> np.ndarray:
        """Render cameras (N, 25) for poses that broadcast against each other (each a number or a 1-D sequence)."""
        yaw_a, pitch_a = _poses(yaw, "yaw"), _poses(pitch, "pitch")
        radius_a = _poses(self.radius if radius is None else radius, "radius")
        try:
            yaw_a, pitch_a, radius_a = np.broadcast_arrays(yaw_a, pitch_a, radius_a)
        except ValueError:
            raise PoseError(f"yaw, pitch and radius do not broadcast: {yaw_a.shape}, {pitch_a.shape}, "
                            f"{radius_a.shape}") from None
        focal = self.focal if fov is None else camera.fov_to_focal(_fov(fov))
        return camera.pose(yaw_a, pitch_a, radius_a, self.pivot, focal).reshape(-1, 25).astype(np.float32)

    def generate(self, seeds: int | Sequence[int] | None = None, z: np.ndarray | None = None, w: np.ndarray | None = None,
                 yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None, fov: float | None = None,
                 truncation: float = 0.7) -> dict[str, np.ndarray]:
        """Float outputs: image (B, 3, H, W) and image_raw (B, 3, R, R), about [-1, 1]."""
        return self._concat(self._generate(seeds, z, w, yaw, pitch, radius, fov, truncation))

    def _generate(self, seeds: int | Sequence[int] | None, z: np.ndarray | None, w: np.ndarray | None, yaw: Floats,
                  pitch: Floats, radius: Floats | None, fov: float | None,
                  truncation: float) -> Iterator[dict[str, np.ndarray]]:
        """generate()'s outputs chunk by chunk (all inputs checked before the first chunk runs)."""
        self._refuse_closed()
        if sum(x is not None for x in (seeds, z, w)) != 1:
            raise UsageError("give exactly one of seeds, z or w")
        if w is None:
            w = self.style(seed=seeds, z=z, truncation=truncation, fov=fov)
        ww = _array(w, "w")
        if ww.ndim == 1:
            ww = ww[None]
        if ww.ndim != 2 or ww.shape[1] != self.w_dim:
            raise TensorError(f"w: expected shape (B, {self.w_dim}), got {np.shape(w)}")
        c = self.cameras(yaw, pitch, radius, fov)
        n = max(len(ww), len(c))
        if len(ww) not in (1, n) or len(c) not in (1, n):
            raise UsageError(f"{len(ww)} objects and {len(c)} poses: give one of either, or the same number")
        ww, c = np.broadcast_to(ww, (n, ww.shape[1])), np.broadcast_to(c, (n, 25))
        return self._chunks(self.student, {"w": ww, "c": c})

    def render(self, seeds: int | Sequence[int] | None = None, z: np.ndarray | None = None, w: np.ndarray | None = None,
               yaw: Floats = 0.0, pitch: Floats = 0.0, radius: Floats | None = None, fov: float | None = None,
               truncation: float = 0.7) -> np.ndarray:
        """uint8 images (B, H, W, 3); the float outputs of one chunk at a time are held, not the whole batch's."""
        parts = [to_uint8(out["image"]) for out in
                 self._generate(seeds, z, w, yaw, pitch, radius, fov, truncation)]
        return np.concatenate(parts)

    def images_per_call(self, backend: Backend) -> int:
        """Samples per engine call: within the backend's profile and within call_budget_bytes (module docstring)."""
        per_sample = ACTIVATION_FACTOR * sum(4 * math.prod(t.concrete(1)) for t in backend.spec.outputs)
        n = max(1, int(self.call_budget_bytes // max(1, per_sample)))
        return max(backend.min_batch, min(n, backend.max_batch or n))

    def _chunks(self, backend: Backend, feeds: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Run in chunks of images_per_call samples; a chunk below the backend's min batch is padded by
        repeating its last sample, and the padding is dropped from the outputs."""
        n = len(next(iter(feeds.values())))
        step = self.images_per_call(backend)
        for i in range(0, n, step):
            chunk = {k: v[i:i + step] for k, v in feeds.items()}
            size = len(next(iter(chunk.values())))
            pad = max(0, backend.min_batch - size)
            if pad:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in chunk.items()}
            self._refuse_closed()
            out = backend.infer(chunk)
            yield {k: v[:size] for k, v in out.items()}

    def _chunked(self, backend: Backend, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._concat(self._chunks(backend, feeds))

    @staticmethod
    def _concat(parts_iter: Iterator[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        parts = list(parts_iter)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    # --- lifetime ---------------------------------------------------------------------------------
    def _refuse_closed(self) -> None:
        if self._closed:
            raise UsageError(f"{self.student.path.name}: generator is closed (close() was called); load it again")

    def close(self) -> None:
        """Close both models; a render in another thread finishes its current engine call, then raises UsageError."""
        self._closed = True
        self.student.close()
        if self.mapping is not None:
            self.mapping.close()

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- argument checks: a user's value that is not a number is a typed error naming the argument -------------
def _number(v: object, name: str, error: type[UsageError]) -> float:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise error(f"{name}: expected a number, got {str(v)[:80]!r}") from None
    if not math.isfinite(x):
        raise error(f"{name}: expected a finite number, got {v!r}")
    return x


def _fov(fov: object) -> float:
    f = _number(fov, "fov", PoseError)
    if not 1.0 <= f <= 120.0:
        raise PoseError(f"fov: {f:g} degrees is outside [1, 120]")
    return f


def _poses(v: object, name: str) -> np.ndarray:
    """A number or a 1-D sequence of numbers as a float64 array (N,); PoseError naming ``name`` otherwise."""
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise PoseError(f"{name}: expected a number or a sequence of numbers, got {str(v)[:80]!r}") from None
    if a.ndim > 1:
        raise PoseError(f"{name}: expected a number or a 1-D sequence, got shape {a.shape}")
    return np.atleast_1d(a)


def _array(v: object, name: str) -> np.ndarray:
    """A float32 array of ``v``; TensorError naming ``name`` when it is not numeric."""
    try:
        a = np.asarray(v)
        if a.dtype.kind not in "fiu":
            raise TypeError(a.dtype)
        return a.astype(np.float32, copy=False)
    except (TypeError, ValueError):
        raise TensorError(f"{name}: expected a float array, got {type(v).__name__} {str(v)[:60]!r}") from None
