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
from nerfgan.io import atomic_path, existing_file, file_sha256
from nerfgan.sampling import PoseDistribution

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
                         batch_size: int = 4, progress: bool = False) -> Path:
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
    dist = PoseDistribution()
    meta: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "nerfgan_version": nerfgan.__version__,
                            "n": int(n), "teacher_sha256": file_sha256(tpath), "student_sha256": file_sha256(student_path),
                            "teacher_config": json.loads(teacher_config.to_json())}
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

        teacher = load_teacher(tpath)
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


def load_calibration_set(path: str | os.PathLike[str]) -> CalibrationSet:
    p = existing_file(path, "calibration file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputFileError(f"{p}: not a readable .npz calibration file ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (KeyError, json.JSONDecodeError):
        raise InputFileError(f"{p}: no calibration metadata (write it with `nerfgan calibrate`)") from None
    if meta.get("format") != FORMAT:
        raise InputFileError(f"{p}: not a nerfgan calibration file (format {meta.get('format')!r})")
    missing = [k for k in INPUT_ARRAYS + TARGET_ARRAYS if k not in arrays]
    if missing:
        raise InputFileError(f"{p}: calibration file lacks {', '.join(missing)}")
    n = len(arrays["index"])
    bad = [k for k in INPUT_ARRAYS + TARGET_ARRAYS if len(arrays[k]) != n]
    if bad:
        raise InputFileError(f"{p}: arrays {', '.join(bad)} do not have {n} samples")
    arrays = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in arrays.items()}
    return CalibrationSet(p, arrays, meta)
