"""Backends: one exported model (mapping or student) behind one contract, numpy in and numpy out.

    with OnnxBackend("student.onnx") as b:
        out = b.infer({"w": w, "c": c})          # {"image": (B, 3, H, W), "image_raw": (B, 3, R, R)}

Every backend knows its ModelSpec (names, shapes; nerfgan.runtime.spec), its nerfgan metadata and
its batch range, checks every input before running (name, shape, dtype float32, batch in range,
finite values) and serialises calls with a lock, so one backend can be shared by threads; close()
takes the same lock, so it waits for a call in flight, and later calls raise UsageError.

* OnnxBackend: ONNX Runtime, CPU or CUDA provider (IO binding on CUDA). Never imports torch. The file
  is read once by nerfgan (size and sha256 checked against the manifest when there is one, external
  data locations checked) and those bytes are what ONNX Runtime loads. CPU settings and the cache of the optimised
  graph: nerfgan.runtime.ort_session.
* TorchBackend: a student checkpoint run by PyTorch (CPU or CUDA, float32 or float16 on CUDA).
* TensorRTBackend (nerfgan.runtime.tensorrt_backend): a plan with its sidecar.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import numpy as np

from nerfgan.errors import (ConfigError, EngineError, InputFileError, MissingDependencyError, NerfganError,
                            TensorError, UsageError)
from nerfgan.runtime import spec as S

if TYPE_CHECKING:
    import onnx


class Backend:
    """Base class: input checks, the lock, the context manager. Subclasses implement ``_run``."""

    name = "backend"  # short label for tables: 'onnxruntime-cpu', 'pytorch-cuda-fp16', 'tensorrt', ...

    def __init__(self, path: Path, spec: S.ModelSpec, metadata: dict[str, str], max_batch: int | None) -> None:
        self.path = path
        self.spec = spec
        self.metadata = metadata
        self.max_batch = max_batch  # None: any batch
        self.min_batch = 1  # a TensorRT profile may start higher
        self.precision = metadata.get(S.META_PRECISION, "fp32")
        self._lock = threading.RLock()  # re-entrant: a subclass's close() may hold it around super().close()
        self._closed = False

    def check(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate and normalise ``feeds`` (float32, C-contiguous); TensorError names the tensor at fault."""
        missing = [n for n in self.spec.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.spec.input_names]
        if missing or extra:
            raise TensorError(f"{self.path.name}: expected inputs {self.spec.input_names}, "
                              f"missing {missing}, unexpected {extra}")
        out: dict[str, np.ndarray] = {}
        batch = None
        for t in self.spec.inputs:
            a = np.asarray(feeds[t.name])
            if a.dtype.kind not in "fiu":
                raise TensorError(f"{self.path.name}: input {t.name} has dtype {a.dtype}, expected float32")
            a = np.array(a, dtype=np.float32, order="C")  # a private, writable copy
            b = a.shape[0] if a.ndim else None
            if b is None or a.shape != t.concrete(b):
                raise TensorError(f"{self.path.name}: input {t.name} has shape {a.shape}, expected "
                                  f"{tuple(t.shape)} with B the batch")
            if batch is not None and b != batch:
                raise TensorError(f"{self.path.name}: input {t.name} has batch {b}, the other inputs {batch}")
            batch = b
            if not np.isfinite(a).all():
                raise TensorError(f"{self.path.name}: input {t.name} contains NaN or inf")
            out[t.name] = a
        assert batch is not None
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            raise TensorError(f"{self.path.name}: batch {batch} is outside this engine's profile "
                              f"[{self.min_batch}, {self.max_batch}]; split the batch or rebuild it with another --batch")
        return out

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``feeds`` and run; UsageError when the backend is closed (also when close() came meanwhile).

        The one place where every backend's run-time failure becomes a typed error: an engine's own exception
        (ONNX Runtime's Fail/RuntimeException, OpenVINO's, TensorRT's, torch's, MemoryError) is EngineError naming
        the file; an output with NaN or inf (inputs beyond what the model can take, such as |w| of 1e38) is
        TensorError. nerfgan's own errors pass as they are."""
        self._refuse_closed()
        checked = self.check(feeds)
        with self._lock:
            self._refuse_closed()
            try:
                out = self._run(checked)
            except NerfganError:
                raise
            except MemoryError:
                raise EngineError(f"{self.path.name}: {self.name} ran out of memory running a batch of "
                                  f"{len(next(iter(checked.values())))}; give a smaller batch") from None
            except Exception as e:  # each engine raises its own types
                first = (str(e).strip().splitlines() or [""])[0]
                raise EngineError(f"{self.path.name}: {self.name} failed while running it ({type(e).__name__}: "
                                  f"{first[:300]})") from None
        for name, a in out.items():
            if not np.isfinite(a).all():
                given = ", ".join(f"{k} up to {float(np.abs(v).max()):.3g}" for k, v in checked.items())
                raise TensorError(f"{self.path.name}: output {name} has NaN or inf values; the inputs ({given}) are "
                                  "beyond what the model can take")
        return out

    def _refuse_closed(self) -> None:
        if self._closed:
            raise UsageError(f"{self.path.name}: backend is closed (close() was called); load the engine again")

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Refuse new calls at once (UsageError), wait for a call in flight (the lock), then free (``_release``)."""
        self._closed = True
        with self._lock:
            self._release()

    def _release(self) -> None:
        """Free what the backend holds; runs under the lock, once no call is in flight."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, kind={self.spec.kind}, precision={self.precision})"


def spec_from_metadata(metadata: dict[str, str], source: Path) -> S.ModelSpec:
    if metadata.get(S.META_FORMAT) != S.FORMAT or S.META_IO not in metadata:
        raise InputFileError(f"{source}: not a nerfgan export (no {S.META_FORMAT} metadata; export with nerfgan-export)")
    return S.ModelSpec.from_json(metadata[S.META_IO], source=str(source))


class OnnxBackend(Backend):
    """An ONNX file in ONNX Runtime. device 'cpu' or 'cuda' (needs onnxruntime-gpu); threads = intra-op threads.

    ``artifact``: the file's manifest entry (size and sha256 checked against the bytes read; ``manifest`` names the
    manifest in messages). External data locations are checked by :func:`check_external_data` before ONNX Runtime
    sees the model, which then gets the very bytes checked (and the model's folder for its external data).

    Session settings (nerfgan.runtime.ort_session): graph optimisation ``optimization`` ('all' by default; 'extended'
    or 'basic'), intra-op threads ``threads`` or else the physical cores this process may use, one inter-op thread,
    sequential execution. ``cache`` 'auto' (CPU only): the optimised graph of a file of a nerfgan export is cached
    (beside the file when its folder is writable, else in the user cache; never for other files) and reused while
    the source, ONNX Runtime, the level and the CPU are the same; 'off': never read or written. ``cache_state``
    says what happened: 'off', 'unavailable' (not an export's file, nowhere to write, or the model has external
    data), 'written' (first open), 'reused', or 'rebuilt' (a cache was there but stale or corrupt, and was
    replaced); ``cache_path`` is the file.
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None,
                 artifact: S.Artifact | None = None, manifest: Path | None = None, optimization: str = "all",
                 cache: str = "auto") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("onnxruntime is not installed (pip install onnxruntime, or onnxruntime-gpu)") from None
        from nerfgan.runtime import ort_session as OS

        if cache not in OS.CACHE_MODES:
            raise UsageError(f"cache {cache!r}: choose one of {', '.join(OS.CACHE_MODES)}")
        if threads is not None and threads < 1:
            raise UsageError(f"threads {threads}: give a positive number of intra-op threads (or none: physical cores)")
        p = Path(path)
        data, proto = read_onnx_checked(p, artifact, manifest)
        external = any(t.data_location == 1 or len(t.external_data) for t in _tensors(proto))
        del proto  # the parse is dropped at once (the weights twice otherwise)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise MissingDependencyError(f"{p}: --device cuda needs onnxruntime-gpu (this onnxruntime has "
                                             f"{', '.join(ort.get_available_providers())})")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device != "cpu":
            raise UsageError(f"device {device!r}: expected 'cpu' or 'cuda'")
        so = OS.session_options(ort, optimization, threads)
        # the model comes as bytes, so ONNX Runtime is told where its external data lives (the model's folder)
        so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                    os.path.abspath(p.parent))
        self.optimization = optimization
        self.cache_state = "off"
        self.cache_path: Path | None = None
        session = None
        tmp: Path | None = None
        key: dict[str, str] = {}
        if cache == "auto" and device == "cpu":
            sha = artifact.sha256 if artifact is not None else hashlib.sha256(data).hexdigest()
            key = OS.cache_key(sha, ort.__version__, optimization, providers[0])
            self.cache_path = None if external else OS.cache_location(p, _in_export(p, artifact, sha), key)
            self.cache_state = "unavailable"
            if self.cache_path is not None:
                session, self.cache_state = _open_cached(ort, self.cache_path, key, threads, providers)
                if session is None:
                    try:
                        tmp = OS.temp_for(self.cache_path)
                        so.optimized_model_filepath = str(tmp)
                    except OSError:
                        tmp, self.cache_state = None, "unavailable"
        try:
            if session is None:
                try:
                    session = ort.InferenceSession(data, so, providers=providers)
                except Exception as e:  # ORT raises its own exception types for files that are not ONNX models
                    raise InputFileError(f"{p}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e)[:200]})") from None
                if tmp is not None and self.cache_path is not None:
                    ok = OS.commit(tmp, self.cache_path, key)
                    done = "rebuilt" if self.cache_state == "stale" else "written"
                    self.cache_state = done if ok else "unavailable"
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()
        self._session = session
        del data
        OS.log.debug("%s: onnxruntime cache %s (%s)", p, self.cache_state, self.cache_path)
        metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        spec = spec_from_metadata(metadata, p)
        got_in = [i.name for i in self._session.get_inputs()]
        got_out = [o.name for o in self._session.get_outputs()]
        # The exporter drops an input the graph never reads (the camera c of a student trained without pose
        # input): the model's inputs may be fewer than the spec's, never others; its outputs are exactly the spec's.
        if not set(got_in) <= set(spec.input_names) or sorted(got_out) != sorted(spec.output_names):
            raise ConfigError(f"{p}: the model's inputs {got_in} and outputs {got_out} do not match its "
                              f"{S.META_IO} metadata ({spec.input_names} and {spec.output_names})")
        self._session_inputs = got_in
        super().__init__(p, spec, metadata, max_batch=None)
        self.device = device
        self.name = f"onnxruntime-{device}-{self.precision}"

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: feeds[k] for k in self._session_inputs}  # (checked against the whole spec by infer)
        if self.device == "cuda":
            binding = self._session.io_binding()
            for name, a in feeds.items():
                binding.bind_cpu_input(name, a)
            for name in self.spec.output_names:
                binding.bind_output(name, "cuda")
            self._session.run_with_iobinding(binding)
            return dict(zip(self.spec.output_names, binding.copy_outputs_to_cpu()))
        outs = self._session.run(self.spec.output_names, feeds)
        return dict(zip(self.spec.output_names, outs))

    def _release(self) -> None:
        self._session = None


def _in_export(path: Path, artifact: S.Artifact | None, sha256: str) -> bool:
    """Whether ``path`` is a file of a nerfgan export: given with its manifest entry, or listed with this sha256 in
    the manifest.json beside it."""
    if artifact is not None:
        return True
    if not (path.parent / S.MANIFEST).is_file():
        return False
    try:
        art = S.read_export(path.parent).find(path.name)
    except NerfganError:
        return False
    return art is not None and art.sha256 == sha256


def _open_cached(ort: Any, cache: Path, key: dict[str, str], threads: int | None,
                 providers: list[str]) -> tuple[Any, str]:
    """(session, 'reused') from the cached graph at ``cache`` when it is the one ``key`` names and is intact (size,
    sha256, the external data checks of read_onnx_checked, ONNX Runtime loads it); else (None, 'stale') when
    something was there, (None, 'missing') when nothing was."""
    from nerfgan.runtime import ort_session as OS

    entry = OS.find(cache, key)
    if entry is None:
        return None, ("stale" if os.path.lexists(cache) or os.path.lexists(OS.sidecar(cache)) else "missing")
    art = S.Artifact(cache.name, "onnxruntime-cache", "", "onnx", entry.sha256, entry.bytes)
    try:
        data = read_onnx_checked(cache, art, OS.sidecar(cache))[0]
        so = OS.session_options(ort, "basic", threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # optimised already
        return ort.InferenceSession(data, so, providers=providers), "reused"
    except Exception as e:  # InputFileError from the checks, ONNX Runtime's own types from the load
        OS.log.info("%s: ignored (%s: %s); rebuilding it", cache, type(e).__name__, str(e)[:200])
        return None, "stale"


def parse_onnx(data: bytes, path: Path) -> onnx.ModelProto:
    """``data`` parsed as an ONNX ModelProto (the onnx package, a dependency of nerfgan; weights stay where they are)."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("the onnx package is not installed (pip install onnx): nerfgan reads an ONNX "
                                     "file's external data locations with it before ONNX Runtime loads the file") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError, or RecursionError on deep nesting
        raise InputFileError(f"{path}: ONNX Runtime cannot load it: not an ONNX model ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None
    return model


def read_onnx_checked(path: Path, artifact: S.Artifact | None = None,
                      manifest: Path | None = None) -> tuple[bytes, onnx.ModelProto]:
    """The bytes of ONNX file ``path`` (checked against its manifest entry when given: S.read_checked) and their
    parse, whose external data locations :func:`check_external_data` has checked: what a backend hands its engine."""
    if not path.is_file():
        raise InputFileError(f"{path}: ONNX file not found")
    data = S.read_checked(path, artifact, manifest)
    proto = parse_onnx(data, path)
    check_external_data(proto, path)
    return data, proto


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a model whose tensors keep their data in a file outside the model's folder.

    Every tensor (initializers, sparse initializers, constant attributes, subgraphs and functions) that names an
    external data location must name a relative path without '..' whose real location (symlinks resolved) is a
    regular file inside the folder of ``path``. InputFileError naming the tensor and the location otherwise.
    """
    for tensor in _tensors(model):
        entries = {e.key: e.value for e in tensor.external_data}
        if not entries and tensor.data_location != 1:  # 1 = onnx.TensorProto.EXTERNAL
            continue
        loc = entries.get("location", "")
        where = f"{path}: tensor {tensor.name[:80]!r} keeps its data in {loc[:200]!r}"
        if not loc or "\0" in loc:
            raise InputFileError(f"{where}: no usable external data location")
        if PurePosixPath(loc).is_absolute() or PureWindowsPath(loc).is_absolute() or PureWindowsPath(loc).drive:
            raise InputFileError(f"{where}: an absolute path; external data must sit beside the model")
        if ".." in PurePosixPath(loc).parts or ".." in PureWindowsPath(loc).parts:
            raise InputFileError(f"{where}: '..' leaves the model's folder; external data must sit beside the model")
        S.contained(path.parent, path.parent / loc, "external data of an ONNX model")


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of ``model``: graph initializers, sparse ones, attributes, in subgraphs and functions."""
    graphs: list[Any] = [model.graph]
    nodes: list[Any] = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sp in g.sparse_initializer:
                yield sp.values
                yield sp.indices
            nodes.extend(g.node)
            continue
        for a in nodes.pop().attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                graphs.append(a.g)
            graphs.extend(a.graphs)


class TorchBackend(Backend):
    """One part ('mapping' or 'student') of a student checkpoint, run by PyTorch."""

    def __init__(self, path: str | os.PathLike[str], kind: str, device: str = "cpu", precision: str = "fp32",
                 model: Any = None) -> None:
        import torch

        from nerfgan.export.to_onnx import artifact_metadata, graph_for, specs_for
        from nerfgan.student.checkpoint import load_student

        if precision not in ("fp32", "fp16"):
            raise UsageError(f"precision {precision!r}: the PyTorch backend runs 'fp32' or 'fp16'")
        if precision == "fp16" and device != "cuda":
            raise UsageError("precision fp16 needs --device cuda (float16 convolutions are not a CPU path)")
        p = Path(path)
        student = model if model is not None else load_student(p, device=device)
        # fp16: autocast, which runs convolutions and matrix products in float16 and keeps reductions
        # (the demodulation's sum of squares, normalisations) in float32; channels_last on CUDA.
        self._autocast = precision == "fp16" and kind == "student"
        self._module = graph_for(student, kind).to(device=device).eval()
        if device == "cuda" and kind == "student":
            self._module = self._module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._device = torch.device(device)
        from nerfgan.student.checkpoint import read_student_metadata
        from nerfgan.teacher.identity import TEACHER_KEY

        metadata = artifact_metadata(student, kind, precision, "", (1, 1, 1),
                                     read_student_metadata(p).get(TEACHER_KEY))
        super().__init__(p, specs_for(student)[kind], metadata, max_batch=None)
        self.name = f"pytorch-{device}-{precision}"

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad(), torch.autocast(self._device.type, dtype=torch.float16, enabled=self._autocast):
            out = self._module(*[torch.from_numpy(feeds[n]).to(self._device) for n in self.spec.input_names])
        outs = out if isinstance(out, tuple) else (out,)
        return {n: o.float().cpu().numpy() for n, o in zip(self.spec.output_names, outs)}
