"""What a TensorRT plan needs at run time, shared by the builder (nerfgan.export.tensorrt) and the runtime.

* the JSON sidecar written beside every plan (``student.plan.json``): TensorRT version, GPU and
  compute capability, the ONNX file's sha256 and nerfgan metadata; :func:`check_sidecar` refuses a
  plan built for another TensorRT version or GPU generation;
* :func:`import_tensorrt`: the module, or an error naming the extra to install;
* :func:`gpu_info`: the current GPU's name and compute capability (torch or cuda-python).

No torch import at module level (the runtime's rule).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from nerfgan.errors import InputFileError, MissingDependencyError, NerfganError
from nerfgan.runtime import spec as S

INSTALL_HINT = "install the extra: pip install 'nerfgan[tensorrt]' (on a machine with an NVIDIA GPU and driver)"


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
            from nerfgan.jsonfile import loads

            d: dict[str, Any] = loads(text, source, "engine sidecar", 1 << 16)
            batch = tuple(int(b) for b in d["batch"])
            if len(batch) != 3 or not isinstance(d["strongly_typed"], bool):
                raise ValueError("batch must be [min, opt, max] and strongly_typed a boolean")
            names = [f.name for f in dataclasses.fields(cls) if f.name not in ("batch", "strongly_typed", "metadata")]
            return cls(**{n: str(d[n]) for n in names}, batch=(batch[0], batch[1], batch[2]),
                       strongly_typed=d["strongly_typed"], metadata={str(k): str(v) for k, v in d["metadata"].items()})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputFileError(f"{source}: malformed engine sidecar ({e})") from None


sidecar_path = S.sidecar_path  # student.plan -> student.plan.json


def read_sidecar(plan_path: str | os.PathLike[str]) -> EngineSidecar:
    """Read the sidecar of ``plan_path`` (contained in its folder, at most S.SIDECAR_MAX_BYTES); InputFileError
    naming the plan if it is missing, too large or malformed."""
    text = S.read_sidecar_text(Path(plan_path), "engine sidecar", "rebuild the plan with nerfgan")
    return EngineSidecar.from_json(text, source=str(sidecar_path(plan_path)))


def check_sidecar(sidecar: EngineSidecar, tensorrt_version: str, gpu_name: str, compute_capability: str,
                  *, plan: str | os.PathLike[str] = "engine plan") -> None:
    """Raise EngineMismatchError if the plan was built for another TensorRT version or compute capability."""
    built = f"TensorRT {sidecar.tensorrt_version} on {sidecar.gpu_name} (compute {sidecar.compute_capability})"
    here = f"TensorRT {tensorrt_version} on {gpu_name} (compute {compute_capability})"
    if sidecar.tensorrt_version != tensorrt_version or sidecar.compute_capability != compute_capability:
        raise EngineMismatchError(f"{plan}: built for {built}, but this machine has {here}; "
                                  "rebuild the plan here (plans are tied to the TensorRT version and GPU)")
