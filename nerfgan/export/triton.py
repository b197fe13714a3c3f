"""A Triton Inference Server model repository for the two exported files, chained by an ensemble.

    <repo>/README.md                          what is served and how to call it
    <repo>/nerfgan_mapping/config.pbtxt       (z, c_cond, psi) -> w               onnxruntime_onnx or python
    <repo>/nerfgan_mapping/1/model.onnx       (+ model.py with the python backend)
    <repo>/nerfgan_student/config.pbtxt       (w, c) -> image, image_raw           onnxruntime_onnx, tensorrt_plan or python
    <repo>/nerfgan_student/1/model.onnx | model.plan   (+ model.py with the python backend)
    <repo>/nerfgan/config.pbtxt               ensemble: (z, c_cond, psi, c) -> image, image_raw; w stays server-side
    <repo>/nerfgan/1/                         empty (Triton wants a version directory for an ensemble too)

Student backends (``student_backend``): 'onnxruntime' (Triton's ONNX Runtime backend for both models),
'tensorrt' (the student as a TensorRT plan, the mapping in ONNX Runtime) and 'python' (both models in
Triton's Python backend running nerfgan.runtime; see nerfgan.export.triton_python: for CPU-only
servers and tests). They differ only in the composing models' platform/backend line and files; the
ensemble config is the same text for all three.

Tensor names, shapes and dtypes come from nerfgan.runtime.spec. Every model batches
(max_batch_size >= 1), so the batch axis ``B`` is implicit and left out of ``dims``. A tensor that is
only ``(B,)`` (psi) is declared ``dims: [ 1 ]``: clients send it as ``(B, 1)``. The composing model
that takes it adds ``reshape: { shape: [ ] }`` so the model itself sees ``(B,)``; the ensemble input
carries no reshape (Triton infers ensemble tensor shapes from the composing models' declared dims, and
refuses an ensemble whose input is reshaped to ``[-1]`` while the mapping declares ``[-1, 1]``).

The config.pbtxt files are written as protobuf text format by this module (no tritonclient needed).
The repository is built in a temporary directory beside its destination and renamed into place, so
a failed or interrupted run leaves no half-written repository behind.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nerfgan.errors import ConfigError, InputFileError, UsageError
from nerfgan.io import (LOCK_FILE, OWNER_FILE, atomic_dir, check_may_replace, claim_dir, file_sha256, mark_dir,
                        owner_record)
from nerfgan.export.triton_python import MODEL_FILE, MODEL_PY
from nerfgan.runtime.spec import BATCH, ModelSpec, TensorSpec

VERSION = 1  # the one model version written
OWNER_KIND = "triton repository"  # nerfgan.io owner-file kind: what --triton may replace
# student_backend -> (the student's config line naming who runs it, its model file name)
BACKENDS = {
    "onnxruntime": ('platform: "onnxruntime_onnx"', "model.onnx"),
    "tensorrt": ('platform: "tensorrt_plan"', "model.plan"),
    "python": ('backend: "python"', "model.onnx"),  # + model.py (nerfgan.export.triton_python)
}
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
TRITON_DTYPES = {  # numpy dtype name -> Triton DataType
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonNames:
    """Model names in the repository; each is also its directory name."""

    mapping: str = "nerfgan_mapping"  # EG3D's mapping network (model.onnx)
    student: str = "nerfgan_student"  # the distilled generator (model.onnx or model.plan)
    ensemble: str = "nerfgan"  # mapping -> student, the model clients call

    def __post_init__(self) -> None:
        for option, name in (("names.mapping", self.mapping), ("names.student", self.student),
                             ("names.ensemble", self.ensemble)):
            if not _NAME.fullmatch(name):
                raise UsageError(f"{option}: {name!r} is not a valid model/directory name "
                                 "(letters, digits, '_', '.', '-'; not starting with '.' or '-')")
        if len({self.mapping, self.student, self.ensemble}) != 3:
            raise UsageError(f"names: the mapping, student and ensemble names must differ, got {self}")


@dataclass(frozen=True)
class TritonServing:
    """How Triton batches and places the mapping and student models (the ensemble only forwards)."""

    max_batch_size: int  # largest batch Triton forms or accepts; >= 1
    instance_kind: str = "KIND_AUTO"  # one of INSTANCE_KINDS
    instance_count: int = 1  # model instances per device (KIND_GPU) or in all (KIND_CPU)
    dynamic_batching: bool = True  # let Triton merge requests into batches
    preferred_batch_sizes: tuple[int, ...] = ()  # batch sizes the scheduler aims for; () = as large as possible
    max_queue_delay_us: int = 100  # microseconds a request may wait for others to batch with

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise UsageError(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        if self.instance_kind not in INSTANCE_KINDS:
            raise UsageError(f"instance_kind: must be one of {', '.join(INSTANCE_KINDS)}, got {self.instance_kind!r}")
        if self.instance_count < 1:
            raise UsageError(f"instance_count: must be >= 1, got {self.instance_count}")
        if self.max_queue_delay_us < 0:
            raise UsageError(f"max_queue_delay_us: must be >= 0, got {self.max_queue_delay_us}")
        if self.preferred_batch_sizes and not self.dynamic_batching:
            raise UsageError("preferred_batch_sizes: given, but dynamic_batching is off")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise UsageError(f"preferred_batch_sizes: {bad} outside 1..max_batch_size ({self.max_batch_size})")


def triton_dtype(tensor: TensorSpec, model: str) -> str:
    """Triton's TYPE_* name for the tensor's numpy dtype; ConfigError naming the tensor if it has none."""
    try:
        return TRITON_DTYPES[tensor.dtype]
    except KeyError:
        raise ConfigError(f"{model}: tensor {tensor.name!r} has dtype {tensor.dtype!r}, which Triton config has no "
                          f"type for (known: {', '.join(TRITON_DTYPES)})") from None


def triton_dims(tensor: TensorSpec, model: str) -> tuple[list[int], list[int] | None]:
    """(dims, reshape) of a batched tensor: its shape without the leading 'B'; (B,) -> ([1], [])."""
    if not tensor.shape or tensor.shape[0] != BATCH:
        raise ConfigError(f"{model}: tensor {tensor.name!r} has shape {tensor.shape}; Triton batching needs the batch "
                          f"axis {BATCH!r} first")
    rest = tensor.shape[1:]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in rest):
        raise ConfigError(f"{model}: tensor {tensor.name!r} has shape {tensor.shape}; only the first axis may be "
                          f"{BATCH!r}, the others must be positive integers")
    dims = [int(d) for d in rest]
    return (dims, None) if dims else ([1], [])


def mapping_backend(student_backend: str) -> str:
    """Who runs the mapping: the Python backend when the student uses it, else ONNX Runtime (never a plan)."""
    return "python" if student_backend == "python" else "onnxruntime"


def model_config_text(name: str, spec: ModelSpec, backend: str, serving: TritonServing) -> str:
    """config.pbtxt of one composing model (the mapping or the student); ``backend``: a key of BACKENDS."""
    parts = [
        f"name: {_quote(name)}",
        BACKENDS[backend][0],
        f"max_batch_size: {serving.max_batch_size}",
        _repeated("input", [_tensor_fields(t, name) for t in spec.inputs]),
        _repeated("output", [_tensor_fields(t, name) for t in spec.outputs]),
        _repeated("instance_group", [[f"count: {serving.instance_count}", f"kind: {serving.instance_kind}"]]),
    ]
    if serving.dynamic_batching:
        parts.append(_dynamic_batching(serving))
    return "\n".join(parts) + "\n"


def ensemble_config_text(names: TritonNames, mapping_spec: ModelSpec, student_spec: ModelSpec,
                         max_batch_size: int) -> str:
    """config.pbtxt of the ensemble: inputs = mapping inputs + the student's other inputs, outputs = the student's.

    The mapping's one output (w) is the intermediate tensor that feeds the student input of the same name.
    """
    wire = link_tensor(mapping_spec, student_spec)
    inputs = list(mapping_spec.inputs) + [t for t in student_spec.inputs if t.name != wire]
    _check_unique([t.name for t in inputs] + [wire] + student_spec.output_names, names.ensemble)
    steps = [
        _step(names.mapping, mapping_spec.input_names, mapping_spec.output_names),
        _step(names.student, student_spec.input_names, student_spec.output_names),
    ]
    return "\n".join([
        f"name: {_quote(names.ensemble)}",
        f"platform: {_quote('ensemble')}",
        f"max_batch_size: {max_batch_size}",
        _repeated("input", [_tensor_fields(t, names.ensemble, reshape=False) for t in inputs]),
        _repeated("output", [_tensor_fields(t, names.ensemble, reshape=False) for t in student_spec.outputs]),
        "ensemble_scheduling {",
        _indent(_repeated("step", steps)),
        "}",
    ]) + "\n"


def link_tensor(mapping_spec: ModelSpec, student_spec: ModelSpec) -> str:
    """Name of the tensor the mapping hands the student (w); ConfigError unless exactly one output matches an input."""
    if len(mapping_spec.outputs) != 1:
        raise ConfigError(f"mapping spec: expected one output to feed the student, got {mapping_spec.output_names}")
    out = mapping_spec.outputs[0]
    if out.name not in student_spec.input_names:
        raise ConfigError(f"student spec: no input named {out.name!r} to take the mapping's output "
                          f"(inputs: {student_spec.input_names})")
    inp = student_spec.input(out.name)
    if (inp.shape, inp.dtype) != (out.shape, out.dtype):
        raise ConfigError(f"specs disagree on {out.name!r}: the mapping outputs {out.shape} {out.dtype}, the student "
                          f"takes {inp.shape} {inp.dtype}")
    return out.name


def write_triton_repository(
    repo_dir: str | os.PathLike[str],
    *,
    mapping_file: str | os.PathLike[str],
    student_file: str | os.PathLike[str],
    mapping_spec: ModelSpec,
    student_spec: ModelSpec,
    student_backend: str,
    max_batch_size: int,
    instance_kind: str = "KIND_AUTO",
    instance_count: int = 1,
    dynamic_batching: bool = True,
    preferred_batch_sizes: Sequence[int] | None = None,
    max_queue_delay_us: int = 100,
    names: TritonNames = TritonNames(),
    plan_max_batch: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the repository (see the module docstring) to ``repo_dir`` atomically and return its absolute path.

    mapping_file: the mapping ONNX file; student_file: the student ONNX file or TensorRT plan, per
    ``student_backend`` ('onnxruntime', 'tensorrt' or 'python'; see the module docstring). plan_max_batch: the largest batch of the plan's
    optimisation profile, if known; a plan must cover max_batch_size. ``repo_dir`` may be missing or empty;
    with ``overwrite`` it may also hold a repository nerfgan wrote (check_destination), which is replaced only
    once the new one is complete. A folder holding anything else is refused and left as it is.
    """
    serving = TritonServing(max_batch_size, instance_kind, instance_count, dynamic_batching,
                            tuple(preferred_batch_sizes or ()), max_queue_delay_us)
    _check_backend(student_backend, student_file, max_batch_size, plan_max_batch, instance_kind)
    _check_inputs({"mapping_file": mapping_file, "student_file": student_file})
    repo = check_destination(repo_dir, overwrite)
    texts = _repository_texts(names, mapping_spec, student_spec, student_backend, serving)
    with atomic_dir(repo) as tmp:
        _fill(tmp, texts, {names.mapping: (Path(mapping_file), "model.onnx"),
                           names.student: (Path(student_file), BACKENDS[student_backend][1])}, names.ensemble)
        written = {str(f.relative_to(tmp)): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        mark_dir(tmp, OWNER_KIND, written)  # the record a later --triton judges the old repository by
        _move_into_place(tmp, repo)
    return repo


def _repository_texts(names: TritonNames, mapping_spec: ModelSpec, student_spec: ModelSpec, student_backend: str,
                      serving: TritonServing) -> dict[str, str]:
    """Relative path -> text of every text file in the repository (all rendered before anything is written)."""
    from nerfgan.export.triton_readme import repository_readme  # (it imports this module)

    texts = {
        f"{names.mapping}/config.pbtxt": model_config_text(names.mapping, mapping_spec,
                                                           mapping_backend(student_backend), serving),
        f"{names.student}/config.pbtxt": model_config_text(names.student, student_spec, student_backend, serving),
        f"{names.ensemble}/config.pbtxt": ensemble_config_text(names, mapping_spec, student_spec,
                                                               serving.max_batch_size),
        "README.md": repository_readme(names, mapping_spec, student_spec, student_backend, serving.max_batch_size),
    }
    if student_backend == "python":
        for model in (names.mapping, names.student):
            texts[f"{model}/{VERSION}/{MODEL_FILE}"] = MODEL_PY
    return texts


def _fill(root: Path, texts: dict[str, str], files: dict[str, tuple[Path, str]], ensemble: str) -> None:
    """Write the texts, copy each model file to <model>/<VERSION>/<file name>, make the ensemble's version dir."""
    for model, (source, file_name) in files.items():
        (root / model / str(VERSION)).mkdir(parents=True)
        shutil.copyfile(source, root / model / str(VERSION) / file_name)
    (root / ensemble / str(VERSION)).mkdir(parents=True)
    for rel, text in texts.items():
        (root / rel).write_text(text, encoding="utf-8")


def _move_into_place(tmp: Path, repo: Path) -> None:
    """Rename the finished ``tmp`` to ``repo``; an existing ``repo`` (checked to be ours) is set aside first and
    deleted only after. A kill in between leaves the old one in a ``.NAME.PID.*`` folder the next write removes."""
    if not repo.exists():
        os.replace(tmp, repo)
        return
    with atomic_dir(repo) as holder:
        os.replace(repo, holder / repo.name)
        try:
            os.replace(tmp, repo)
        except BaseException:
            os.replace(holder / repo.name, repo)
            raise


def _check_backend(backend: str, student_file: str | os.PathLike[str], max_batch_size: int,
                   plan_max_batch: int | None, instance_kind: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"student_backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    suffix = Path(student_file).suffix.lower()
    if suffix in {"tensorrt": (".onnx",)}.get(backend, (".plan", ".engine", ".trt")):
        raise UsageError(f"{student_file}: student_backend is {backend!r}, which does not take a {suffix} file")
    if backend == "tensorrt" and instance_kind == "KIND_CPU":
        raise UsageError("instance_kind: KIND_CPU cannot run a TensorRT plan; use KIND_GPU or KIND_AUTO")
    if backend == "tensorrt" and plan_max_batch is not None and max_batch_size > plan_max_batch:
        raise UsageError(f"max_batch_size: {max_batch_size} exceeds the plan's optimisation profile maximum "
                         f"({plan_max_batch}) of {student_file}; rebuild the plan or lower max_batch_size")


def _check_inputs(files: dict[str, str | os.PathLike[str]]) -> None:
    """InputFileError naming every model file that is missing or not a regular file."""
    problems = [f"{option} {path}: {'not a regular file' if Path(path).exists() else 'not found'}"
                for option, path in files.items() if not Path(path).is_file()]
    if problems:
        raise InputFileError("; ".join(problems))


def check_destination(repo_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    """The absolute repository path, after checking nerfgan may write it (before any work is done).

    Missing or empty: fine. Holding a repository nerfgan wrote (its owner file, or, for repositories from before
    the owner file, nothing but this module's README.md and model folders): fine with ``overwrite``. Anything
    else - a user's working folder, an export folder, files nerfgan did not write - is a UsageError.
    """
    if Path(repo_dir).is_symlink():  # replacing the repository would replace the link, not fill its target
        raise UsageError(f"--triton {repo_dir}: is a symbolic link; give the folder it points to")
    repo = Path(os.path.abspath(repo_dir))  # '.', 'a/..' and trailing slashes name a real directory and parent
    if repo.parent == repo:
        raise UsageError(f"{repo}: cannot be the model repository (it has no parent to build it in)")
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"{repo}: exists and is not a directory; give a directory for the model repository")

    def recognise(p: Path) -> bool:  # written before owner files: our README and model folders, nothing else
        try:
            with open(p / "README.md", encoding="utf-8", errors="replace") as f:
                ours = f.read(64).startswith("# nerfgan Triton model repository")
            models = [e for e in p.iterdir() if e.name != "README.md"]
            return ours and all(e.is_dir() and not e.is_symlink() and (e / "config.pbtxt").is_file() for e in models)
        except OSError:
            return False

    claim_dir(repo, OWNER_KIND, "--triton", recognise)
    if repo.is_dir() and any(e.name not in (LOCK_FILE,) for e in repo.iterdir()) and not overwrite:
        raise UsageError(f"{repo}: model repository directory exists and is not empty; pass overwrite to replace it")
    record = owner_record(repo) if repo.is_dir() else None
    files = record.get("files") if record is not None else None
    if isinstance(files, dict):  # (repositories from before the record are replaced as their owner file allows)
        recorded: dict[str, str | None] = {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}
        present = [str(f.relative_to(repo)) for f in sorted(repo.rglob("*"))
                   if (f.is_file() or f.is_symlink()) and f.name not in (OWNER_FILE, LOCK_FILE)]
        check_may_replace(repo, present, recorded, "--triton")  # the one rule (nerfgan.io.may_replace)
    return repo


def _check_unique(tensor_names: list[str], model: str) -> None:
    duplicates = sorted({n for n in tensor_names if tensor_names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{model}: ensemble tensor names collide: {duplicates} (mapping and student specs share "
                          "names other than the mapping's output)")


def _tensor_fields(tensor: TensorSpec, model: str, reshape: bool = True) -> list[str]:
    """The fields of one input/output entry: name, data_type, dims and, for a (B,) tensor of a composing model
    (``reshape``), the reshape that hands the model (B,). Ensemble tensors never carry one (module docstring)."""
    dims, shape = triton_dims(tensor, model)
    fields = [f"name: {_quote(tensor.name)}", f"data_type: {triton_dtype(tensor, model)}", f"dims: {_ints(dims)}"]
    if reshape and shape is not None:
        fields.append(f"reshape: {{ shape: {_ints(shape)} }}")
    return fields


def _step(model: str, inputs: list[str], outputs: list[str]) -> list[str]:
    """One ensemble step; composing-model tensor names map to ensemble tensors of the same name."""
    fields = [f"model_name: {_quote(model)}", "model_version: -1"]
    fields += [f"input_map {{ key: {_quote(n)} value: {_quote(n)} }}" for n in inputs]
    fields += [f"output_map {{ key: {_quote(n)} value: {_quote(n)} }}" for n in outputs]
    return fields


def _dynamic_batching(serving: TritonServing) -> str:
    fields = [f"preferred_batch_size: {_ints(list(serving.preferred_batch_sizes))}"] if serving.preferred_batch_sizes else []
    fields.append(f"max_queue_delay_microseconds: {serving.max_queue_delay_us}")
    return "dynamic_batching {\n" + _indent("\n".join(fields)) + "\n}"


def _repeated(field: str, entries: list[list[str]]) -> str:
    """``field [ { ... }, { ... } ]`` with one message per entry (each a list of field lines)."""
    blocks = ["{\n" + _indent("\n".join(lines)) + "\n}" for lines in entries]
    return f"{field} [\n" + _indent(",\n".join(blocks)) + "\n]"


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.split("\n"))


def _ints(values: list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"


def _quote(text: str) -> str:
    if not text.isprintable():
        raise ConfigError(f"{text!r}: names in a Triton config must be printable")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
