"""ONNX file -> TensorRT plan (``.plan``) plus a JSON sidecar describing what it was built for.

Written against the TensorRT 10.x and 11.x Python APIs:

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

import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import nerfgan
from nerfgan.errors import (
    InputFileError,
    NerfganError,
    UsageError,
)
from nerfgan.io import atomic_path, existing_file, file_sha256
from nerfgan.runtime.plan import (  # noqa: F401  (re-exported: the builder's public names)
    INSTALL_HINT,
    EngineMismatchError,
    EngineSidecar,
    check_sidecar,
    gpu_info,
    import_tensorrt,
    read_sidecar,
    sidecar_path,
)
from nerfgan.runtime.spec import META_KIND, META_PRECISION, PRECISIONS, ModelSpec

STRONGLY_TYPED_SINCE = (10, 12)  # weak typing deprecated in 10.12, removed in 11.0


class EngineBuildError(NerfganError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(m) for m in re.findall(r"\d+", version)[:2])


def strongly_typed(tensorrt_version: str) -> bool:
    """Whether this TensorRT builds strongly typed networks (precision from the ONNX file), as build_engine does."""
    return _version_tuple(tensorrt_version) >= STRONGLY_TYPED_SINCE




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
    typed = strongly_typed(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
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
    if not typed and precision in ("fp16", "int8"):  # weakly typed TensorRT < 10.12 only
        config.set_flag(getattr(trt.BuilderFlag, precision.upper()))  # FP16 / INT8: gone in 11.x
    if precision == "fp32":  # TF32 is on by default (10-bit mantissa): an FP32 plan must meet the FP32 tolerance
        config.clear_flag(trt.BuilderFlag.TF32)
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

    mode = "strongly typed" if typed else f"weakly typed, {precision}"
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
        onnx_sha256=file_sha256(onnx), precision=precision, kind=spec.kind, batch=(batch[0], batch[1], batch[2]),
        strongly_typed=typed, nerfgan_version=nerfgan.__version__,
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
