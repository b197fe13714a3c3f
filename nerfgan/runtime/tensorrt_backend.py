"""TensorRTBackend: a TensorRT plan (``student.plan`` with its sidecar ``student.plan.json``).

    with TensorRTBackend("export/student.plan") as b:
        out = b.infer({"w": w, "c": c})          # numpy in, numpy (float32) out

Written against the TensorRT 10.x / 11.x Python API: name-based I/O,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``. The sidecar is checked
first: a plan built by another TensorRT version or for another compute capability is refused
(EngineMismatchError). The batch range is the engine's optimization profile.

Device memory comes from torch CUDA tensors when torch with CUDA is installed, else from
cuda-python; both behind :class:`DeviceMemory`, chosen by
:func:`device_memory`. torch and tensorrt are imported only when a plan is opened.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nerfgan.errors import InputFileError, MissingDependencyError, NerfganError, TensorError
from nerfgan.runtime.backends import Backend, spec_from_metadata
from nerfgan.runtime.plan import INSTALL_HINT, check_sidecar, gpu_info, import_tensorrt, read_sidecar

if TYPE_CHECKING:
    import tensorrt


class DeviceMemory(Protocol):
    """Raw device memory and one CUDA stream: all the backend needs from torch or cuda-python."""

    @property
    def stream(self) -> int: ...  # the cudaStream_t handle TensorRT runs on

    def alloc(self, nbytes: int) -> int: ...  # a device pointer
    def free(self, ptr: int) -> None: ...
    def upload(self, ptr: int, array: np.ndarray) -> None: ...  # host (C-contiguous) -> device, on the stream
    def download(self, ptr: int, out: np.ndarray) -> None: ...  # device -> host (C-contiguous), on the stream
    def synchronize(self) -> None: ...
    def close(self) -> None: ...


class TorchMemory:
    """Device memory as torch uint8 CUDA tensors (torch's caching allocator) on a CUDA stream of its own.

    TensorRT, the copies and the synchronisation all use that stream, never torch's legacy default stream, so
    the backend neither waits for nor blocks the caller's other GPU work.
    """

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._stream = torch.cuda.Stream()
        self._blocks: dict[int, torch.Tensor] = {}

    @property
    def stream(self) -> int:
        return int(self._stream.cuda_stream)

    def alloc(self, nbytes: int) -> int:
        with self._torch.cuda.stream(self._stream):  # the allocator ties the block to this stream
            block = self._torch.empty(max(nbytes, 1), dtype=self._torch.uint8, device="cuda")
        self._blocks[block.data_ptr()] = block
        return int(block.data_ptr())

    def free(self, ptr: int) -> None:
        self._blocks.pop(ptr, None)

    def upload(self, ptr: int, array: np.ndarray) -> None:
        with self._torch.cuda.stream(self._stream):
            self._blocks[ptr][:array.nbytes].copy_(self._torch.from_numpy(array.reshape(-1).view(np.uint8)))

    def download(self, ptr: int, out: np.ndarray) -> None:
        with self._torch.cuda.stream(self._stream):
            self._torch.from_numpy(out.reshape(-1).view(np.uint8)).copy_(self._blocks[ptr][:out.nbytes])

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._blocks.clear()


class CudaPythonMemory:
    """Device memory from cuda-python's runtime API (cudaMalloc, cudaMemcpyAsync) on a stream of its own."""

    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._stream = self._call("cudaStreamCreate", rt.cudaStreamCreate())

    def _call(self, what: str, result: tuple[Any, ...]) -> Any:
        """Check the error code cuda-python returns first; return the value after it (if any)."""
        if result[0] != self._rt.cudaError_t.cudaSuccess:
            raise NerfganError(f"CUDA {what} failed: {result[0]}")
        return result[1] if len(result) > 1 else None

    @property
    def stream(self) -> int:
        return int(self._stream)

    def alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self._rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self._rt.cudaFree(ptr))

    def upload(self, ptr: int, array: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        result = self._rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, kind, self._stream)
        self._call("cudaMemcpyAsync", result)

    def download(self, ptr: int, out: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        result = self._rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind, self._stream)
        self._call("cudaMemcpyAsync", result)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        if self._stream is not None:
            self._call("cudaStreamDestroy", self._rt.cudaStreamDestroy(self._stream))
            self._stream = None


def device_memory() -> DeviceMemory:
    """TorchMemory if torch sees a CUDA device, else CudaPythonMemory; MissingDependencyError if neither."""
    try:
        import torch

        if torch.cuda.is_available():
            return TorchMemory()
    except ImportError:
        pass
    try:
        rt = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        raise MissingDependencyError("running a TensorRT plan needs torch with CUDA, or cuda-python; "
                                     f"{INSTALL_HINT}") from None
    return CudaPythonMemory(rt)


def _shape(dims: tensorrt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


class TensorRTBackend(Backend):
    """A TensorRT plan with its sidecar; batch range = the engine's optimization profile 0."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"{p}: TensorRT plan not found")
        sidecar = read_sidecar(p)
        spec = spec_from_metadata(sidecar.metadata, p)
        import_tensorrt()  # a usable TensorRT, or MissingDependencyError naming the extra
        import tensorrt as trt  # the same module, imported statically so mypy checks these calls

        gpu_name, capability = gpu_info()
        check_sidecar(sidecar, trt.__version__, gpu_name, capability, plan=p)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        try:
            engine: tensorrt.ICudaEngine | None = self._runtime.deserialize_cuda_engine(p.read_bytes())
        except Exception:  # TensorRT raises its own types for corrupt plans
            engine = None
        if engine is None:
            raise InputFileError(f"{p}: not a TensorRT engine (or built by an incompatible TensorRT)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
            raise InputFileError(f"{p}: engine inputs {inputs} and outputs {outputs} do not match its "
                                 f"{spec.kind} spec's {spec.input_names} and {spec.output_names}")
        numpy_of: dict[tensorrt.DataType, np.dtype[Any]] = {trt.DataType.FLOAT: np.dtype(np.float32),
                                                             trt.DataType.HALF: np.dtype(np.float16)}
        self._dtypes: dict[str, np.dtype[Any]] = {}
        for n in names:
            if engine.get_tensor_dtype(n) not in numpy_of:
                raise InputFileError(f"{p}: tensor {n} has TensorRT type {engine.get_tensor_dtype(n)}; "
                                     "this runtime handles float32 and float16 I/O")
            self._dtypes[n] = numpy_of[engine.get_tensor_dtype(n)]
        lo, _, hi = engine.get_tensor_profile_shape(spec.input_names[0], 0)  # (min, opt, max) shapes
        super().__init__(p, spec, sidecar.metadata, max_batch=int(hi[0]))
        self.min_batch = int(lo[0])
        self.name = f"tensorrt-{self.precision}"
        context = engine.create_execution_context()
        if context is None:
            raise NerfganError(f"{p}: TensorRT could not create an execution context (out of GPU memory?)")
        self._engine: tensorrt.ICudaEngine | None = engine
        self._context: tensorrt.IExecutionContext | None = context
        self._memory: DeviceMemory | None = device_memory()
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, capacity in bytes)

    def check(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The base checks (batch <= max_batch included), then batch >= the profile's min batch."""
        checked = super().check(feeds)
        batch = len(checked[self.spec.input_names[0]])
        if batch < self.min_batch:
            raise TensorError(f"{self.path.name}: batch {batch} is outside this engine's profile "
                              f"[{self.min_batch}, {self.max_batch}]; rebuild it with a smaller minimum --batch")
        return checked

    def _buffer(self, memory: DeviceMemory, name: str, nbytes: int) -> int:
        """The device buffer of tensor ``name``, reallocated when ``nbytes`` outgrows it."""
        ptr, capacity = self._buffers.get(name, (0, -1))
        if nbytes > capacity:
            if capacity >= 0:
                memory.free(ptr)
                del self._buffers[name]
            ptr = memory.alloc(nbytes)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        context, memory = self._context, self._memory
        assert context is not None and memory is not None  # infer() refuses a closed backend
        hosts: dict[str, np.ndarray] = {}  # kept alive until the stream is synchronized
        for name in self.spec.input_names:
            hosts[name] = np.ascontiguousarray(feeds[name], dtype=self._dtypes[name])
            if not context.set_input_shape(name, hosts[name].shape):
                raise TensorError(f"{self.path.name}: TensorRT refused input {name} of shape {hosts[name].shape}")
        for name in self.spec.output_names:
            shape = _shape(context.get_tensor_shape(name))
            if min(shape, default=0) < 0:
                raise NerfganError(f"{self.path.name}: TensorRT left output {name} with shape {shape} unresolved")
            hosts[name] = np.empty(shape, self._dtypes[name])
        for name, host in hosts.items():
            ptr = self._buffer(memory, name, host.nbytes)
            if name in feeds:
                memory.upload(ptr, host)
            if not context.set_tensor_address(name, ptr):
                raise NerfganError(f"{self.path.name}: TensorRT refused the device address of {name}")
        if not context.execute_async_v3(memory.stream):
            raise NerfganError(f"{self.path.name}: TensorRT failed to run the engine (see its messages above)")
        for name in self.spec.output_names:
            memory.download(self._buffers[name][0], hosts[name])
        memory.synchronize()
        return {n: hosts[n].astype(np.float32, copy=False) for n in self.spec.output_names}

    def close(self) -> None:
        """Free the device buffers, the execution context and the engine; calling it again does nothing."""
        with self._lock:
            super().close()
            memory, self._memory = self._memory, None
            if memory is not None:
                for ptr, _ in self._buffers.values():
                    memory.free(ptr)
                memory.close()
            self._buffers.clear()
            self._context = self._engine = None  # TensorRT frees them with the last reference
