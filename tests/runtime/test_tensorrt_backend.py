"""nerfgan.runtime.tensorrt_backend on CPU: the missing-TensorRT path for real; opening and running a plan
against a fake ``tensorrt`` module and fake device memory (host numpy), so what the backend asked
TensorRT to do can be checked; the cuda-python buffer path against a fake CUDA runtime (ctypes)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import real_tensorrt_installed
from conftest import cuda

from nerfgan.errors import InputFileError, MissingDependencyError, NerfganError, TensorError, UsageError
from nerfgan.runtime import Generator, open_backend
from nerfgan.runtime import tensorrt_backend as TB
from nerfgan.runtime.plan import EngineMismatchError, EngineSidecar, sidecar_path
from nerfgan.runtime.spec import student_spec

SPEC = student_spec(8, 4, 8)  # w (B, 8), c (B, 25) -> image (B, 3, 8, 8), image_raw (B, 3, 4, 4)
META = {"nerfgan.io": SPEC.to_json(), "nerfgan.format": "nerfgan-export-1", "nerfgan.precision": "fp16",
        "nerfgan.kind": "student", "nerfgan.camera": json.dumps({"radius": 2.7, "pivot": [0, 0, 0.2], "focal": 4.2647})}
VERSION = "10.13.0.35"
PLAN_BYTES = b"\x00fake serialized engine\xff"
STREAM = 7


class Fake:
    """What the fake TensorRT and device memory were asked to do, and how they answer."""

    def __init__(self, *, profile: tuple[int, int, int] = (1, 2, 4),
                 names: tuple[str, ...] = ("image", "w", "c", "image_raw"), engine: str = "ok",
                 execute_ok: bool = True) -> None:
        self.profile, self.names, self.engine, self.execute_ok = profile, names, engine, execute_ok
        self.dtypes = {"w": "FLOAT", "c": "FLOAT", "image": "HALF", "image_raw": "FLOAT"}  # an fp16 engine's image
        self.deserialized: bytes | None = None
        self.memory: dict[int, np.ndarray] = {}  # 'device memory': pointer -> bytes
        self.allocs: list[int] = []
        self.frees: list[int] = []
        self.memory_closed = 0
        self.input_shapes: list[tuple[str, tuple[int, ...]]] = []
        self.addresses: dict[str, int] = {}
        self.executes: list[int] = []  # the stream of every execute_async_v3
        self.synchronized = 0


def fake_tensorrt(fake: Fake) -> types.ModuleType:
    """A ``tensorrt`` module with just the runtime API the backend uses (TensorRT 10/11 name-based I/O)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSION  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]  # import_tensorrt's sign of a real install
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    trt.DataType = types.SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT8="INT8")  # type: ignore[attr-defined]
    numpy_of = {"FLOAT": np.float32, "HALF": np.float16}

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity: str) -> None:
            self.severity = severity

    class Context:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            fake.input_shapes.append((name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            b = self.shapes["w"][0]
            return {"image": (b, 3, 8, 8), "image_raw": (b, 3, 4, 4)}[name]

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            fake.addresses[name] = ptr
            return True

        def _tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
            dtype = np.dtype(numpy_of[fake.dtypes[name]])
            n = int(np.prod(shape)) * dtype.itemsize
            return fake.memory[fake.addresses[name]][:n].view(dtype).reshape(shape)

        def execute_async_v3(self, stream: int) -> bool:
            """image = the mean of w, image_raw = c[:, 0], each broadcast over its pixels."""
            fake.executes.append(stream)
            if not fake.execute_ok:
                return False
            w, c = self._tensor("w", self.shapes["w"]), self._tensor("c", self.shapes["c"])
            for name, value in (("image", w.mean(1)), ("image_raw", c[:, 0])):
                out = self._tensor(name, self.get_tensor_shape(name))
                out[...] = value[:, None, None, None]
            return True

    class Engine:
        num_io_tensors = len(fake.names)

        def get_tensor_name(self, i: int) -> str:
            return fake.names[i]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name in SPEC.input_names or name == "camera" else "OUTPUT"

        def get_tensor_dtype(self, name: str) -> str:
            return fake.dtypes[name]

        def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
            assert profile == 0
            return [(b, *SPEC.input(name).concrete(b)[1:]) for b in fake.profile]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            fake.deserialized = bytes(data)
            if fake.engine == "raise":
                raise RuntimeError("Serialization assertion failed")
            return Engine() if fake.engine == "ok" else None

    for cls in (Logger, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


class FakeMemory:
    """DeviceMemory on the host: pointers index numpy byte arrays."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    @property
    def stream(self) -> int:
        return STREAM

    def alloc(self, nbytes: int) -> int:
        ptr = 0x1000 * (len(self.fake.allocs) + 1)
        self.fake.memory[ptr] = np.full(nbytes, 0xAB, np.uint8)
        self.fake.allocs.append(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        del self.fake.memory[ptr]
        self.fake.frees.append(ptr)

    def upload(self, ptr: int, array: np.ndarray) -> None:
        self.fake.memory[ptr][:array.nbytes] = array.reshape(-1).view(np.uint8)

    def download(self, ptr: int, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8)[:] = self.fake.memory[ptr][:out.nbytes]

    def synchronize(self) -> None:
        self.fake.synchronized += 1

    def close(self) -> None:
        self.fake.memory_closed += 1


def write_plan(folder: Path, version: str = VERSION, capability: str = "9.0", metadata: dict[str, str] = META) -> Path:
    plan = folder / "student.plan"
    plan.write_bytes(PLAN_BYTES)
    car = EngineSidecar(tensorrt_version=version, gpu_name="Fake GPU", compute_capability=capability,
                        onnx_sha256="0" * 64, precision="fp16", kind="student", batch=(1, 2, 4), strongly_typed=True,
                        nerfgan_version="0.1.0", created="2026-12-01T00:00:00+00:00", metadata=dict(metadata))
    sidecar_path(plan).write_text(car.to_json(), encoding="utf-8")
    return plan


def install(monkeypatch: pytest.MonkeyPatch, **answers) -> Fake:
    """A fake TensorRT, GPU ('9.0') and device memory; return the record of what they were asked."""
    fake = Fake(**answers)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(fake))
    monkeypatch.setattr(TB, "gpu_info", lambda: ("Fake GPU", "9.0"))
    monkeypatch.setattr(TB, "device_memory", lambda: FakeMemory(fake))
    return fake


def feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((batch, 8), dtype=np.float32),
            "c": rng.standard_normal((batch, 25), dtype=np.float32)}


# --- refusing to open ------------------------------------------------------------------------------

def test_real_environment_lacks_tensorrt(tmp_path: Path) -> None:
    if real_tensorrt_installed():
        pytest.skip("a real TensorRT is installed here")
    with pytest.raises(MissingDependencyError, match=r"nerfgan\[tensorrt\]"):
        TB.TensorRTBackend(write_plan(tmp_path))


def test_importing_the_module_imports_neither_torch_nor_tensorrt() -> None:
    code = ("import sys, nerfgan.runtime.tensorrt_backend; "
            "print(sorted(m for m in ('torch', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_plan_or_sidecar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    with pytest.raises(InputFileError, match="student.plan: TensorRT plan not found"):
        TB.TensorRTBackend(tmp_path / "student.plan")
    plan = write_plan(tmp_path)
    sidecar_path(plan).unlink()
    with pytest.raises(InputFileError, match=r"student\.plan: no sidecar student\.plan\.json"):
        TB.TensorRTBackend(plan)
    assert fake.deserialized is None


def test_sidecar_without_nerfgan_metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    with pytest.raises(InputFileError, match="not a nerfgan export"):
        TB.TensorRTBackend(write_plan(tmp_path, metadata={"nerfgan.kind": "student"}))
    assert fake.deserialized is None


@pytest.mark.parametrize(("version", "capability"), [("11.4.0.106", "9.0"), (VERSION, "8.9")])
def test_plan_built_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str, capability: str) -> None:
    fake = install(monkeypatch)
    with pytest.raises(EngineMismatchError, match=rf"(?s)built for TensorRT {version}.*compute {capability}.*"
                       rf"this machine has TensorRT {VERSION}.*compute 9\.0"):
        TB.TensorRTBackend(write_plan(tmp_path, version=version, capability=capability))
    assert fake.deserialized is None  # refused before TensorRT sees the bytes


@pytest.mark.parametrize("answer", ["none", "raise"])
def test_not_an_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, answer: str) -> None:
    fake = install(monkeypatch, engine=answer)
    with pytest.raises(InputFileError, match=r"student\.plan: not a TensorRT engine"):
        TB.TensorRTBackend(write_plan(tmp_path))
    assert fake.deserialized == PLAN_BYTES


@pytest.mark.parametrize("names", [("image", "w", "camera", "image_raw"), ("image", "w", "c")])
def test_io_names_not_matching_the_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        names: tuple[str, ...]) -> None:
    install(monkeypatch, names=names)
    expected = r"do not match its student spec's \['w', 'c'\] and \['image', 'image_raw'\]"
    with pytest.raises(InputFileError, match=expected):
        TB.TensorRTBackend(write_plan(tmp_path))


def test_unsupported_io_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    fake.dtypes["image"] = "INT8"
    with pytest.raises(InputFileError, match="tensor image has TensorRT type INT8"):
        TB.TensorRTBackend(write_plan(tmp_path))


# --- running ---------------------------------------------------------------------------------------

def test_opens_with_the_profile_and_metadata(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install(monkeypatch, profile=(2, 3, 6))
    plan = write_plan(tmp_path)
    with open_backend(plan) as b:  # nerfgan.runtime's dispatch on .plan
        assert isinstance(b, TB.TensorRTBackend)
        assert (b.min_batch, b.max_batch) == (2, 6)
        assert (b.name, b.precision, b.spec, b.metadata) == ("tensorrt-fp16", "fp16", SPEC, META)


def test_infer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    b = TB.TensorRTBackend(write_plan(tmp_path))
    x = feeds(2)
    out = b.infer(x)
    assert sorted(out) == ["image", "image_raw"]
    assert out["image"].shape == (2, 3, 8, 8) and out["image_raw"].shape == (2, 3, 4, 4)
    assert out["image"].dtype == np.float32 and out["image_raw"].dtype == np.float32  # float16 output converted
    np.testing.assert_allclose(out["image"], np.broadcast_to(x["w"].mean(1)[:, None, None, None], (2, 3, 8, 8)),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(out["image_raw"], np.broadcast_to(x["c"][:, 0, None, None, None], (2, 3, 4, 4)))
    assert fake.input_shapes == [("w", (2, 8)), ("c", (2, 25))]
    assert sorted(fake.addresses) == ["c", "image", "image_raw", "w"]
    assert len(set(fake.addresses.values())) == 4 and set(fake.addresses.values()) <= set(fake.memory)
    assert fake.executes == [STREAM] and fake.synchronized == 1
    assert len(fake.allocs) == 4

    b.infer(feeds(2, seed=1))  # same batch: the buffers are reused
    b.infer(feeds(1, seed=2))
    assert len(fake.allocs) == 4 and fake.frees == []
    out = b.infer(x := feeds(4, seed=3))  # larger batch: every buffer grows
    assert len(fake.allocs) == 8 and sorted(fake.frees) == sorted(fake.allocs[:4])
    np.testing.assert_array_equal(out["image_raw"][:, 0, 0, 0], x["c"][:, 0])
    assert [s for n, s in fake.input_shapes if n == "w"] == [(2, 8), (2, 8), (1, 8), (4, 8)]


@pytest.mark.parametrize("batch", [1, 5])
def test_batch_outside_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, batch: int) -> None:
    fake = install(monkeypatch, profile=(2, 2, 4))
    b = TB.TensorRTBackend(write_plan(tmp_path))
    with pytest.raises(TensorError, match=rf"batch {batch} is outside this engine's profile"):
        b.infer(feeds(batch))
    assert fake.allocs == [] and fake.input_shapes == [] and fake.executes == []


def test_bad_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    b = TB.TensorRTBackend(write_plan(tmp_path))
    x = feeds(2)
    x["w"][1, 3] = np.nan
    with pytest.raises(TensorError, match="input w contains NaN"):
        b.infer(x)
    with pytest.raises(TensorError, match=r"input c has shape \(2, 24\)"):
        b.infer({"w": feeds(2)["w"], "c": np.zeros((2, 24), np.float32)})
    assert fake.allocs == [] and fake.executes == []


def test_execute_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch, execute_ok=False)
    b = TB.TensorRTBackend(write_plan(tmp_path))
    with pytest.raises(NerfganError, match="TensorRT failed to run the engine") as e:
        b.infer(feeds(2))
    assert not isinstance(e.value, UsageError)  # not the caller's mistake
    assert fake.executes == [STREAM]


def test_close(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    with TB.TensorRTBackend(write_plan(tmp_path)) as b:
        b.infer(feeds(2))
    assert sorted(fake.frees) == sorted(fake.allocs) and fake.memory == {} and fake.memory_closed == 1
    b.close()  # again: nothing more to free
    assert len(fake.frees) == 4 and fake.memory_closed == 1
    with pytest.raises(UsageError, match="closed"):
        b.infer(feeds(2))
    assert len(fake.executes) == 1


def test_generator_renders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch)
    with Generator(TB.TensorRTBackend(write_plan(tmp_path))) as g:
        assert g.backend == "tensorrt-fp16" and (g.w_dim, g.img_resolution) == (8, 8)
        images = g.render(w=np.zeros((2, 8), np.float32), yaw=[0, 10])
    assert images.dtype == np.uint8 and images.shape == (2, 8, 8, 3)
    assert (images == 128).all()  # image = mean(w) = 0 -> mid grey
    assert fake.executes == [STREAM]


def test_generator_splits_batches_larger_than_the_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = install(monkeypatch, profile=(1, 2, 2))
    g = Generator(TB.TensorRTBackend(write_plan(tmp_path)))
    w = np.full((1, 8), 0.5, np.float32)
    out = g.generate(w=w, yaw=[0, 10, 20, 30, 40])
    assert len(fake.executes) == 3
    assert [s for n, s in fake.input_shapes if n == "w"] == [(2, 8), (2, 8), (1, 8)]
    assert out["image"].shape == (5, 3, 8, 8)
    np.testing.assert_allclose(out["image"], 0.5)
    assert len(set(out["image_raw"][:, 0, 0, 0].tolist())) == 5  # c[:, 0] = cos(yaw): the chunks stay in order
    np.testing.assert_array_equal(out["image_raw"][:, 0, 0, 0], g.cameras(yaw=[0, 10, 20, 30, 40])[:, 0])


# --- device memory ---------------------------------------------------------------------------------

class FakeCudaRuntime:
    """cuda.bindings.runtime on the host: cudaMalloc hands out ctypes buffers, copies are memmove."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0, cudaErrorMemoryAllocation=2)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, malloc_error: int = 0) -> None:
        self.malloc_error = malloc_error
        self.blocks: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.calls: list[tuple[object, ...]] = []

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 99

    def cudaMalloc(self, n: int) -> tuple[int, int | None]:
        if self.malloc_error:
            return self.malloc_error, None
        block = ctypes.create_string_buffer(n)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[int]:
        assert (dst if kind == 1 else src) in self.blocks and stream == 99
        ctypes.memmove(dst, src, n)
        self.calls.append(("memcpy", kind, n))
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        self.calls.append(("sync", stream))
        return (0,)

    def cudaFree(self, ptr: int) -> tuple[int]:
        del self.blocks[ptr]
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.calls.append(("destroy", stream))
        return (0,)


def no_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_only = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    monkeypatch.setitem(sys.modules, "torch", cpu_only)


@pytest.mark.parametrize("torch_module", ["cpu-only", "absent"])
def test_no_device_memory_provider(monkeypatch: pytest.MonkeyPatch, torch_module: str) -> None:
    if torch_module == "absent":
        monkeypatch.setitem(sys.modules, "torch", None)
    else:
        no_torch_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(MissingDependencyError, match=r"torch with CUDA, or cuda-python.*nerfgan\[tensorrt\]"):
        TB.device_memory()


def test_cuda_python_memory_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    no_torch_cuda(monkeypatch)
    rt = FakeCudaRuntime()
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    mem = TB.device_memory()
    assert isinstance(mem, TB.CudaPythonMemory) and mem.stream == 99
    round_trip(mem, np.arange(12, dtype=np.float16).reshape(3, 4))
    mem.close()
    assert rt.blocks == {}
    assert rt.calls == [("memcpy", 1, 24), ("memcpy", 2, 24), ("sync", 99), ("destroy", 99)]


def round_trip(mem: TB.DeviceMemory, a: np.ndarray) -> None:
    """Upload, download, compare, free, close."""
    ptr = mem.alloc(a.nbytes)
    mem.upload(ptr, a)
    out = np.zeros_like(a)
    mem.download(ptr, out)
    mem.synchronize()
    np.testing.assert_array_equal(out, a)
    mem.free(ptr)
    mem.close()


def test_cuda_python_errors_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = TB.CudaPythonMemory(FakeCudaRuntime(malloc_error=2))
    with pytest.raises(NerfganError, match="CUDA cudaMalloc failed: 2"):
        mem.alloc(1 << 40)


@cuda
def test_torch_memory_round_trip() -> None:
    mem = TB.device_memory()
    assert isinstance(mem, TB.TorchMemory)
    round_trip(mem, np.arange(10, dtype=np.float32))
