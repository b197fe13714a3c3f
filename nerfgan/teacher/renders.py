"""Teacher render sets: the teacher's outputs for a seeded sample set, rendered once and stored.

Rendering the teacher dominates CPU distillation (about 1 s per sample for the tiny teacher on
2 cores), so training, INT8 calibration and parity checks read renders from disk instead.

Format ``nerfgan-render-set``, version 1: a directory holding

* ``index.json``: ``format``, ``format_version``, ``nerfgan_version``, ``seed``, ``n`` (the
  requested number of samples), ``shard_size``, ``pose_distribution`` (``PoseDistribution``'s
  fields), ``teacher`` (``path``, ``sha256`` of the teacher file, ``config``: the teacher's
  config JSON), ``render`` (the settings below), ``arrays`` (name -> dtype and per-sample shape)
  and ``shards``: a list of ``{file, start, count, sha256}`` sorted by ``start``.
* ``shard-00000.npz``, ``shard-00001.npz``, ...: shard k holds samples ``k * shard_size`` to
  ``k * shard_size + count - 1`` (count = shard_size, the last may be shorter), as an uncompressed
  ``np.savez`` with the arrays (K = count, R = neural rendering resolution, H = W = image size):

  ==================  ====================  =======================================================
  ``index``           (K,) int64            sample index i: the sample is a pure function of (seed, i)
  ``z``               (K, z_dim) float32    latent (``nerfgan.sampling.draw``)
  ``c``               (K, 25) float32       render camera
  ``c_cond``          (K, 25) float32       conditioning camera of the mapping network
  ``psi``             (K,) float32          truncation psi (cutoff None: all ws truncated)
  ``yaw``, ``pitch``  (K,) float32          render pose, degrees from the frontal view
  ``w``               (K, w_dim) float32    style vector after truncation, ``ws[:, 0]`` (with cutoff
                                            None all num_ws rows are equal)
  ``feature_image``   (K, 32, R, R) float16 volume-rendered features
  ``image_raw``       (K, 3, R, R) float16  ``feature_image[:, :3]``, the clean rendered colour
  ``image``           (K, 3, H, W) float16  super-resolved image, about [-1, 1]
  ``image_depth``     (K, 1, R, R) float32  expected depth along each ray, world units
  ==================  ====================  =======================================================

``image_raw`` is deliberately NOT the teacher's ``TeacherOutput.image_raw``: for 2X
super-resolution at R=64 and 4X at R>=128 upstream returns the colour with the SR block0 output
added in place (``EG3D.raw_quirk``), a by-product of its implementation rather than a rendering.
The student learns to render, so its low-resolution target is the clean volume-rendered colour.

Images and features are float16: relative precision 2**-11, so for values in [-1, 1] the rounding
error is at most 2.4e-4 (about 1e-4 RMS, ~1e-3 at worst for the few values above 2). Quantisation
alone therefore bounds the PSNR of a perfect student at roughly 75 dB (images in [-1, 1]), far
above anything distillation reaches (~30-40 dB); compare with tolerances of ~1e-3, not float32's.
Depth stays float32 (values ~2.7 would lose 1e-3 absolute in float16).

Rendering: ``render_mode='deterministic'``, backbone noise ``'const'``, truncation cutoff None,
non-fused modulated convolution, on CUDA no TF32 and deterministic cuDNN (``reproducible_cuda``);
cameras from ``nerfgan.sampling.draw`` at the teacher's ``avg_camera_radius`` and
``avg_camera_pivot``. The mapping network runs one sample at a time (so ``w`` does not depend on
the batch); synthesis runs ``batch_size`` samples at a time, batches aligned to the shard start.
A set made in one run and one resumed or extended with the same batch size on the same device are
bitwise equal; another batch size or device changes the float32 rounding of later shards (CPU vs
CUDA: up to one float16 step, ~1e-3 in ``image``, ~2e-6 in depth). ``render`` in ``index.json`` records the
settings of the run that wrote it last.

Writing: each shard and then ``index.json`` is written atomically (temporary name, then rename),
so an interrupted run leaves only finished shards. Rerunning with the same teacher file, seed,
pose distribution and shard size keeps every listed shard whose sha256 matches and renders the
rest; a larger ``n`` extends the set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nerfgan
from nerfgan.errors import CheckpointError, ConfigError, InputFileError, UsageError
from nerfgan.io import (atomic_path, check_writable_dir, claim_dir, existing_file, file_sha256, folder_lock,
                        mark_dir)
from nerfgan.sampling import PoseDistribution, Samples, draw
from nerfgan.teacher import limits
from nerfgan.teacher.checked_npz import CheckedNpz
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.generator import EG3D

FORMAT = "nerfgan-render-set"
FORMAT_VERSION = "1"
INDEX = "index.json"
RENDER_SET_KIND = "render set"  # nerfgan.io owner-file kind of a render set folder
RENDER_SETTINGS = {"render_mode": "deterministic", "noise_mode": "const", "truncation_cutoff": None, "fused": False,
                   "cuda_tf32": False, "cudnn_deterministic": True}
FLOAT16_ARRAYS = ("feature_image", "image_raw", "image")
_SHARD_NAME = re.compile(r"shard-\d{5,}\.npz")


def array_specs(config: TeacherConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (dtype, per-sample shape) of every array in a shard, for ``config``."""
    R, H = config.neural_rendering_resolution, config.img_resolution
    f32 = "float32"
    return {
        "index": ("int64", ()), "z": (f32, (config.z_dim,)), "c": (f32, (25,)), "c_cond": (f32, (25,)),
        "psi": (f32, ()), "yaw": (f32, ()), "pitch": (f32, ()), "w": (f32, (config.w_dim,)),
        "feature_image": ("float16", (32, R, R)), "image_raw": ("float16", (3, R, R)),
        "image": ("float16", (3, H, H)), "image_depth": (f32, (1, R, R)),
    }


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def render_targets(model: EG3D, samples: Samples) -> dict[str, torch.Tensor]:
    """Render ``samples`` (one synthesis batch) -> w, feature_image, image_raw, image, image_depth on the model's device.

    The trainer's on-the-fly batches come from here too, so they equal a render set's samples.
    """
    device = next(model.parameters()).device

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(device)

    # One sample at a time: truncation psi is a scalar per call, and w then does not depend on the batch.
    ws = torch.cat([model.mapping(t(samples.z[i:i + 1]), t(samples.c_cond[i:i + 1]), float(samples.psi[i]), None)
                    for i in range(len(samples.index))])
    assert torch.equal(ws, ws[:, :1].expand_as(ws)), "truncation cutoff None must give equal ws rows"
    out = model.synthesis(ws, t(samples.c), noise_mode=str(RENDER_SETTINGS["noise_mode"]),
                          render_mode=str(RENDER_SETTINGS["render_mode"]), fused=bool(RENDER_SETTINGS["fused"]))
    return {"w": ws[:, 0], "feature_image": out.feature_image, "image_raw": out.feature_image[:, :3],
            "image": out.image, "image_depth": out.image_depth}


def render_samples(model: EG3D, samples: Samples) -> dict[str, np.ndarray]:
    """Render ``samples`` (one synthesis batch) -> the shard arrays in float32 (before storage casts)."""
    arrays = {"index": samples.index.astype(np.int64), "z": samples.z, "c": samples.c, "c_cond": samples.c_cond,
              "psi": samples.psi, "yaw": samples.yaw, "pitch": samples.pitch}
    tensors = render_targets(model, samples)
    arrays.update({k: v.detach().to("cpu", torch.float32).numpy() for k, v in tensors.items()})
    return arrays


@contextlib.contextmanager
def reproducible_cuda() -> Iterator[None]:
    """While rendering on CUDA: no TF32 and deterministic cuDNN algorithms, so a render set made on a
    GPU is the same from run to run (and resumes bit for bit). The previous flags are restored."""
    from nerfgan.teacher.reference import strict_float32

    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with strict_float32():
            yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _to_storage(arrays: dict[str, np.ndarray], specs: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    out = {}
    for name, (dtype, shape) in specs.items():
        a = np.ascontiguousarray(arrays[name], dtype=dtype)
        if a.shape[1:] != shape:
            raise AssertionError(f"{name}: per-sample shape {a.shape[1:]}, expected {shape}")
        if dtype == "float16" and not np.isfinite(a).all():
            raise AssertionError(f"{name}: non-finite values after float16 storage (teacher output out of range)")
        out[name] = a
    return out


# ---------------------------------------------------------------------------------------------
@dataclass
class RenderPlan:
    """What :func:`make_render_set` will do: the index header, the shards kept, the shards to render."""

    out_dir: Path
    header: dict[str, Any]  # index.json without "shards"
    keep: list[dict[str, Any]] = field(default_factory=list)  # valid existing shard entries
    todo: list[tuple[int, int]] = field(default_factory=list)  # (start, count) of shards to render

    @property
    def samples_kept(self) -> int:
        return sum(s["count"] for s in self.keep)


def plan_render_set(teacher_path: str | os.PathLike[str], n: int, out_dir: str | os.PathLike[str], seed: int = 0,
                    dist: PoseDistribution = PoseDistribution(), shard_size: int = 64, batch_size: int = 4,
                    device: str = "cpu") -> RenderPlan:
    """Validate the options and compare with an existing set in ``out_dir``; renders nothing."""
    from nerfgan.teacher.checkpoint import read_teacher_metadata, resolve_teacher_path

    for name, value in (("--n", n), ("--shard-size", shard_size), ("--batch-size", batch_size)):
        if value < 1:
            raise UsageError(f"{name}: must be at least 1, got {value}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory (the render set is a directory)")
    claim_dir(out, RENDER_SET_KIND, "-o", lambda p: (p / INDEX).is_file())  # (sets from before owner files)
    check_writable_dir(out, "render set folder")
    tpath = resolve_teacher_path(teacher_path)
    meta = read_teacher_metadata(tpath)
    try:
        config = TeacherConfig.from_json(meta["config"], source=str(tpath))
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{tpath}: teacher config unreadable ({e})") from None
    r = config.rendering
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nerfgan_version": nerfgan.__version__,
        "seed": int(seed), "n": int(n), "shard_size": int(shard_size),
        "pose_distribution": json.loads(dist.to_json()),
        "teacher": {"path": str(tpath), "sha256": file_sha256(tpath), "config": json.loads(config.to_json())},
        "render": {**RENDER_SETTINGS, "camera_radius": r.avg_camera_radius, "camera_pivot": list(r.avg_camera_pivot),
                   "neural_rendering_resolution": config.neural_rendering_resolution,
                   "image_resolution": config.img_resolution, "batch_size": int(batch_size), "device": str(device),
                   "torch_version": torch.__version__},
        "arrays": {k: {"dtype": d, "shape": list(s)} for k, (d, s) in array_specs(config).items()},
    }
    expected = {k: (start, min(shard_size, n - start)) for k, start in enumerate(range(0, n, shard_size))}
    plan = RenderPlan(out, header)
    if (out / INDEX).exists():
        old = _read_index(out)
        differ = _differences(old, header)
        if differ:
            raise InputFileError(f"{out}: holds a render set made with another {'; '.join(differ)}; "
                                 "choose a new -o directory")
        too_far = [s for s in old["shards"] if s["start"] + s["count"] > n]
        if too_far:
            have = max(s["start"] + s["count"] for s in old["shards"])
            raise UsageError(f"{out}: already holds samples up to {have}; --n {n} would shrink the set "
                             f"(use --n {have} or more, or a new -o directory)")
        for s in old["shards"]:
            k = s["start"] // shard_size
            if expected.get(k) == (s["start"], s["count"]) and s["file"] == shard_name(k) \
                    and (out / s["file"]).is_file() and file_sha256(out / s["file"]) == s["sha256"]:
                plan.keep.append(s)
    kept = {s["start"] for s in plan.keep}
    plan.todo = [v for v in expected.values() if v[0] not in kept]
    return plan


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes an existing index incompatible with a new run, as 'what: X there, Y asked'."""
    out = []
    a, b = old.get("teacher", {}).get("sha256"), new["teacher"]["sha256"]
    if a != b:
        out.append(f"teacher: {old.get('teacher', {}).get('path')} (sha256 {str(a)[:12]}...) there, "
                   f"{new['teacher']['path']} (sha256 {b[:12]}...) asked")
    for key, what in (("seed", "seed"), ("shard_size", "shard size")):
        if old.get(key) != new[key]:
            out.append(f"{what}: {old.get(key)} there, {new[key]} asked")
    a, b = old.get("pose_distribution") or {}, new["pose_distribution"]
    if a != b:
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        out.append("pose distribution: " + ", ".join(f"{k} {a.get(k)} there, {b.get(k)} asked" for k in fields))
    return out


def _write_index(out: Path, header: dict[str, Any], shards: list[dict[str, Any]]) -> None:
    index = {**header, "shards": sorted(shards, key=lambda s: s["start"])}
    with atomic_path(out / INDEX) as tmp:
        tmp.write_text(json.dumps(index, indent=1) + "\n")


def make_render_set(teacher_path: str | os.PathLike[str], n: int, out_dir: str | os.PathLike[str], seed: int = 0,
                    dist: PoseDistribution = PoseDistribution(), shard_size: int = 64, batch_size: int = 4,
                    device: str = "cpu", progress: bool = True) -> Path:
    """Render samples 0..n-1 of the set ``seed`` with the teacher into ``out_dir`` (resuming what is there).

    ``out_dir`` is missing, empty or a render set (else OutputError); one run at a time holds it (a lock).
    """
    plan = plan_render_set(teacher_path, n, out_dir, seed, dist, shard_size, batch_size, device)
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    from nerfgan.malloc import keep_freed_memory

    with folder_lock(out, what="render set folder", wait=False), keep_freed_memory():
        mark_dir(out, RENDER_SET_KIND)
        plan = plan_render_set(teacher_path, n, out_dir, seed, dist, shard_size, batch_size, device)  # (now locked)
        return _render(plan, teacher_path, n, seed, dist, batch_size, device, progress)


def _render(plan: RenderPlan, teacher_path: str | os.PathLike[str], n: int, seed: int, dist: PoseDistribution,
            batch_size: int, device: str, progress: bool) -> Path:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from nerfgan.teacher.checkpoint import load_teacher

    out, header, shard_size = plan.out_dir, plan.header, int(plan.header["shard_size"])
    shards = list(plan.keep)
    _write_index(out, header, shards)
    if not plan.todo:
        return out
    model = load_teacher(teacher_path, device=device)
    config, r = model.config, model.config.rendering
    specs = array_specs(config)
    with reproducible_cuda(), tqdm(total=n, initial=plan.samples_kept, unit="sample", desc=f"rendering {out.name}",
                                   disable=not progress, dynamic_ncols=True) as bar:
        for start, count in plan.todo:
            parts = []
            for b in range(start, start + count, batch_size):
                samples = draw(seed, range(b, min(b + batch_size, start + count)), dist, r.avg_camera_radius,
                               r.avg_camera_pivot, config.z_dim)
                parts.append(render_samples(model, samples))
                bar.update(len(samples.index))
            arrays = _to_storage({k: np.concatenate([p[k] for p in parts]) for k in specs}, specs)
            name = shard_name(start // shard_size)
            with atomic_path(out / name) as tmp:
                with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
                    np.savez(f, **arrays)  # type: ignore[arg-type]
                digest = file_sha256(tmp)
            shards = [s for s in shards if s["start"] != start] + [
                {"file": name, "start": start, "count": count, "sha256": digest}]
            _write_index(out, header, shards)
    return out


# ---------------------------------------------------------------------------------------------
def _read_index(directory: Path) -> dict[str, Any]:
    from nerfgan.jsonfile import read_json

    path = directory / INDEX
    existing_file(path, "render set index")
    if path.stat().st_size > limits.MAX_INDEX_BYTES:
        raise InputFileError(f"{path}: larger than {limits.MAX_INDEX_BYTES >> 20} MiB (MAX_INDEX_BYTES); "
                             "not a render set index")
    # (a shard entry is about 10 values: MAX_INDEX_VALUES allows some 100,000 shards, millions of samples)
    index = read_json(path, "render set index", limits.MAX_INDEX_BYTES, limits.MAX_INDEX_VALUES)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else None
        raise InputFileError(f"{path}: not a nerfgan render set index (format {found!r}, expected {FORMAT!r})")
    if index.get("format_version") != FORMAT_VERSION:
        raise InputFileError(f"{path}: render set format version {index.get('format_version')!r}, "
                             f"this nerfgan reads {FORMAT_VERSION!r}")
    shards = index.get("shards")
    ok = isinstance(shards, list) and all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and _SHARD_NAME.fullmatch(s["file"])
        and isinstance(s.get("start"), int) and isinstance(s.get("count"), int) and s["count"] >= 1
        and isinstance(s.get("sha256"), str) for s in shards)
    if not ok or not all(isinstance(index.get(k), int) for k in ("seed", "n", "shard_size")) \
            or index["n"] < 1 or index["shard_size"] < 1:
        raise InputFileError(f"{path}: malformed render set index (seed, n, shard_size or shards)")
    return index


class RenderSet:
    """A render set on disk (read side). ``RenderSet.open(dir)``; ``len``; ``load(indices)``; ``shards()``."""

    def __init__(self, directory: Path, index: dict[str, Any], shards: list[dict[str, Any]]) -> None:
        self.directory = directory
        self.index = index  # the parsed index.json
        self.shard_entries = shards  # the shards in use, contiguous from sample 0
        self.seed: int = index["seed"]
        self.shard_size: int = index["shard_size"]
        self.teacher_sha256: str = index["teacher"]["sha256"]
        self.dist = PoseDistribution(**index["pose_distribution"])
        self.config = TeacherConfig.from_json(json.dumps(index["teacher"]["config"]), source=str(directory / INDEX))
        self.neural_rendering_resolution: int = self.config.neural_rendering_resolution  # R
        self.image_resolution: int = self.config.img_resolution  # H = W
        self.specs = array_specs(self.config)
        self._len = sum(s["count"] for s in shards)

    @classmethod
    def open(cls, directory: str | os.PathLike[str], verify: bool = True,
             allow_incomplete: bool = False) -> "RenderSet":
        """Open and validate a render set. ``verify`` checks every shard's sha256 (reads all files);
        ``allow_incomplete`` accepts a set still being rendered (its finished shards from sample 0)."""
        d = Path(directory)
        if not d.is_dir():
            raise InputFileError(f"{d}: render set directory not found")
        index = _read_index(d)
        path = d / INDEX
        try:
            PoseDistribution(**index["pose_distribution"])
            config = TeacherConfig.from_json(json.dumps(index["teacher"]["config"]), source=str(path))
            index["teacher"]["sha256"]
        except (KeyError, TypeError, ConfigError) as e:
            raise InputFileError(f"{path}: malformed render set index ({e})") from None
        size, n = index["shard_size"], index["n"]
        shards, pos = [], 0
        for s in sorted(index["shards"], key=lambda s: s["start"]):
            if s["start"] != pos or s["file"] != shard_name(pos // size) or s["count"] != min(size, n - pos):
                break
            shards.append(s)
            pos += s["count"]
        if pos < n and not allow_incomplete:
            raise InputFileError(f"{d}: incomplete render set ({pos} of {n} samples in contiguous shards); "
                                 "rerun `nerfgan teacher renders` with the same options to finish it")
        sample_bytes = sum(np.dtype(dtype).itemsize * math.prod(shape) for dtype, shape in array_specs(config).values())
        for s in shards:
            f = existing_file(d / s["file"], "render set shard")
            nbytes = f.stat().st_size
            if s["count"] * sample_bytes > nbytes:  # bounds what RenderSet.load allocates by the files' sizes
                raise InputFileError(f"{f}: {path} lists {s['count']} samples of {sample_bytes:,} bytes in this "
                                     f"{nbytes:,}-byte file (shards are stored uncompressed)")
            if verify and file_sha256(f) != s["sha256"]:
                raise InputFileError(f"{f}: shard is corrupt (sha256 differs from {path}); "
                                     "rerun `nerfgan teacher renders` with the same options to re-render it")
        return cls(d, index, shards)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return (f"RenderSet({str(self.directory)!r}, n={len(self)}, seed={self.seed}, "
                f"shards={len(self.shard_entries)}, "
                f"R={self.neural_rendering_resolution}, H={self.image_resolution})")

    def _read_shard(self, entry: dict[str, Any], as_float32: bool) -> dict[str, np.ndarray]:
        """A shard's arrays; each member's declared dtype, shape and sizes are checked before it is read."""
        path = self.directory / entry["file"]
        with CheckedNpz(path, "render set shard") as z:
            arrays = {k: z.read(k, (entry["count"], *shape), dtype) for k, (dtype, shape) in self.specs.items()}
        if not np.array_equal(arrays["index"], np.arange(entry["start"], entry["start"] + entry["count"])):
            raise InputFileError(f"{path}: sample indices do not match its index.json entry")
        if as_float32:
            arrays.update({k: arrays[k].astype(np.float32) for k in FLOAT16_ARRAYS})
        return arrays

    def shards(self, as_float32: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """The shards in order, one dict of arrays at a time (float16 arrays converted unless as_float32=False)."""
        for entry in self.shard_entries:
            yield self._read_shard(entry, as_float32)

    def load(self, indices: Sequence[int] | np.ndarray | None = None, as_float32: bool = True) -> dict[str, np.ndarray]:
        """Arrays for sample positions ``indices`` (default all), in the order given."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.directory}: sample index out of range [0, {len(self)})")
        out = {k: np.empty((idx.size, *shape), dtype=np.float32 if as_float32 and k in FLOAT16_ARRAYS else dtype)
               for k, (dtype, shape) in self.specs.items()}
        which = idx // self.shard_size
        for k in np.unique(which):
            sel = np.nonzero(which == k)[0]
            arrays = self._read_shard(self.shard_entries[int(k)], as_float32)
            local = idx[sel] - self.shard_entries[int(k)]["start"]
            for name in out:
                out[name][sel] = arrays[name][local]
        return out

    def disk_bytes(self) -> int:
        """Bytes on disk of the shards in use and index.json."""
        files = [self.directory / s["file"] for s in self.shard_entries] + [self.directory / INDEX]
        return sum(f.stat().st_size for f in files)

