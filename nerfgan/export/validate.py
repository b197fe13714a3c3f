"""Validation gates: every exported file is run and compared before it gets its final name.

Polygraphy drives both sides (its ONNX Runtime runner and a PyTorch runner on the CPU, through its
Comparator) on random seeds and poses at batch 1 and 3, and judges FP32 with its SimpleCompareFunc
(max absolute error). The gates, one per precision (thresholds in ExportConfig):

    fp32  every output's max |onnx - pytorch| <= fp32_atol (1e-4)
    fp16  every output's PSNR against the FP32 PyTorch student >= fp16_min_psnr (40 dB)
    int8  judged on held-out samples: the calibration file's last rows (int8_holdout of them, at least
          INT8_MIN_SAMPLES), which the quantizer never saw; the first rows calibrate. For every output:
          PSNR against the FP32 PyTorch student >= int8_min_psnr_vs_fp32 (30 dB), and
          PSNR(INT8 vs teacher) >= PSNR(FP32 student vs teacher) - int8_max_drop (2 dB) on the teacher renders

PSNR here is nerfgan's everywhere (nerfgan.metrics): images in [-1, 1], data range 2, per sample, averaged (Polygraphy's
own PSNR takes the reference's maximum as the peak, which would not match our other figures).
A TensorRT plan is held to the gate of the ONNX file it was built from, run through the runtime's TensorRT
backend on the same feeds (an FP32 plan is built without TF32 for this). A miss raises ExportMismatchError
listing every output that missed.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nerfgan.errors import ExportMismatchError, InputFileError
from nerfgan.metrics import mean_psnr
from nerfgan.runtime import spec as S

if TYPE_CHECKING:
    from nerfgan.student.generator import StudentGenerator


@dataclass(frozen=True)
class Check:
    """One output of one artifact against one gate."""

    artifact: str
    output: str
    metric: str  # 'max_abs_error', 'psnr_db_vs_fp32' or 'psnr_drop_db_vs_teacher'
    value: float
    threshold: float
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        rel = "<=" if self.metric in ("max_abs_error", "psnr_drop_db_vs_teacher") else ">="
        return f"{self.artifact}:{self.output} {self.metric} {self.value:.4g} (needs {rel} {self.threshold:g}){self.detail}"


def raise_on_misses(checks: Sequence[Check]) -> None:
    missed = [c for c in checks if not c.ok]
    if missed:
        raise ExportMismatchError(f"{len(missed)} output(s) missed their gate: " + "; ".join(c.describe() for c in missed))


# --- inputs ------------------------------------------------------------------------------------------
INT8_MIN_SAMPLES = 2  # fewest calibration file rows on each side of the INT8 split


def int8_split(n: int, holdout: float, calib: str) -> int:
    """Rows [0, k) of a calibration file of ``n`` samples calibrate INT8, rows [k, n) judge it; returns k.
    The judging part is round(n * holdout) rows; each part needs INT8_MIN_SAMPLES."""
    def parts(m: int) -> tuple[int, int]:
        return m - int(round(m * holdout)), int(round(m * holdout))

    if min(parts(n)) < INT8_MIN_SAMPLES:
        need = next(m for m in range(2 * INT8_MIN_SAMPLES, 10**6) if min(parts(m)) >= INT8_MIN_SAMPLES)
        raise InputFileError(f"{calib}: {n} sample(s); --int8 needs at least {need}, the first part to calibrate and "
                             f"the last {holdout:.0%} to judge the INT8 file on samples it was not calibrated on "
                             "(nerfgan calibrate --n)")
    return parts(n)[0]


def validation_feeds(student: StudentGenerator, spec: S.ModelSpec, batches: Sequence[int] = (1, 3),
                     seed: int = 1234) -> list[dict[str, np.ndarray]]:
    """Random seeds and poses from the training pose distribution, one feed per batch size."""
    from nerfgan.sampling import PoseDistribution, draw

    cfg = student.config
    r = cfg.teacher.rendering
    feeds, start = [], 0
    for b in batches:
        s = draw(seed, range(start, start + b), PoseDistribution(), r.avg_camera_radius, r.avg_camera_pivot,
                 cfg.teacher.z_dim)
        start += b
        if spec.kind == "mapping":
            feeds.append({"z": s.z, "c_cond": s.c_cond, "psi": s.psi})
        else:
            with torch.no_grad():
                w = student.teacher_mapping(torch.from_numpy(s.z), torch.from_numpy(s.c_cond),
                                            torch.from_numpy(s.psi)).numpy()
            feeds.append({"w": w, "c": s.c})
    return feeds


# --- runners -----------------------------------------------------------------------------------------
def _polygraphy() -> Any:
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    import polygraphy

    return polygraphy


def _input_metadata(spec: S.ModelSpec) -> Any:
    """Polygraphy's description of ``spec``'s inputs (the batch axis dynamic)."""
    from polygraphy.common import TensorMetadata

    meta = TensorMetadata()
    for t in spec.inputs:
        meta.add(t.name, dtype=np.dtype(t.dtype), shape=[-1 if d == S.BATCH else d for d in t.shape])
    return meta


def torch_runner(module: torch.nn.Module, spec: S.ModelSpec, name: str = "pytorch") -> Any:
    """A Polygraphy runner for a torch module on the CPU (Polygraphy's own PytRunner moves inputs to CUDA)."""
    _polygraphy()
    from polygraphy.backend.base import BaseRunner

    class TorchRunner(BaseRunner):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name=name, prefix="pytorch-cpu-runner")

        def activate_impl(self) -> None:
            module.eval()

        def get_input_metadata_impl(self) -> Any:
            return _input_metadata(spec)

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
            start = time.time()
            with torch.no_grad():
                out = module(*[torch.from_numpy(np.asarray(feed_dict[n])) for n in spec.input_names])
            outs = out if isinstance(out, tuple) else (out,)
            self.inference_time = time.time() - start
            return OrderedDict((n, o.numpy()) for n, o in zip(spec.output_names, outs))

        def deactivate_impl(self) -> None:
            pass

    return TorchRunner()


def backend_runner(open_backend: Any, spec: S.ModelSpec, name: str) -> Any:
    """A Polygraphy runner over a nerfgan.runtime Backend (opened by ``open_backend()`` on activation, closed after):
    the candidate is run by the same code an application runs it with."""
    _polygraphy()
    from polygraphy.backend.base import BaseRunner

    class BackendRunner(BaseRunner):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name=name, prefix="nerfgan-runtime-runner")
            self.backend: Any = None

        def activate_impl(self) -> None:
            self.backend = open_backend()

        def get_input_metadata_impl(self) -> Any:
            return _input_metadata(spec)

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
            start = time.time()
            out = self.backend.infer({n: np.asarray(feed_dict[n]) for n in spec.input_names})
            self.inference_time = time.time() - start
            return OrderedDict((n, out[n]) for n in spec.output_names)

        def deactivate_impl(self) -> None:
            self.backend.close()
            self.backend = None

    return BackendRunner()


def plan_runner(path: str | os.PathLike[str], spec: S.ModelSpec) -> Any:
    """The runtime's TensorRT backend on a freshly built plan (needs TensorRT and the GPU that built it)."""
    def open_plan() -> Any:
        from nerfgan.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path)

    return backend_runner(open_plan, spec, os.path.basename(path))


def onnx_runner(path: str | os.PathLike[str], name: str | None = None) -> Any:
    _polygraphy()
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    ort.set_default_logger_severity(3)  # ORT's notes on what it could not constant-fold are not ours to print

    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name or os.path.basename(path))


def run_reference(reference: Any, feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """Polygraphy's Comparator runs the reference runner on every feed, once: several artifacts (the
    float32 and float16 students) are judged against the same reference outputs."""
    _polygraphy()
    from polygraphy.comparator import Comparator

    return Comparator.run([reference], data_loader=[OrderedDict(f) for f in feeds])


def run_pair(reference_results: Any, candidate: Any, feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """The Comparator runs ``candidate`` on the same feeds; returns RunResults [reference, candidate]."""
    _polygraphy()
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.struct import RunResults

    candidate_results = Comparator.run([candidate], data_loader=[OrderedDict(f) for f in feeds])
    return RunResults(list(reference_results.items()) + list(candidate_results.items()))


def _outputs(results: Any, runner_index: int) -> list[dict[str, np.ndarray]]:
    _, iterations = list(results.items())[runner_index]
    return [{k: np.asarray(v) for k, v in it.items()} for it in iterations]


# --- gates -------------------------------------------------------------------------------------------
def check_fp32(artifact: str, results: Any, spec: S.ModelSpec, atol: float) -> list[Check]:
    """Max absolute error per output over all feeds; the verdict is Polygraphy's SimpleCompareFunc."""
    _polygraphy()
    from polygraphy.comparator import Comparator
    from polygraphy.comparator.compare import SimpleCompareFunc

    verdict = Comparator.compare_accuracy(
        results, compare_func=SimpleCompareFunc(atol=atol, rtol=0.0, check_error_stat="max", check_shapes=True))
    per_output: dict[str, bool] = {n: True for n in spec.output_names}
    for accuracy in verdict:  # one AccuracyResult per compare func: {runner pair: [ {output: result} per feed ]}
        for iterations in accuracy.values():
            for it in iterations:
                for n, res in it.items():
                    per_output[n] = per_output.get(n, True) and bool(res)
    ref, cand = _outputs(results, 0), _outputs(results, 1)
    checks = []
    for n in spec.output_names:
        err = max(float(np.abs(r[n].astype(np.float64) - c[n]).max()) if r[n].shape == c[n].shape else float("inf")
                  for r, c in zip(ref, cand))
        checks.append(Check(artifact, n, "max_abs_error", err, atol, per_output[n] and err <= atol))
    return checks


def check_psnr_vs_reference(artifact: str, results: Any, spec: S.ModelSpec, min_psnr: float) -> list[Check]:
    """Mean per-sample PSNR of the candidate (runner 1) against the reference (runner 0), per image output."""
    ref, cand = _outputs(results, 0), _outputs(results, 1)
    checks = []
    for n in spec.output_names:
        value = mean_psnr(np.concatenate([c[n] for c in cand]), np.concatenate([r[n] for r in ref]))
        ok = bool(np.all(np.isfinite(np.concatenate([c[n].ravel() for c in cand])))) and value >= min_psnr
        checks.append(Check(artifact, n, "psnr_db_vs_fp32", value, min_psnr, ok))
    return checks


def check_psnr_drop_vs_teacher(artifact: str, fp32: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                               teacher: dict[str, np.ndarray], max_drop: float) -> list[Check]:
    """For each output: PSNR(fp32 vs teacher) - PSNR(candidate vs teacher) <= max_drop (means over samples)."""
    checks = []
    for n in teacher:
        p32, pq = mean_psnr(fp32[n], teacher[n]), mean_psnr(candidate[n], teacher[n])
        finite = bool(np.all(np.isfinite(candidate[n])))
        drop = p32 - pq if finite else float("inf")
        checks.append(Check(artifact, n, "psnr_drop_db_vs_teacher", drop, max_drop, drop <= max_drop,
                            f" [fp32 {p32:.2f} dB, candidate {pq:.2f} dB vs teacher]"))
    return checks
