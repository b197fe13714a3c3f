"""ONNX file -> TensorRT plan (``.plan``) plus a JSON sidecar describing what it was built for.

Written against the TensorRT 10.x and 11.x Python APIs (see notes/deploy.md, section 1):

* TensorRT >= 10.12 builds a strongly typed network (the STRONGLY_TYPED creation flag, ignored but
  accepted on 11.x): the precision lives in the ONNX file itself (FP16 tensors, or Q/DQ nodes for
  INT8), no precision flag is set.
* Below 10.12 the weakly typed path is used: 'fp16' sets BuilderFlag.FP16, 'int8' sets
  BuilderFlag.INT8 so the Q/DQ nodes of the ONNX file are honoured (explicit quantization).

Plans are only valid for the TensorRT version and GPU compute capability that built them; the
sidecar (``student.plan.json`` beside ``student.plan``) records both, and :func:`check_sidecar`
refuses a plan built elsewhere. ``tensorrt`` is imported late, inside the functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import nerfgan
from nerfgan.errors import (
    InputFileError,
    MissingDependencyError,
    NerfganError,
    UsageError,
)
from nerfgan.io import atomic_path, existing_file
from nerfgan.runtime.spec import META_KIND, META_PRECISION, PRECISIONS, ModelSpec

INSTALL_HINT = "install the extra: pip install 'nerfgan[tensorrt]' (on a machine with an NVIDIA GPU and driver)"
STRONGLY_TYPED_SINCE = (10, 12)  # weak typing deprecated in 10.12, removed in 11.0


class EngineBuildError(NerfganError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


class EngineMismatchError(InputFileError):
    """A plan was built for another TensorRT version or GPU compute capability than the one here."""


def import_tensorrt() -> ModuleType:
    """Return the ``tensorrt`` module, or raise MissingDependencyError naming the extra to install.

    A bare ``tensorrt/`` directory (the type stubs installed without the wheel) imports as an
    empty namespace package; it has no ``Builder`` and counts as not installed.
    Imported by name here; :func:`build_engine` then imports it statically, so that mypy checks its
    calls against the tensorrt-stubs package (see .ci/typecheck-tensorrt).
    """
    try:
        trt = importlib.import_module("tensorrt")
    except (ImportError, OSError) as e:  # OSError: the wheel is there but libnvinfer is not
        raise MissingDependencyError(f"TensorRT is not usable ({e}); {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(f"TensorRT is not installed (only its type stubs are); {INSTALL_HINT}")
    return trt


def gpu_info() -> tuple[str, str]:
    """(name, compute capability 'major.minor') of the current CUDA device, via torch or cuda-python."""
    probed = False
    try:
        import torch

        probed = True
        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            return torch.cuda.get_device_name(index), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        rt: Any = importlib.import_module("cuda.bindings.runtime")
        probed = True
        ok = rt.cudaError_t.cudaSuccess
        err, count = rt.cudaGetDeviceCount()
        if err == ok and count > 0:
            err, index = rt.cudaGetDevice()
            err2, prop = rt.cudaGetDeviceProperties(index)
            if err == ok and err2 == ok:
                name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
                return name.rstrip("\x00"), f"{prop.major}.{prop.minor}"
    except ImportError:
        pass
    if not probed:
        raise MissingDependencyError(f"neither torch nor cuda-python is installed to find the GPU; {INSTALL_HINT}")
    raise NerfganError("no CUDA GPU visible: building a TensorRT engine needs an NVIDIA GPU and driver "
                       "(check nvidia-smi and CUDA_VISIBLE_DEVICES)")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(m) for m in re.findall(r"\d+", version)[:2])


@dataclass(frozen=True)
class EngineSidecar:
    """What a plan was built from and for; saved as JSON at :func:`sidecar_path` of the plan."""

    tensorrt_version: str  # trt.__version__ that built the plan, e.g. '10.13.0.35'
    gpu_name: str  # e.g. 'NVIDIA H100 80GB HBM3'
    compute_capability: str  # 'major.minor', e.g. '9.0'
    onnx_sha256: str  # sha256 of the ONNX file the plan was built from
    precision: str  # 'fp32', 'fp16' or 'int8'
    kind: str  # 'mapping' or 'student'
    batch: tuple[int, int, int]  # (min, opt, max) batch of the optimization profile
    strongly_typed: bool  # True when built as a strongly typed network (TensorRT >= 10.12)
    nerfgan_version: str
    created: str  # ISO 8601 time of the build, UTC
    metadata: dict[str, str] = field(default_factory=dict)  # the ONNX file's nerfgan.* metadata

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "engine sidecar") -> EngineSidecar:
        try:
            d: dict[str, Any] = json.loads(text)
            batch = tuple(int(b) for b in d["batch"])
            if len(batch) != 3 or not isinstance(d["strongly_typed"], bool):
                raise ValueError("batch must be [min, opt, max] and strongly_typed a boolean")
            names = [f.name for f in dataclasses.fields(cls) if f.name not in ("batch", "strongly_typed", "metadata")]
            return cls(**{n: str(d[n]) for n in names}, batch=(batch[0], batch[1], batch[2]),
                       strongly_typed=d["strongly_typed"], metadata={str(k): str(v) for k, v in d["metadata"].items()})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputFileError(f"{source}: malformed engine sidecar ({e})") from None


def sidecar_path(plan_path: str | os.PathLike[str]) -> Path:
    """The sidecar of a plan: ``student.plan`` -> ``student.plan.json``."""
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


def read_sidecar(plan_path: str | os.PathLike[str]) -> EngineSidecar:
    """Read the sidecar of ``plan_path``; InputFileError naming the plan if it is missing or malformed."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise InputFileError(f"{plan_path}: no sidecar {path.name} beside the plan; rebuild it with nerfgan")
    return EngineSidecar.from_json(path.read_text(encoding="utf-8"), source=str(path))


def check_sidecar(sidecar: EngineSidecar, tensorrt_version: str, gpu_name: str, compute_capability: str,
                  *, plan: str | os.PathLike[str] = "engine plan") -> None:
    """Raise EngineMismatchError if the plan was built for another TensorRT version or compute capability."""
    built = f"TensorRT {sidecar.tensorrt_version} on {sidecar.gpu_name} (compute {sidecar.compute_capability})"
    here = f"TensorRT {tensorrt_version} on {gpu_name} (compute {compute_capability})"
    if sidecar.tensorrt_version != tensorrt_version or sidecar.compute_capability != compute_capability:
        raise EngineMismatchError(f"{plan}: built for {built}, but this machine has {here}; "
                                  "rebuild the plan here (plans are tied to the TensorRT version and GPU)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_args(spec: ModelSpec, batch: tuple[int, int, int], precision: str, workspace_gib: float,
                onnx_metadata: dict[str, str]) -> None:
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise UsageError(f"batch {tuple(batch)}: need (min, opt, max) with 1 <= min <= opt <= max")
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if not workspace_gib > 0:
        raise UsageError(f"workspace {workspace_gib} GiB: must be positive")
    for key, value in ((META_PRECISION, precision), (META_KIND, spec.kind)):
        if key in onnx_metadata and onnx_metadata[key] != value:
            raise UsageError(f"{key}: the ONNX file says {onnx_metadata[key]!r} but {value!r} was asked for")


def build_engine(onnx_path: str | os.PathLike[str], plan_path: str | os.PathLike[str], *, spec: ModelSpec,
                 batch: tuple[int, int, int], precision: str, workspace_gib: float = 4.0,
                 timing_cache: str | os.PathLike[str] | None = None, onnx_metadata: dict[str, str] | None = None,
                 log: Callable[[str], object] = print) -> Path:
    """Build ``plan_path`` (and its sidecar) from ``onnx_path`` on the current GPU; return the plan path.

    spec: the inputs/outputs of the ONNX file; every input gets the profile shapes of ``batch``.
    batch: (min, opt, max) batch of the one optimization profile.
    precision: 'fp32', 'fp16' or 'int8'; what the ONNX file was exported/quantized for.
    workspace_gib: limit of TensorRT's workspace memory pool, GiB.
    timing_cache: file to load tactic timings from (if it exists) and save them to after the build.
    onnx_metadata: the ONNX file's nerfgan.* metadata_props, copied into the sidecar.
    Nothing is written until the engine is built; on any error no plan or sidecar is left behind.
    """
    onnx = existing_file(onnx_path, "ONNX file")
    metadata = dict(onnx_metadata or {})
    _check_args(spec, batch, precision, workspace_gib, metadata)
    import_tensorrt()  # a usable TensorRT, or MissingDependencyError naming the extra
    import tensorrt as trt  # the same module, imported statically so mypy checks these calls (.ci/typecheck-tensorrt)

    gpu_name, capability = gpu_info()
    strongly_typed = _version_tuple(trt.__version__) >= STRONGLY_TYPED_SINCE
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["(no error reported)"]
        raise EngineBuildError(f"{onnx}: TensorRT {trt.__version__} could not parse the ONNX file:\n  "
                               + "\n  ".join(errors))
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(spec.input_names):
        raise EngineBuildError(f"{onnx}: inputs {names} do not match the {spec.kind} spec's {spec.input_names}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed and precision in ("fp16", "int8"):  # weakly typed TensorRT < 10.12 only
        config.set_flag(getattr(trt.BuilderFlag, precision.upper()))  # FP16 / INT8: gone in 11.x
    profile = builder.create_optimization_profile()
    for t in spec.inputs:
        profile.set_shape(t.name, *(trt.Dims(list(t.concrete(b))) for b in batch))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise InputFileError(f"{cache_path}: timing cache unreadable or made for another GPU/TensorRT; "
                                 "delete it or pass another path")

    mode = "strongly typed" if strongly_typed else f"weakly typed, {precision}"
    log(f"building TensorRT {trt.__version__} engine from {onnx} on {gpu_name} ({mode}, batch {batch})")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx}: TensorRT {trt.__version__} failed to build an engine "
                               "(see the TensorRT messages above)")
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))

    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=capability,
        onnx_sha256=_sha256(onnx), precision=precision, kind=spec.kind, batch=(batch[0], batch[1], batch[2]),
        strongly_typed=strongly_typed, nerfgan_version=nerfgan.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), metadata=metadata)
    plan_file = Path(plan_path)
    sidecar_path(plan_file).unlink(missing_ok=True)  # never leave an old sidecar describing a new plan
    with atomic_path(plan_file) as tmp:
        tmp.write_bytes(bytes(memoryview(plan)))
    try:
        with atomic_path(sidecar_path(plan_file)) as tmp:
            tmp.write_text(sidecar.to_json(), encoding="utf-8")
    except BaseException:
        plan_file.unlink(missing_ok=True)
        raise
    log(f"wrote {plan_file} and {sidecar_path(plan_file).name}")
    return plan_file
