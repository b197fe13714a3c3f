"""nerfgan.export.tensorrt on CPU: the missing-TensorRT paths for real, the build against a fake
``tensorrt`` module that records what the builder was asked to do (TensorRT 10.8, 10.13 and 11.4)."""

from __future__ import annotations

import hashlib
import sys
import types
from datetime import datetime
from pathlib import Path

import pytest

from conftest import real_tensorrt_installed

import nerfgan
from nerfgan.errors import (
    InputFileError,
    MissingDependencyError,
    NerfganError,
    OutputError,
    UsageError,
)
from nerfgan.export import tensorrt as T
from nerfgan.runtime.spec import META_KIND, META_PRECISION, mapping_spec, student_spec

STUDENT = student_spec(w_dim=16, resolution=8, img_resolution=16)  # inputs w (B, 16), c (B, 25)
MAPPING = mapping_spec(z_dim=12, w_dim=16)  # inputs z (B, 12), c_cond (B, 25), psi (B,)
PLAN_BYTES = b"\x00fake serialized engine\xff"


class Recorder:
    """What the fake TensorRT was asked to do, and how it should answer."""

    def __init__(self, version: str, inputs: list[str] | None, *, parse_errors: tuple[str, ...] = (),
                 build_ok: bool = True, cache_accepted: bool = True) -> None:
        self.version, self.inputs, self.parse_errors = version, inputs, parse_errors
        self.build_ok, self.cache_accepted = build_ok, cache_accepted
        self.network_flags: int | None = None
        self.parsed: str | None = None
        self.parsed_files: list[tuple[str, int]] = []  # (file name, opset) of every real ONNX file parsed
        self.builder_flags: list[str] = []
        self.pool_limits: dict[str, int] = {}
        self.profiles: list[dict[str, tuple[tuple[int, ...], ...]]] = []
        self.cache_in: bytes | None = None
        self.ignore_mismatch: bool | None = None
        self.built = False


def fake_tensorrt(rec: Recorder) -> types.ModuleType:
    """A ``tensorrt`` module with just the API build_engine uses; 11.x lacks BuilderFlag.FP16/INT8."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = rec.version  # type: ignore[attr-defined]

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str) -> None:
            self.severity = severity

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 1  # the real enum value

    class BuilderFlag:
        TF32 = "TF32"

    if not rec.version.startswith("11."):
        BuilderFlag.FP16 = "FP16"  # type: ignore[attr-defined]
        BuilderFlag.INT8 = "INT8"  # type: ignore[attr-defined]

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class Dims(tuple):  # the real Dims behaves like a tuple
        pass

    class Network:
        def __init__(self) -> None:
            self.input_names: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.input_names)

        def get_input(self, i: int) -> types.SimpleNamespace:
            return types.SimpleNamespace(name=self.input_names[i])

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            rec.parsed = path
            if rec.inputs is None:  # read the real file (export pipeline tests)
                import onnx

                model = onnx.load(path)
                self.network.input_names = [i.name for i in model.graph.input]
                rec.parsed_files.append((Path(path).name, max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))))
            else:
                self.network.input_names = list(rec.inputs)
            return not rec.parse_errors

        @property
        def num_errors(self) -> int:
            return len(rec.parse_errors)

        def get_error(self, i: int) -> str:
            return rec.parse_errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, lo: Dims, opt: Dims, hi: Dims) -> None:
            assert all(isinstance(d, Dims) for d in (lo, opt, hi))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"timings:" + self.data

    class Config:
        def __init__(self) -> None:
            self.cache: TimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            rec.pool_limits[pool] = size

        def set_flag(self, flag: str) -> None:
            rec.builder_flags.append(flag)

        def clear_flag(self, flag: str) -> None:
            rec.builder_flags.append(f"-{flag}")

        def add_optimization_profile(self, profile: Profile) -> int:
            rec.profiles.append(profile.shapes)
            return len(rec.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            rec.cache_in = bytes(data)
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            rec.ignore_mismatch = ignore_mismatch
            self.cache = cache
            return rec.cache_accepted

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            rec.network_flags = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            rec.built = True
            return PLAN_BYTES if rec.build_ok else None

    for cls in (Logger, NetworkDefinitionCreationFlag, BuilderFlag, MemoryPoolType, Dims, OnnxParser, Builder):
        setattr(trt, cls.__name__, cls)
    return trt


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "student.onnx"
    path.write_bytes(b"not really an ONNX file; the fake parser does not read it")
    return path


def install(monkeypatch: pytest.MonkeyPatch, version: str, spec=STUDENT, **answers) -> Recorder:
    """Put a fake TensorRT ``version`` and a fake GPU in place; return the recorder."""
    rec = Recorder(version, spec.input_names, **answers)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    monkeypatch.setattr(T, "gpu_info", lambda: ("Fake GPU", "9.0"))
    return rec


def build(onnx: Path, spec=STUDENT, batch=(1, 4, 8), precision="fp32", **kwargs) -> Path:
    logs: list[str] = []
    return T.build_engine(onnx, onnx.with_name("student.plan"), spec=spec, batch=batch, precision=precision,
                          log=logs.append, **kwargs)


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- TensorRT not installed ------------------------------------------------------------------------

def test_import_tensorrt_real_environment_is_missing() -> None:
    if real_tensorrt_installed():
        pytest.skip("a real TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match=r"nerfgan\[tensorrt\]"):
        T.import_tensorrt()


def test_stub_only_namespace_package_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs gives
    with pytest.raises(MissingDependencyError, match=r"only its type stubs.*nerfgan\[tensorrt\]"):
        T.import_tensorrt()


def test_absent_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'nerfgan\[tensorrt\]'"):
        T.import_tensorrt()


def test_wheel_without_libnvinfer_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "tensorrt":
                raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(MissingDependencyError, match=r"libnvinfer.*nerfgan\[tensorrt\]"):
        T.import_tensorrt()


def test_build_without_tensorrt_writes_nothing(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(MissingDependencyError, match=r"nerfgan\[tensorrt\]"):
        build(onnx_file, timing_cache=onnx_file.with_name("timing.cache"))
    assert only(onnx_file.parent) == ["student.onnx"]


# --- the GPU probe ---------------------------------------------------------------------------------

def fake_torch(available: bool) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(is_available=lambda: available, current_device=lambda: 1,
                                 get_device_capability=lambda i: (8, 6), get_device_name=lambda i: f"RTX #{i}")
    return types.SimpleNamespace(cuda=cuda)


def fake_cuda_runtime(count: int) -> types.SimpleNamespace:
    prop = types.SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0)
    return types.SimpleNamespace(cudaError_t=types.SimpleNamespace(cudaSuccess=0),
                                 cudaGetDeviceCount=lambda: (0, count), cudaGetDevice=lambda: (0, 0),
                                 cudaGetDeviceProperties=lambda i: (0, prop))


def test_gpu_info_from_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True))
    assert T.gpu_info() == ("RTX #1", "8.6")


def test_gpu_info_falls_back_to_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False))  # a CPU build of torch
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake_cuda_runtime(1))
    assert T.gpu_info() == ("NVIDIA H100 80GB HBM3", "9.0")


def test_gpu_info_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", fake_cuda_runtime(0))
    with pytest.raises(NerfganError, match="no CUDA GPU"):
        T.gpu_info()


def test_gpu_info_without_torch_or_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(MissingDependencyError, match=r"nerfgan\[tensorrt\]"):
        T.gpu_info()


def test_build_on_this_cpu_machine_writes_nothing(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rec = Recorder("10.13.0.35", STUDENT.input_names)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(NerfganError, match="no CUDA GPU"):
        build(onnx_file)
    assert rec.network_flags is None  # checked before TensorRT is touched
    assert only(onnx_file.parent) == ["student.onnx"]


# --- building with a fake TensorRT -----------------------------------------------------------------

@pytest.mark.parametrize("version", ["10.13.0.35", "11.4.0.106"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_strongly_typed_from_10_12(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, version: str,
                                   precision: str) -> None:
    rec = install(monkeypatch, version)
    plan = build(onnx_file, precision=precision)
    assert rec.network_flags == 1 << 1  # 1 << STRONGLY_TYPED
    assert rec.builder_flags == (["-TF32"] if precision == "fp32" else [])  # precision comes from the ONNX file
    assert T.read_sidecar(plan).strongly_typed is True


@pytest.mark.parametrize(("precision", "flags"), [("fp32", ["-TF32"]), ("fp16", ["FP16"]), ("int8", ["INT8"])])
def test_weakly_typed_below_10_12(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, precision: str,
                                  flags: list[str]) -> None:
    rec = install(monkeypatch, "10.8.0.43")
    plan = build(onnx_file, precision=precision)
    assert rec.network_flags == 0
    assert rec.builder_flags == flags
    assert T.read_sidecar(plan).strongly_typed is False


@pytest.mark.parametrize(("spec", "expected"), [
    (STUDENT, {"w": ((2, 16), (4, 16), (8, 16)), "c": ((2, 25), (4, 25), (8, 25))}),
    (MAPPING, {"z": ((2, 12), (4, 12), (8, 12)), "c_cond": ((2, 25), (4, 25), (8, 25)), "psi": ((2,), (4,), (8,))}),
])
def test_one_profile_with_every_input(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, spec, expected) -> None:
    rec = install(monkeypatch, "10.13.0.35", spec)
    build(onnx_file, spec=spec, batch=(2, 4, 8), workspace_gib=1.5)
    assert rec.profiles == [expected]
    assert rec.pool_limits == {"WORKSPACE": 3 << 29}
    assert rec.parsed == str(onnx_file)


def test_plan_and_sidecar_round_trip(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    install(monkeypatch, "10.13.0.35")
    meta = {META_KIND: "student", META_PRECISION: "fp16", "nerfgan.checkpoint_sha256": "ab" * 32}
    plan = build(onnx_file, precision="fp16", onnx_metadata=meta)
    assert plan == onnx_file.with_name("student.plan")
    assert plan.read_bytes() == PLAN_BYTES
    assert T.sidecar_path(plan).name == "student.plan.json"
    assert only(plan.parent) == ["student.onnx", "student.plan", "student.plan.json"]
    car = T.EngineSidecar.from_json(T.sidecar_path(plan).read_text())
    assert (car.tensorrt_version, car.gpu_name, car.compute_capability) == ("10.13.0.35", "Fake GPU", "9.0")
    assert car.onnx_sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert (car.precision, car.kind, car.batch, car.strongly_typed) == ("fp16", "student", (1, 4, 8), True)
    assert car.nerfgan_version == nerfgan.__version__
    assert datetime.fromisoformat(car.created).tzinfo is not None
    assert car.metadata == meta
    assert T.EngineSidecar.from_json(car.to_json()) == car


def test_malformed_or_missing_sidecar(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no sidecar student.plan.json"):
        T.read_sidecar(tmp_path / "student.plan")
    (tmp_path / "student.plan.json").write_text(" " * ((1 << 20) + 1))  # read no further than SIDECAR_MAX_BYTES
    with pytest.raises(InputFileError, match="larger than 1024 kB, not a nerfgan engine sidecar"):
        T.read_sidecar(tmp_path / "student.plan")
    with pytest.raises(InputFileError, match="malformed engine sidecar"):
        T.EngineSidecar.from_json('{"batch": [1, 2]}', source="x.plan.json")


def test_parser_errors_reported_and_nothing_written(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    rec = install(monkeypatch, "10.13.0.35", parse_errors=("node /g/conv: unsupported op Foo", "In node 7: bad"))
    with pytest.raises(T.EngineBuildError, match=r"(?s)could not parse.*unsupported op Foo.*In node 7: bad"):
        build(onnx_file, timing_cache=onnx_file.with_name("timing.cache"))
    assert not rec.built
    assert only(onnx_file.parent) == ["student.onnx"]


def test_inputs_not_matching_the_spec(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    rec = install(monkeypatch, "10.13.0.35")
    rec.inputs = ["w", "camera"]
    with pytest.raises(T.EngineBuildError, match=r"\['w', 'camera'\].*\['w', 'c'\]"):
        build(onnx_file)
    assert only(onnx_file.parent) == ["student.onnx"]


def test_failed_build_writes_nothing(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    rec = install(monkeypatch, "11.4.0.106", build_ok=False)
    with pytest.raises(T.EngineBuildError, match="failed to build"):
        build(onnx_file, timing_cache=onnx_file.with_name("timing.cache"))
    assert rec.built
    assert only(onnx_file.parent) == ["student.onnx"]


def test_timing_cache_saved_then_loaded(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    cache = onnx_file.parent / "caches" / "trt.cache"
    rec = install(monkeypatch, "10.13.0.35")
    build(onnx_file, timing_cache=cache)
    assert rec.cache_in == b"" and rec.ignore_mismatch is False
    assert cache.read_bytes() == b"timings:"
    rec = install(monkeypatch, "10.13.0.35")
    build(onnx_file, timing_cache=cache)
    assert rec.cache_in == b"timings:"
    assert cache.read_bytes() == b"timings:timings:"


def test_rejected_timing_cache(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    cache = onnx_file.with_name("trt.cache")
    cache.write_bytes(b"from another GPU")
    rec = install(monkeypatch, "10.13.0.35", cache_accepted=False)
    with pytest.raises(InputFileError, match="trt.cache"):
        build(onnx_file, timing_cache=cache)
    assert not rec.built
    assert cache.read_bytes() == b"from another GPU"
    assert only(onnx_file.parent) == ["student.onnx", "trt.cache"]


def test_sidecar_failure_removes_the_plan(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    install(monkeypatch, "10.13.0.35")
    onnx_file.with_name("student.plan").write_bytes(b"old plan")
    onnx_file.with_name("student.plan.json").write_text("{}")  # an old sidecar must not survive either

    def disk_full(self: T.EngineSidecar) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(T.EngineSidecar, "to_json", disk_full)
    with pytest.raises(OutputError, match="student.plan.json: cannot write .No space left"):
        build(onnx_file)
    assert only(onnx_file.parent) == ["student.onnx"]


@pytest.mark.parametrize("batch", [(0, 1, 1), (2, 1, 4), (1, 8, 4), (1, 2)])
def test_bad_batch(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, batch) -> None:
    rec = install(monkeypatch, "10.13.0.35")
    with pytest.raises(UsageError, match="1 <= min <= opt <= max"):
        build(onnx_file, batch=batch)
    assert rec.network_flags is None
    assert only(onnx_file.parent) == ["student.onnx"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"precision": "bf16"}, "expected one of fp32, fp16, int8"),
    ({"workspace_gib": 0.0}, "must be positive"),
    ({"precision": "fp32", "onnx_metadata": {META_PRECISION: "int8"}}, "ONNX file says 'int8'"),
    ({"onnx_metadata": {META_KIND: "mapping"}}, "ONNX file says 'mapping'"),
])
def test_bad_options(monkeypatch: pytest.MonkeyPatch, onnx_file: Path, kwargs, message: str) -> None:
    install(monkeypatch, "10.13.0.35")
    with pytest.raises(UsageError, match=message):
        build(onnx_file, **kwargs)
    assert only(onnx_file.parent) == ["student.onnx"]


def test_missing_onnx_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, "10.13.0.35")
    with pytest.raises(InputFileError, match="student.onnx: ONNX file not found"):
        build(tmp_path / "student.onnx")
    assert only(tmp_path) == []


# --- checking a sidecar against this machine ------------------------------------------------------

SIDECAR = T.EngineSidecar(tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100", compute_capability="9.0",
                          onnx_sha256="0" * 64, precision="fp16", kind="student", batch=(1, 4, 8),
                          strongly_typed=True, nerfgan_version="0.1.0", created="2026-12-01T00:00:00+00:00")


def test_check_sidecar_accepts_the_same_machine() -> None:
    T.check_sidecar(SIDECAR, "10.13.0.35", "NVIDIA H100", "9.0")  # does not raise
    T.check_sidecar(SIDECAR, "10.13.0.35", "NVIDIA H100 NVL", "9.0")  # another GPU of the same capability


@pytest.mark.parametrize(("version", "capability"), [("11.4.0.106", "9.0"), ("10.13.0.35", "8.9")])
def test_check_sidecar_refuses_another_build(version: str, capability: str) -> None:
    with pytest.raises(T.EngineMismatchError, match=r"(?s)student\.plan: built for TensorRT 10\.13\.0\.35.*"
                       rf"compute 9\.0.*this machine has TensorRT {version}.*compute {capability}") as e:
        T.check_sidecar(SIDECAR, version, "NVIDIA L40S", capability, plan="student.plan")
    assert isinstance(e.value, InputFileError)


# --- plans in the export pipeline: held to their ONNX file's gate ---------------------------------

def fake_plans(monkeypatch: pytest.MonkeyPatch, version: str, error: float = 0.0) -> Recorder:
    """A fake TensorRT builds the plans; each 'plan' runs as the ONNX file it was built from (ONNX Runtime)
    plus ``error`` times the output's scale of relative error, in place of the runtime's TensorRT backend."""
    import numpy as np

    from nerfgan.export import validate as V

    rec = install(monkeypatch, version, spec=STUDENT)
    rec.inputs = None

    def plan_runner(path, spec):
        source = Path(path).with_suffix(".onnx")

        class Opened:
            def __init__(self) -> None:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.log_severity_level = 3
                self.session = ort.InferenceSession(str(source), so, providers=["CPUExecutionProvider"])

            def infer(self, feeds):
                outs = self.session.run(spec.output_names, feeds)
                rng = np.random.default_rng(0)
                return {n: (o + error * np.abs(o).max() * rng.standard_normal(o.shape)).astype(np.float32)
                        for n, o in zip(spec.output_names, outs)}

            def close(self) -> None:
                pass

        return V.backend_runner(Opened, spec, Path(path).name)

    monkeypatch.setattr(V, "plan_runner", plan_runner)
    return rec


def test_plans_are_judged_like_their_onnx_files(monkeypatch, tmp_path, tiny_student_path, tiny_calib_path):
    from conftest import UNTRAINED_INT8_MIN_PSNR

    from nerfgan.export.pipeline import ExportConfig, export

    rec = fake_plans(monkeypatch, "10.13.0.35")
    logs: list[str] = []
    manifest = export(tiny_student_path, tmp_path / "out", ExportConfig(
        fp16=True, int8=True, calib=str(tiny_calib_path), int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR, trt=True),
        log=logs.append)
    plans = {a["file"]: a for a in manifest["artifacts"] if a["format"] == "tensorrt"}
    assert sorted(plans) == ["mapping.plan", "student.plan", "student_fp16.plan", "student_int8.plan"]
    metrics = {f: {c["metric"] for c in a["validation"]} for f, a in plans.items()}
    assert metrics["student.plan"] == {"max_abs_error"} and metrics["student_fp16.plan"] == {"psnr_db_vs_fp32"}
    assert metrics["student_int8.plan"] == {"psnr_db_vs_fp32", "psnr_drop_db_vs_teacher"}
    assert all(c["ok"] for a in plans.values() for c in a["validation"])
    # strongly typed: the INT8 plan is built from the Q/DQ graph with float16 elsewhere (opset 19), judged first
    assert ("student_int8_fp16.onnx", 19) in rec.parsed_files
    assert plans["student_int8.plan"]["built_from"].startswith("student_int8.onnx with its unquantized layers")
    assert any("student_int8.onnx (unquantized parts in FP16)" in line for line in logs)
    assert (tmp_path / "out" / "student_int8.plan.json").is_file()


def test_a_plan_off_by_tf32_rounding_fails_the_fp32_gate(monkeypatch, tmp_path, tiny_student_path):
    """1e-3 relative error, what TF32's 10-bit mantissa gives: far over the 1e-4 FP32 tolerance. The export
    fails with the plans named and OUT gets no artifact (only the lock and TensorRT's timing cache)."""
    from nerfgan.errors import ExportMismatchError
    from nerfgan.export.pipeline import ExportConfig, export

    fake_plans(monkeypatch, "10.13.0.35", error=1e-3)
    with pytest.raises(ExportMismatchError, match=r"mapping\.plan:w max_abs_error .*student\.plan:image max_abs_error"):
        export(tiny_student_path, tmp_path / "out", ExportConfig(trt=True), log=lambda s: None)
    assert only(tmp_path / "out") == [".nerfgan-export.lock", ".nerfgan-timing.cache"]  # no artifact, no manifest
