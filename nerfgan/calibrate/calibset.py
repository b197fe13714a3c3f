"""Calibration sets: the student's ONNX inputs and the teacher's renders for the same samples.

``nerfgan calibrate`` writes one ``.npz`` (format ``nerfgan-calibration``, version 1) holding, for N
samples of the training distribution (nerfgan.sampling: sample i is a pure function of (seed, i)),
or the first N samples of an existing render set:

    index (N,) int64, z (N, z_dim), c_cond (N, 25), psi (N,)     the mapping's inputs
    w (N, w_dim), c (N, 25)                                        the student's inputs (INT8 calibration)
    image (N, 3, H, W) float16, image_raw (N, 3, R, R) float16     the teacher's renders (the INT8 gate)
    meta () str                                                    JSON: format, seed, n, pose distribution,
                                                                   teacher and student sha256 and configs

``w`` is the teacher's own style code (its mapping with truncation psi); the student carries the same
frozen mapping, so it is also what the exported mapping produces. ``image_raw`` is the clean
volume-rendered colour, as in render sets. The file is written without timestamps (fixed zip entry
dates) and atomically: the same options give the same bytes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import nerfgan
from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import atomic_path, check_writable, existing_file, file_sha256
from nerfgan.sampling import PoseDistribution
from nerfgan.teacher import limits
from nerfgan.teacher.checked_npz import CheckedNpz

FORMAT = "nerfgan-calibration"
FORMAT_VERSION = 1
INPUT_ARRAYS = ("index", "z", "c_cond", "psi", "w", "c")
TARGET_ARRAYS = ("image", "image_raw")


@dataclass
class CalibrationSet:
    path: Path
    arrays: dict[str, np.ndarray]  # float32 (images converted from float16)
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(len(self.arrays["index"]))

    def student_inputs(self) -> dict[str, np.ndarray]:
        return {"w": self.arrays["w"], "c": self.arrays["c"]}

    def teacher_images(self) -> dict[str, np.ndarray]:
        return {k: self.arrays[k] for k in TARGET_ARRAYS}


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """An uncompressed .npz with fixed entry dates (reproducible bytes), written atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
    return Path(path)


def make_calibration_set(teacher_path: str | os.PathLike[str], student_path: str | os.PathLike[str], n: int,
                         out: str | os.PathLike[str], seed: int = 1, renders: str | os.PathLike[str] | None = None,
                         batch_size: int = 4, progress: bool = False, allow_other_teacher: bool = False) -> Path:
    """Write CALIB.npz (module docstring) for ``student_path`` from ``teacher_path``'s renders (or a render set's).

    The student must record this teacher (nerfgan.teacher.identity); ``allow_other_teacher`` overrides that, and
    the file's metadata says so.
    """
    import torch

    from nerfgan.errors import CheckpointError, ConfigError
    from nerfgan.student.checkpoint import load_student
    from nerfgan.teacher.checkpoint import load_teacher, read_teacher_metadata, resolve_teacher_path
    from nerfgan.teacher.config import TeacherConfig
    from nerfgan.teacher.renders import RenderSet, render_samples

    if n < 1:
        raise UsageError(f"--n: must be at least 1, got {n}")
    if not str(out).endswith(".npz"):
        raise UsageError(f"{out}: the calibration file must end in .npz")
    tpath = resolve_teacher_path(teacher_path)
    existing_file(tpath, "teacher checkpoint")
    student = load_student(student_path)
    try:  # the teacher's config from its metadata: its weights are only read when it renders
        teacher_config = TeacherConfig.from_json(read_teacher_metadata(tpath)["config"], source=str(tpath))
    except (KeyError, ConfigError) as e:
        raise CheckpointError(f"{tpath}: teacher config unreadable ({e})") from None
    if student.config.teacher != teacher_config:
        raise UsageError(f"{student_path}: this student was distilled from another teacher config than {tpath}")
    teacher = load_teacher(tpath)  # its weights digest is checked; it also renders the samples below
    teacher_check = _check_teacher(teacher, teacher_path, student_path, allow_other_teacher)
    check_writable(out, "calibration file")
    dist = PoseDistribution()
    meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "nerfgan_version": nerfgan.__version__,
                            "n": int(n), "teacher_sha256": file_sha256(tpath), "student_sha256": file_sha256(student_path),
                            "teacher_config": json.loads(teacher_config.to_json()), "teacher_check": teacher_check}
    if renders is not None:
        rs = RenderSet.open(renders)
        if rs.teacher_sha256 != meta["teacher_sha256"]:
            raise InputFileError(f"{renders}: rendered by another teacher file than {tpath}")
        if len(rs) < n:
            raise UsageError(f"--n {n}: the render set {renders} has only {len(rs)} samples")
        got = rs.load(range(n))
        arrays = {k: got[k] for k in INPUT_ARRAYS + TARGET_ARRAYS}
        meta.update({"seed": rs.seed, "pose_distribution": json.loads(rs.dist.to_json()), "source": "render set"})
    else:
        from nerfgan.sampling import draw
        from tqdm import tqdm  # type: ignore[import-untyped]

        r = teacher_config.rendering
        parts: list[dict[str, np.ndarray]] = []
        with torch.no_grad(), tqdm(total=n, desc="teacher renders", unit="img", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                s = draw(seed, range(start, min(n, start + batch_size)), dist, r.avg_camera_radius, r.avg_camera_pivot,
                         teacher_config.z_dim)
                parts.append(render_samples(teacher, s))
                bar.update(len(s.index))
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in INPUT_ARRAYS + TARGET_ARRAYS}
        meta.update({"seed": int(seed), "pose_distribution": json.loads(dist.to_json()), "source": "teacher"})
    stored = {k: np.ascontiguousarray(arrays[k], dtype=np.int64 if k == "index" else np.float32) for k in INPUT_ARRAYS}
    stored.update({k: np.ascontiguousarray(arrays[k], dtype=np.float16) for k in TARGET_ARRAYS})
    stored["meta"] = np.array(json.dumps(meta, sort_keys=True))
    return write_npz(out, stored)


def _check_teacher(teacher: Any, teacher_arg: str | os.PathLike[str], student_path: str | os.PathLike[str],
                   allow_other: bool) -> dict[str, Any]:
    from nerfgan.student.checkpoint import read_student_metadata
    from nerfgan.teacher.checkpoint import weights_digest
    from nerfgan.teacher.identity import TEACHER_KEY, check_same_teacher

    meta = read_student_metadata(student_path)
    return check_same_teacher(teacher=str(teacher_arg), teacher_config_json=teacher.config.to_json(),
                              teacher_digest=weights_digest(teacher), engine=str(student_path),
                              engine_config_json=meta.get("config"), engine_teacher_digest=meta.get(TEACHER_KEY),
                              allow_other=allow_other)


def load_calibration_set(path: str | os.PathLike[str]) -> CalibrationSet:
    """Read a calibration set. Bounds before allocation: the metadata (at most MAX_NPZ_META_BYTES) is read
    first, then every array's .npy header and zip entry are checked (nerfgan.teacher.checked_npz) against the
    format: ``n`` samples, the widths and resolutions of ARRAY_SHAPES within nerfgan.teacher.limits and equal
    across arrays. Only then is anything decompressed."""
    p = existing_file(path, "calibration file")
    with CheckedNpz(p, "calibration file") as z:
        if "meta" not in z.names:
            raise InputFileError(f"{p}: no calibration metadata (write it with `nerfgan calibrate`)")
        from nerfgan.jsonfile import loads

        try:
            meta = loads(z.read_text("meta", limits.MAX_NPZ_META_BYTES), f"{p}: meta", "calibration metadata", 1 << 16)
        except InputFileError as e:
            raise InputFileError(f"{p}: calibration metadata is not JSON (write it with `nerfgan calibrate`): "
                                 f"{str(e).removeprefix(f'{p}: meta: ')[:160]}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise InputFileError(f"{p}: not a nerfgan calibration file (format {found!r})")
        missing = [k for k in INPUT_ARRAYS + TARGET_ARRAYS if k not in z.names]
        if missing:
            raise InputFileError(f"{p}: calibration file lacks {', '.join(missing)}")
        n = meta.get("n")
        if type(n) is not int or n < 1:
            raise InputFileError(f"{p}: calibration metadata n = {n!r} is not a positive integer")
        sizes: dict[str, int] = {"n": n}
        declared = {k: z.declared(k) for k in INPUT_ARRAYS + TARGET_ARRAYS}
        for k, (shape, dtype) in declared.items():
            _check_shape(p, k, shape, dtype, sizes)
        arrays = {k: z.read(k, shape, dtype) for k, (shape, dtype) in declared.items()}
    arrays = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in arrays.items()}
    return CalibrationSet(p, arrays, meta)


# Name -> (dtypes, shape): a shape entry is a number, or a named size that must be the same in every array and
# within its limit (n: the metadata's sample count). make_calibration_set writes the first dtype listed.
ARRAY_SHAPES: dict[str, tuple[tuple[str, ...], tuple[int | str, ...]]] = {
    "index": (("int64",), ("n",)), "z": (("float32",), ("n", "z_dim")), "c_cond": (("float32",), ("n", 25)),
    "psi": (("float32",), ("n",)), "w": (("float32",), ("n", "w_dim")), "c": (("float32",), ("n", 25)),
    "image": (("float16", "float32"), ("n", 3, "H", "H")), "image_raw": (("float16", "float32"), ("n", 3, "R", "R")),
}
_SIZE_LIMITS = {"z_dim": ("MAX_Z_DIM", limits.MAX_Z_DIM), "w_dim": ("MAX_Z_DIM", limits.MAX_Z_DIM),
                "H": ("MAX_IMAGE_RESOLUTION", limits.MAX_IMAGE_RESOLUTION),
                "R": ("MAX_NEURAL_RENDERING_RESOLUTION", limits.MAX_NEURAL_RENDERING_RESOLUTION)}


def _check_shape(p: Path, name: str, shape: tuple[int, ...], dtype: np.dtype[Any], sizes: dict[str, int]) -> None:
    dtypes, pattern = ARRAY_SHAPES[name]
    expected = " x ".join(str(d) for d in pattern)
    if dtype.name not in dtypes or len(shape) != len(pattern):
        raise InputFileError(f"{p}: array {name} is {dtype} {shape}, expected {' or '.join(dtypes)} ({expected})")
    for dim, got in zip(pattern, shape):
        if isinstance(dim, int) or dim in sizes:
            want = dim if isinstance(dim, int) else sizes[dim]
            if got != want:
                raise InputFileError(f"{p}: array {name} is {shape}, expected ({expected}) with {dim} = {want}")
            continue
        limit, high = _SIZE_LIMITS[dim]
        if not 1 <= got <= high:
            raise InputFileError(f"{p}: array {name} is {shape}: {dim} = {got} is outside 1..{high} ({limit})")
        sizes[dim] = got
