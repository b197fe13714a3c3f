"""Reference files: upstream renders stored with their inputs, and checking a teacher against them.

A reference ``.npz`` (upstream EG3D's renders of known inputs, as in tests/fixtures) holds ``init_kwargs_json`` and
``neural_rendering_resolution`` (the config), ``sd/<key>`` (weights), the inputs ``z`` (B, z_dim),
``c`` (V, B, 25) render cameras, ``c_cond`` (B, 25) conditioning cameras, ``psi`` (P,), ``cutoff``,
and upstream's outputs: ``ws`` (P, B, num_ws, w_dim), ``image_raw`` / ``image_depth`` / ``image``
(P, V, B, C, H, W), optionally ``feature_image`` (B, 32, R, R; psi[0], view 0) and the plane
statistics ``planes_sub``, ``planes_crop``, ``planes_chmean``, ``planes_chstd`` (psi[0]).
Rendering is deterministic with backbone noise 'const', so the comparison is exact up to float error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.io import existing_file
from nerfgan.teacher.checked_npz import CheckedNpz
from nerfgan.teacher.checkpoint import build_teacher
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.generator import EG3D

# Absolute tolerances for a float32 re-implementation against upstream's float32 renders.
TOLERANCES = {
    "ws": 1e-5,
    "planes_sub": 1e-4,
    "planes_crop": 1e-4,
    "planes_chmean": 1e-4,
    "planes_chstd": 1e-4,
    "feature_image": 1e-4,
    "image_raw": 1e-4,
    "image_depth": 1e-4,
    "image": 5e-4,
}
REQUIRED = ("init_kwargs_json", "neural_rendering_resolution", "z", "c", "c_cond", "psi", "ws", "image")


MAX_EXPANSION = 32
"""A reference file's arrays may declare at most this many times its size (plus 16 MiB) in all."""


@dataclass
class Reference:
    path: Path
    config: TeacherConfig
    state: dict[str, torch.Tensor]
    z: np.ndarray  # (B, z_dim)
    c: np.ndarray  # (V, B, 25)
    c_cond: np.ndarray  # (B, 25)
    psi: np.ndarray  # (P,)
    cutoff: int | None
    outputs: dict[str, np.ndarray]  # name -> upstream array


@dataclass(frozen=True)
class Check:
    name: str
    max_abs_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance


def read_reference(path: str | os.PathLike[str]) -> Reference:
    """The reference file, every member read through CheckedNpz once the sizes they declare are bounded: in all at
    most MAX_EXPANSION x the file size + 16 MiB (a few KB of deflated zeros must not become gigabytes)."""
    p = existing_file(path, "reference file")
    with CheckedNpz(p, "reference file") as f:
        declared = {name: f.declared(name) for name in f.names}
        total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in declared.values())
        budget = MAX_EXPANSION * f.size + (16 << 20)
        if total > budget:
            raise CheckpointError(f"{p}: its arrays declare {total:,} bytes, over {budget:,} "
                                  f"({MAX_EXPANSION} x the file size + 16 MiB)")
        data = {name: f.read(name, shape, dtype) for name, (shape, dtype) in declared.items()}
    files = set(data)
    missing = [k for k in REQUIRED if k not in files]
    if missing:
        raise CheckpointError(f"{p}: reference file lacks {', '.join(missing)}")
    try:
        kwargs = json.loads(str(data["init_kwargs_json"]))
        config = TeacherConfig.from_upstream(kwargs, int(data["neural_rendering_resolution"]), source=str(p))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: init_kwargs_json is not JSON ({e})") from None
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state = {k[3:]: torch.from_numpy(np.array(data[k], dtype=np.float32)) for k in data if k.startswith("sd/")}
    if not state:
        raise CheckpointError(f"{p}: reference file has no weights (sd/<key> arrays)")
    z, c, c_cond, psi = (np.asarray(data[k], dtype=np.float32) for k in ("z", "c", "c_cond", "psi"))
    B = z.shape[0] if z.ndim == 2 else -1
    shapes = {"z": (z.ndim == 2 and z.shape[1] == config.z_dim), "c": (c.ndim == 3 and c.shape[1:] == (B, 25)),
              "c_cond": c_cond.shape == (B, 25), "psi": psi.ndim == 1}
    bad = [k for k, ok in shapes.items() if not ok]
    if bad:
        raise CheckpointError(f"{p}: malformed input array(s) {', '.join(bad)} "
                              f"(z {z.shape}, c {c.shape}, c_cond {c_cond.shape}, psi {psi.shape})")
    cutoff = int(data["cutoff"]) if "cutoff" in files and int(data["cutoff"]) >= 0 else None
    outputs = {k: np.asarray(data[k]) for k in TOLERANCES if k in files}
    return Reference(p, config, state, z, c, c_cond, psi, cutoff, outputs)


@torch.no_grad()
def render_reference(ref: Reference, model: EG3D, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Render the reference's inputs deterministically (backbone noise 'const'); arrays shaped like the reference's."""
    dev = torch.device(device)
    z = torch.from_numpy(ref.z).to(dev)
    c_cond = torch.from_numpy(ref.c_cond).to(dev)
    P, V = len(ref.psi), ref.c.shape[0]
    out: dict[str, list[np.ndarray]] = {"ws": [], "image_raw": [], "image_depth": [], "image": []}
    for pi in range(P):
        ws = model.mapping(z, c_cond, float(ref.psi[pi]), ref.cutoff)
        out["ws"].append(ws.cpu().numpy())
        planes = model.planes(ws)
        views: dict[str, list[np.ndarray]] = {"image_raw": [], "image_depth": [], "image": []}
        for vi in range(V):
            r = model.render_planes(planes, ws, torch.from_numpy(ref.c[vi]).to(dev))
            for k in views:
                views[k].append(getattr(r, k).cpu().numpy())
            if pi == 0 and vi == 0:
                out["feature_image"] = [r.feature_image.cpu().numpy()]
        for k in views:
            out[k].append(np.stack(views[k]))
        if pi == 0:
            pl = planes.cpu().numpy()
            out["planes_sub"] = [pl[:, :, 3::8, 5::8]]
            out["planes_crop"] = [pl[:, :, 120:136, 64:80]]
            out["planes_chmean"] = [pl.astype(np.float64).mean(axis=(2, 3)).astype(np.float32)]
            out["planes_chstd"] = [pl.astype(np.float64).std(axis=(2, 3)).astype(np.float32)]
    stacked = {k: np.stack(v) for k, v in out.items()}
    for k in ("feature_image", "planes_sub", "planes_crop", "planes_chmean", "planes_chstd"):
        stacked[k] = stacked[k][0]
    return stacked


def compare(ref: Reference, rendered: dict[str, np.ndarray]) -> list[Check]:
    """Max absolute error per output present in the reference, against its tolerance."""
    checks = []
    for name, expected in ref.outputs.items():
        got = rendered[name]
        if got.shape != expected.shape:
            raise CheckpointError(f"{ref.path}: output {name} has shape {expected.shape}, the teacher renders {got.shape}")
        err = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64)))) if expected.size else 0.0
        checks.append(Check(name, err, TOLERANCES[name]))
    return checks


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Disable TF32 in cuDNN convolutions and cuBLAS matmuls (on by default for convolutions),
    so a CUDA render is float32 like upstream's reference renders."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def verify_reference(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> list[Check]:
    """Build the reference's teacher from its own weights, render its inputs in strict float32, compare every output."""
    ref = read_reference(path)
    model = build_teacher(ref.config, ref.state, source=str(ref.path)).to(device)
    with strict_float32():
        return compare(ref, render_reference(ref, model, device))


@torch.no_grad()
def write_reference(
    model: EG3D, path: str | os.PathLike[str], z: np.ndarray, c: np.ndarray, c_cond: np.ndarray,
    psi: tuple[float, ...] = (0.7, 1.0), cutoff: int | None = None,
) -> Path:
    """Record ``model``'s deterministic renders of the given inputs as a reference file (same format).

    Useful to pin a converted teacher's output on one machine and check it on another.
    """
    from nerfgan.io import atomic_path

    cfg = model.config
    ref = Reference(Path(path), cfg, {}, np.asarray(z, np.float32), np.asarray(c, np.float32),
                    np.asarray(c_cond, np.float32), np.asarray(psi, np.float32), cutoff, {})
    outputs = render_reference(ref, model, next(model.parameters()).device)
    arrays = {f"sd/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays.update(outputs)
    arrays.update(init_kwargs_json=np.array(json.dumps(cfg.to_upstream())),
                  neural_rendering_resolution=np.array(cfg.neural_rendering_resolution, dtype=np.int64),
                  z=ref.z, c=ref.c, c_cond=ref.c_cond, psi=ref.psi,
                  cutoff=np.array(-1 if cutoff is None else cutoff, dtype=np.int64))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)
