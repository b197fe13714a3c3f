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

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from nerfgan.errors import ConfigError, InputFileError

BATCH = "B"
MAX_DIM = 1 << 16  # largest fixed size a spec may declare (a 65536 px image side, a 65536-wide code)
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
META_TEACHER = "nerfgan.teacher_weights_sha256"  # weights digest of the teacher the student was distilled from
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
        """The input called ``name``; ConfigError when this spec has none (a file's metadata that does not fit)."""
        found = next((t for t in self.inputs if t.name == name), None)
        if found is None:
            raise ConfigError(f"{self.kind} spec: no input {name!r} (it has {self.input_names})")
        return found

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``; ConfigError when this spec has none."""
        found = next((t for t in self.outputs if t.name == name), None)
        if found is None:
            raise ConfigError(f"{self.kind} spec: no output {name!r} (it has {self.output_names})")
        return found

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
        """Parse and check a spec (the nerfgan.io metadata); ConfigError naming ``source`` and the field at fault."""
        def bad(what: str) -> ConfigError:
            return ConfigError(f"{source}: malformed input/output spec ({what})")

        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError, RecursionError) as e:
            raise bad(f"not JSON: {e}") from None
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise bad(f"expected an object with kind one of {', '.join(KINDS)}")

        def tensors(key: str) -> tuple[TensorSpec, ...]:
            items = d.get(key)
            if not isinstance(items, list) or not items or len(items) > 16:
                raise bad(f"{key}: expected a list of 1 to 16 tensors")
            out = []
            for k, t in enumerate(items):
                where = f"{key}[{k}]"
                if not isinstance(t, dict) or not all(isinstance(t.get(f), str) for f in ("name", "dtype", "doc")):
                    raise bad(f"{where}: expected name, dtype and doc strings")
                shape = t.get("shape")
                if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
                        v == BATCH or (type(v) is int and 1 <= v <= MAX_DIM) for v in shape):
                    raise bad(f"{where}.shape: expected 1 to 8 sizes, each {BATCH!r} or an integer in [1, {MAX_DIM}], "
                              f"got {str(shape)[:80]}")
                out.append(TensorSpec(t["name"], tuple(shape), t["dtype"], t["doc"]))
            return tuple(out)

        return cls(str(d["kind"]), tensors("inputs"), tensors("outputs"))


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


MANIFEST_MAX_BYTES = 16 << 20  # a manifest is a few kB; a larger file is not one and is not read
MANIFEST_MAX_VALUES = 1 << 20  # JSON values (nerfgan.jsonfile): a manifest has a few hundred
ONNX_MAX_BYTES = 2 << 30  # protobuf's limit: larger weights live in external data files
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Artifact:
    """One file a manifest lists: ``file`` is a plain name inside the export folder."""

    file: str
    kind: str  # 'mapping', 'student' (other kinds may come; the runtime uses these two)
    precision: str
    format: str  # 'onnx' or 'tensorrt'
    sha256: str  # hex sha256 of the file as exported
    bytes: int  # its size


@dataclass(frozen=True)
class Manifest:
    """A checked manifest.json: ``data`` is the whole JSON object, ``artifacts`` its checked file entries."""

    path: Path
    checkpoint_sha256: str  # the student checkpoint every listed file was exported from
    artifacts: tuple[Artifact, ...]
    data: dict[str, Any]

    def find(self, name: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.file == name), None)


def read_manifest(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an export folder as JSON, checked as :func:`read_export` checks it."""
    return read_export(export_dir).data


def read_export(export_dir: str | os.PathLike[str]) -> Manifest:
    """The checked manifest of an export folder. InputFileError naming the file when the folder is not an export,
    or the manifest is not JSON, lacks a key, has a value of the wrong type, or lists a file that is not a plain name
    (no '/', no '..', not absolute)."""
    from nerfgan.jsonfile import read_json

    d = Path(export_dir)
    path = d / MANIFEST
    if not os.path.lexists(path):
        raise InputFileError(f"{d}: no {MANIFEST} (not an export folder; run nerfgan-export -o {d})")
    try:
        m = read_json(path, "nerfgan export manifest", MANIFEST_MAX_BYTES, MANIFEST_MAX_VALUES)
    except InputFileError as e:
        raise InputFileError(f"{path}: unreadable manifest ({str(e).removeprefix(f'{path}: ')[:200]})") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise InputFileError(f"{path}: not a nerfgan export manifest")

    def bad(what: str) -> InputFileError:
        return InputFileError(f"{path}: malformed manifest: {what}; export again")

    ckpt = m.get("checkpoint")
    if not isinstance(ckpt, dict) or not _is_sha256(ckpt.get("sha256")):
        raise bad("checkpoint.sha256 must be 64 lowercase hex digits")
    entries = m.get("artifacts")
    if not isinstance(entries, list) or not entries:
        raise bad("artifacts must be a non-empty list")
    arts: list[Artifact] = []
    for k, a in enumerate(entries):
        where = f"artifacts[{k}]"
        if not isinstance(a, dict):
            raise bad(f"{where} must be an object")
        for key in ("file", "kind", "precision", "format"):
            if not isinstance(a.get(key), str) or not a[key]:
                raise bad(f"{where}.{key} must be a non-empty string")
        if not _is_sha256(a.get("sha256")):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits")
        size = a.get("bytes")
        if type(size) is not int or not 0 < size <= 1 << 40:
            raise bad(f"{where}.bytes must be a positive integer")
        reason = plain_name_problem(a["file"])
        if reason:
            raise bad(f"{where}.file {a['file'][:80]!r} {reason}")
        if any(x.file == a["file"] for x in arts):
            raise bad(f"{where}.file {a['file'][:80]!r} is listed twice")
        arts.append(Artifact(a["file"], a["kind"], a["precision"], a["format"], a["sha256"], size))
    return Manifest(path, ckpt["sha256"], tuple(arts), m)


def _is_sha256(v: object) -> bool:
    return isinstance(v, str) and _SHA256.fullmatch(v) is not None


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name inside a folder (a '/', '..', an absolute path, ...), or None."""
    if not name or name in (".", "..") or "\0" in name:
        return "is not a file name"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path, not a file name inside the folder"
    if "/" in name or "\\" in name:
        return "is a path, not a plain file name inside the folder"
    if name == MANIFEST:
        return "names the manifest itself"
    return None


SIDECAR_MAX_BYTES = 1 << 20  # a sidecar (TensorRT plan, AOTInductor package) is a few kB; a larger file is not read


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a binary artifact: ``student.plan`` -> ``student.plan.json``, ``student.pt2`` ->
    ``student.pt2.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def read_sidecar_text(artifact: Path, what: str, missing: str) -> str:
    """The text of ``artifact``'s sidecar: contained in its folder, read only up to SIDECAR_MAX_BYTES, UTF-8.
    InputFileError in one line otherwise; ``missing`` ends the message when there is no sidecar."""
    path = sidecar_path(artifact)
    if not os.path.lexists(path):
        raise InputFileError(f"{artifact}: no sidecar {path.name} beside it; {missing}")
    contained(artifact.parent, path, what)
    try:
        with open(path, "rb") as f:
            raw = f.read(SIDECAR_MAX_BYTES + 1)
    except OSError as e:
        raise InputFileError(f"{path}: unreadable ({e.strerror})") from None
    if len(raw) > SIDECAR_MAX_BYTES:
        raise InputFileError(f"{path}: larger than {SIDECAR_MAX_BYTES >> 10} kB, not a nerfgan {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: malformed {what} (not UTF-8 text)") from None


def contained(folder: Path, path: Path, what: str) -> Path:
    """``path`` (inside ``folder`` by name) as a regular file whose real location is inside ``folder`` too: a symlink
    may point elsewhere in the folder, never outside it. InputFileError naming ``path`` and ``what`` otherwise."""
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(path)
    if os.path.commonpath([real_folder, real]) != real_folder:
        raise InputFileError(f"{path}: {what} resolves to {real}, outside {folder}; refused")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise InputFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise InputFileError(f"{path}: {what} unreadable ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{path}: {what} is not a regular file")
    return path


def artifact_path(manifest: Manifest, art: Artifact) -> Path:
    """The checked path of a listed file: a plain name (read_export checked it) whose real location is in the folder."""
    return contained(manifest.path.parent, manifest.path.parent / art.file, f"listed in {MANIFEST}")


def read_checked(path: Path, art: Artifact | None, source: Path | None = None,
                 limit: int = ONNX_MAX_BYTES) -> bytes:
    """The bytes of ``path``, read once; with ``art`` its size is compared with the manifest's before reading and
    its sha256 after, so what is checked is exactly what is then used. InputFileError naming the file on a mismatch.

    Cost for a 200 MB file (measured on one x86 core with SHA extensions): sha256 0.10-0.17 s (1.2-1.9 GB/s; expect
    ~0.5 GB/s, 0.4 s, on CPUs without them), plus reading the file once (0.03 s from the page cache, disk speed
    cold), which ONNX Runtime would do anyway: it gets these bytes. The file is held in memory until loaded.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if art is not None and size != art.bytes:
                raise InputFileError(f"{path}: {size} bytes, but {source or MANIFEST} records {art.bytes} (changed "
                                     "after the export, or an interrupted install); export again")
            if size > limit:
                raise InputFileError(f"{path}: {size} bytes, more than {limit} (an ONNX file keeps larger weights in "
                                     "external data files)")
            data = f.read(min(size, limit) + 1)  # (read(n) allocates n bytes first: the size, not the limit)
    except OSError as e:
        raise InputFileError(f"{path}: unreadable ({e.strerror})") from None
    if art is not None:
        check_sha256(path, hashlib.sha256(data).hexdigest(), art, source)
    return data


def verify_file(path: Path, art: Artifact, source: Path | None = None) -> None:
    """Size and sha256 of ``path`` against its manifest entry, reading it in blocks (for files another library
    opens by name, such as TensorRT plans). Same cost as :func:`read_checked`."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != art.bytes:
                raise InputFileError(f"{path}: {size} bytes, but {source or MANIFEST} records {art.bytes} (changed "
                                     "after the export, or an interrupted install); export again")
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise InputFileError(f"{path}: unreadable ({e.strerror})") from None
    check_sha256(path, h.hexdigest(), art, source)


def check_sha256(path: Path, actual: str, art: Artifact, source: Path | None = None) -> None:
    if actual != art.sha256:
        raise InputFileError(f"{path}: sha256 {actual[:16]}... differs from the {art.sha256[:16]}... that "
                             f"{source or MANIFEST} records (changed after the export, or an interrupted install); "
                             "export again")
