"""What the exported files are: names, shapes, dtypes and meanings of every input and output.

numpy-free and torch-free: the exporter writes these specs into each file's metadata, the runtime
and the Triton repository read them back. ``B`` is the (dynamic) batch axis everywhere.

Two models, chained by an application (or by the Triton ensemble):

    mapping  (z (B, z_dim), c_cond (B, 25), psi (B,))  ->  w (B, w_dim)
             EG3D's own mapping network with truncation psi over the whole code.
    student  (w (B, w_dim), c (B, 25))                  ->  image (B, 3, H, W), image_raw (B, 3, R, R)
             the pose-conditioned mapping, synthesis and super-resolution of the distilled student.

Cameras are nerfgan's 25-value vectors (see nerfgan.camera): a flattened 4x4 cam2world matrix in
OpenCV convention (x right, y down, z forward) followed by the flattened 3x3 normalised intrinsics.
Images are RGB, float32, about [-1, 1] (uint8 = clip(round(x * 127.5 + 128), 0, 255)).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nerfgan.errors import ConfigError, InputFileError

BATCH = "B"
KINDS = ("mapping", "student")
PRECISIONS = ("fp32", "fp16", "int8")

# Keys of the metadata every exported file carries (ONNX metadata_props, plan sidecar, manifest).
META_FORMAT = "nerfgan.format"  # always FORMAT
META_KIND = "nerfgan.kind"  # 'mapping' or 'student'
META_PRECISION = "nerfgan.precision"  # 'fp32', 'fp16' or 'int8'
META_VERSION = "nerfgan.version"  # nerfgan version that exported it
META_CONFIG = "nerfgan.config"  # the StudentConfig JSON (embeds the teacher's config)
META_CAMERA = "nerfgan.camera"  # JSON: radius, pivot, focal the student was trained around
META_CHECKPOINT = "nerfgan.checkpoint_sha256"  # sha256 of the student checkpoint exported
META_IO = "nerfgan.io"  # JSON: this ModelSpec
META_BATCH = "nerfgan.batch"  # JSON: [min, opt, max] batch the export was declared and validated for
FORMAT = "nerfgan-export-1"
MANIFEST = "manifest.json"  # beside the exported files: every artifact, its sha256 and validation figures
MANIFEST_FORMAT = "nerfgan-export-manifest"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints are fixed, 'B' is the batch axis
    dtype: str  # numpy dtype name
    doc: str  # meaning, units and value range

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model spec") -> "ModelSpec":
        try:
            d: dict[str, Any] = json.loads(text)
            return cls(d["kind"], tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t["doc"]) for t in d["inputs"]),
                       tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t["doc"]) for t in d["outputs"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"{source}: malformed input/output spec ({e})") from None


def mapping_spec(z_dim: int, w_dim: int) -> ModelSpec:
    return ModelSpec("mapping", (
        TensorSpec("z", (BATCH, z_dim), "float32", "latent code, standard normal (upstream draws it per seed with "
                   "numpy RandomState(seed).randn)"),
        TensorSpec("c_cond", (BATCH, 25), "float32", "conditioning camera, usually the frontal camera (25 values)"),
        TensorSpec("psi", (BATCH,), "float32", "truncation psi in [0, 1] applied to the whole code; 1 = none"),
    ), (
        TensorSpec("w", (BATCH, w_dim), "float32", "the teacher's style code"),
    ))


def student_spec(w_dim: int, resolution: int, img_resolution: int) -> ModelSpec:
    return ModelSpec("student", (
        TensorSpec("w", (BATCH, w_dim), "float32", "the teacher's style code (output w of the mapping)"),
        TensorSpec("c", (BATCH, 25), "float32", "render camera (25 values), see nerfgan.camera.pose"),
    ), (
        TensorSpec("image", (BATCH, 3, img_resolution, img_resolution), "float32",
                   "final RGB image, about [-1, 1]"),
        TensorSpec("image_raw", (BATCH, 3, resolution, resolution), "float32",
                   "low-resolution RGB (first 3 channels of the feature image), about [-1, 1]"),
    ))


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an export folder; InputFileError naming the folder if it is not one."""
    d = Path(export_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise InputFileError(f"{d}: no {MANIFEST} (not an export folder; run nerfgan-export -o {d})")
    try:
        m: dict[str, Any] = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise InputFileError(f"{path}: not a nerfgan export manifest")
    return m
