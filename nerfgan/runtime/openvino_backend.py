"""OpenVINO (CPU plugin) as a runtime backend for the same ONNX files ONNX Runtime runs.

    with OpenVinoBackend("export/student_int8.onnx") as b:
        out = b.infer({"w": w, "c": c})          # {"image": (B, 3, H, W), "image_raw": (B, 3, R, R)}

The Backend contract is the base class's (nerfgan.runtime.backends): input checks, one lock serialising
calls (so a backend may be shared by threads), close(). The file is read once by nerfgan (size and sha256
checked against the manifest when there is one, external data locations checked) and those bytes are what
OpenVINO reads; a file that keeps tensors in external data (only exports above 2 GB do) is read by OpenVINO
from its path after the same checks, since bytes carry no folder to resolve the data against.

The FP32 files and the Q/DQ INT8 file are run as exported: OpenVINO reads the QuantizeLinear /
DequantizeLinear pairs of the INT8 file itself (no second quantization).

Precision is always explicit. On a CPU with bfloat16 support (AVX512_BF16, AMX) the CPU plugin's default
INFERENCE_PRECISION_HINT is bf16, which would run an FP32 file in bfloat16 without saying so. The hint is
therefore set on every compile: f32 unless ``inference_precision="bf16"`` is asked for, and read back from
the compiled model (``OpenVinoBackend.inference_precision``). A bf16 student must pass its own gate when
it is opened: its image outputs on a fixed probe batch have a mean PSNR >= ``bf16_min_psnr`` (BF16_MIN_PSNR,
30 dB, the floor an INT8 file must clear against FP32) against ONNX Runtime's outputs of the same file.

openvino is imported only when a backend is opened; without it, MissingDependencyError says what to install.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerfgan.errors import ConfigError, InputFileError, MissingDependencyError, UsageError
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend, read_onnx_checked, spec_from_metadata

INSTALL = "pip install 'nerfgan[openvino]'"
PRECISIONS = ("fp32", "bf16")  # inference precisions a user may ask for; INT8 files keep their Q/DQ as exported
BF16_MIN_PSNR = 30.0  # dB: a bf16 student's image outputs vs ONNX Runtime's on the same file (the INT8 floor)
PROBE_BATCH = 2  # samples of the bf16 gate's probe: the frontal camera and yaw 20 degrees
STATIC_SHAPES = 4  # batch sizes kept compiled with a static shape (measured: 2.8x a dynamic-batch compile)


@dataclass(frozen=True)
class OpenVinoSettings:
    """How a file is compiled for OpenVINO's CPU plugin.

    inference_precision: 'fp32' (INFERENCE_PRECISION_HINT f32, the default) or 'bf16' (gated, module docstring);
    threads: INFERENCE_NUM_THREADS (None: the plugin's default, every core); bf16_min_psnr: the bf16 gate in dB.
    PERFORMANCE_HINT is LATENCY: one stream, the threads on one request, as nerfgan's calls are one at a time.
    static_shapes: the model is compiled once per batch size with that batch fixed (the CPU plugin ran the
    128 px student 2.8x faster than with the file's dynamic batch, on 2 cores), the last ``static_shapes``
    sizes kept; a new size pays one compile (a fraction of a second for the tiny student) on its first call.
    """

    inference_precision: str = "fp32"
    threads: int | None = None
    bf16_min_psnr: float = BF16_MIN_PSNR
    static_shapes: int = STATIC_SHAPES  # 0: one compile with a dynamic batch (slower; no compile per new batch)

    def __post_init__(self) -> None:
        if self.inference_precision not in PRECISIONS:
            raise UsageError(f"openvino_precision: choose one of {', '.join(PRECISIONS)}, "
                             f"got {self.inference_precision!r}")
        if isinstance(self.static_shapes, bool) or not isinstance(self.static_shapes, int) or self.static_shapes < 0:
            raise UsageError(f"static_shapes: expected an integer >= 0, got {self.static_shapes!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise UsageError(f"threads: expected a positive integer, got {self.threads!r}")

    def properties(self, ov: Any) -> dict[str, Any]:
        """The compile_model properties (``ov``: the openvino module)."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        ov_type = ov.Type.bf16 if self.inference_precision == "bf16" else ov.Type.f32
        out: dict[str, Any] = {hints.inference_precision: ov_type,
                               hints.performance_mode: hints.PerformanceMode.LATENCY}
        if self.threads:
            out[props.inference_num_threads] = self.threads
        return out


def import_openvino() -> Any:
    """The openvino module; MissingDependencyError naming the extra when it cannot be imported."""
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError(f"--backend openvino: the openvino package is not installed ({INSTALL})") from None
    return openvino


class OpenVinoBackend(Backend):
    """An ONNX file compiled by OpenVINO for the CPU. ``artifact``/``manifest`` as for OnnxBackend."""

    def __init__(self, path: str | os.PathLike[str], settings: OpenVinoSettings | None = None,
                 artifact: S.Artifact | None = None, manifest: Path | None = None) -> None:
        cfg = settings or OpenVinoSettings()
        ov = import_openvino()
        p = Path(path)
        data, proto = read_onnx_checked(p, artifact, manifest)
        external = any(e.key == "location" for t in proto.graph.initializer for e in t.external_data)
        metadata = {e.key: e.value for e in proto.metadata_props}
        del proto
        spec = spec_from_metadata(metadata, p)
        core = ov.Core()
        if cfg.inference_precision == "bf16":
            caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            if "BF16" not in caps:
                raise UsageError(f"{p}: openvino_precision bf16: this CPU has no bfloat16 support "
                                 f"(OpenVINO CPU capabilities: {', '.join(caps)}); use fp32")
            if spec.kind != "student":
                raise UsageError(f"{p}: openvino_precision bf16 is for a student; a {spec.kind} runs in fp32")
        try:
            model = core.read_model(str(p)) if external else core.read_model(data)
        except Exception as e:  # OpenVINO raises RuntimeError (and its own types) for what it cannot read
            raise InputFileError(f"{p}: OpenVINO cannot read it ({type(e).__name__}: {_first_line(e)})") from None
        del data
        self._ov, self._core, self._model, self._path_for_errors = ov, core, model, p
        self._properties = cfg.properties(ov)
        self._static: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # batch -> (compiled model, infer request)
        self._compiled = self._compile(None)  # the file's own (dynamic) shapes: checks, read-back, fallback
        # a port carries several tensor names (OpenVINO adds its own): the ONNX name is the one the spec has
        got_in = [next((n for n in sorted(i.get_names()) if n in spec.input_names), i.get_any_name())
                  for i in self._compiled.inputs]
        self._outputs = {n: o for o in self._compiled.outputs for n in o.get_names()}
        # as for ONNX Runtime: the exporter may drop an unread input (c of a no-pose student), never rename one
        if not set(got_in) <= set(spec.input_names) or not set(spec.output_names) <= set(self._outputs) \
                or len(self._compiled.outputs) != len(spec.output_names):
            raise ConfigError(f"{p}: the model's inputs {got_in} and outputs {sorted(self._outputs)} do not match "
                              f"its {S.META_IO} metadata ({spec.input_names} and {spec.output_names})")
        self._inputs = got_in
        self._request: Any = None  # the dynamic-shape model's request, made when static_shapes is 0
        self._static_max = cfg.static_shapes
        import openvino.properties.hint as hints

        self.inference_precision = _precision_name(self._compiled.get_property(hints.inference_precision))
        super().__init__(p, spec, metadata, max_batch=None)
        self.settings = cfg
        self.device = "cpu"
        self.name = f"openvino-cpu-{self.precision}" + ("-bf16" if cfg.inference_precision == "bf16" else "")
        if self.inference_precision != cfg.inference_precision:
            raise ConfigError(f"{p}: OpenVINO compiled it in {self.inference_precision}, asked for "
                              f"{cfg.inference_precision}")
        self.bf16_psnr: float | None = None
        if cfg.inference_precision == "bf16":
            self.bf16_psnr = self._gate_bf16(cfg.bf16_min_psnr)

    def _compile(self, batch: int | None) -> Any:
        """The model compiled for the CPU: its own shapes (``batch`` None) or with the batch axis fixed."""
        model = self._model
        if batch is not None:
            model = model.clone()
            model.reshape({i: self._ov.PartialShape([self._ov.Dimension(batch)] + list(i.get_partial_shape())[1:])
                           for i in model.inputs})
        try:
            return self._core.compile_model(model, "CPU", self._properties)
        except Exception as e:
            raise ConfigError(f"{self._path_for_errors}: OpenVINO cannot compile it for the CPU "
                              f"({type(e).__name__}: {_first_line(e)})") from None

    def _request_for(self, batch: int) -> tuple[Any, dict[str, int]]:
        """The infer request for ``batch`` (compiled on first use, the last static_shapes kept; runs under the lock)
        and its output index per name."""
        if self._static_max <= 0:
            if self._request is None:
                self._request = self._compiled.create_infer_request()
            compiled, request = self._compiled, self._request
        elif batch in self._static:
            self._static.move_to_end(batch)
            compiled, request = self._static[batch]
        else:
            compiled = self._compile(batch)
            request = compiled.create_infer_request()
            self._static[batch] = (compiled, request)
            while len(self._static) > self._static_max:
                self._static.popitem(last=False)
        index = {n: k for k, o in enumerate(compiled.outputs) for n in o.get_names()}
        return request, index

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = len(next(iter(feeds.values())))
        request, index = self._request_for(batch)
        res = request.infer({k: feeds[k] for k in self._inputs}, share_inputs=False, share_outputs=False)
        return {n: np.asarray(res[index[n]], dtype=np.float32) for n in self.spec.output_names}

    def _release(self) -> None:
        self._static.clear()
        self._request = None
        self._compiled = None
        self._model = None

    def _gate_bf16(self, min_psnr: float) -> float:
        """The bf16 gate: mean PSNR (dB, the worst image output) of this bf16 model against ONNX Runtime's FP32
        run of the same file on probe_inputs(); ConfigError below ``min_psnr``, the figure otherwise."""
        from nerfgan.metrics import mean_psnr
        from nerfgan.runtime.backends import OnnxBackend

        feeds = probe_inputs(self)
        ours = self._run(self.check(feeds))
        with OnnxBackend(self.path) as ref:
            theirs = ref.infer(feeds)
        worst = min(mean_psnr(ours[n], theirs[n]) if np.isfinite(ours[n]).all() else float("-inf")
                    for n in self.spec.output_names if len(self.spec.output(n).shape) == 4)
        if worst < min_psnr:
            raise ConfigError(f"{self.path}: OpenVINO bf16 output is {worst:.2f} dB from ONNX Runtime's on the probe "
                              f"batch, below the {min_psnr:g} dB gate; use openvino_precision fp32")
        return worst


def probe_inputs(backend: Backend) -> dict[str, np.ndarray]:
    """A fixed student batch (PROBE_BATCH): w ~ N(0, 1) (seed 0), cameras frontal and at yaw 20 degrees.

    w: (2, w_dim); c: (2, 25) built from the file's own camera metadata.
    """
    import json

    from nerfgan import camera

    w_dim = int(backend.spec.input("w").shape[1])
    cam = json.loads(backend.metadata[S.META_CAMERA])
    c = camera.pose(np.array([0.0, 20.0]), np.zeros(2), np.full(2, float(cam["radius"])),
                    tuple(float(v) for v in cam["pivot"]), float(cam["focal"]))
    w = np.random.RandomState(0).randn(PROBE_BATCH, w_dim).astype(np.float32)
    return {"w": w, "c": np.asarray(c, np.float32).reshape(PROBE_BATCH, 25)}


def _precision_name(t: Any) -> str:
    """OpenVINO's element type of INFERENCE_PRECISION_HINT as nerfgan names it ('fp32', 'bf16', 'f16', ...)."""
    s = str(getattr(t, "get_type_name", lambda: t)()).lower()
    return {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16"}.get(s, s)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else "")[:200]
