"""INT8 ONNX: symmetric, per-channel Q/DQ around the student's convolutions, calibrated on teacher renders' inputs.

TensorRT reads explicit quantization only (Q/DQ nodes with zero zero-points; TensorRT 11 removed
implicit calibration), so the INT8 file is an ordinary ONNX graph with QuantizeLinear /
DequantizeLinear pairs. Two ways to make it:

* ONNX Runtime's static quantization (always available): QDQ format, int8 activations and weights,
  both symmetric, weights per output channel, activation ranges by MinMax over the calibration
  file's (w, c) inputs;
* NVIDIA ModelOpt (``modelopt.onnx.quantization``) when installed (``--int8-backend modelopt``, or
  ``auto`` picks it): int8 mode, 'max' calibration, the rest of the graph kept float32.

Quantized: Conv and ConvTranspose. Kept in float (the defaults, DEFAULT_EXCLUDE, node-name patterns
in fnmatch syntax, configurable): the mapping MLPs and style affines (Gemm/MatMul are never
quantized), the fixed 4x4 FIR low-pass convolutions of the upsampling (depthwise, cheap and in the
signal path of every resolution), and the ToRGB convolutions that write the output images.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nerfgan.errors import MissingDependencyError, UsageError

DEFAULT_EXCLUDE = ("*/torgb/*", "depthwise")  # 'depthwise' = every grouped (FIR) convolution
OP_TYPES = ("Conv", "ConvTranspose")
BACKENDS = ("auto", "ort", "modelopt")


def _group(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def quantizable_nodes(model: Any) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES]


def excluded_nodes(model: Any, patterns: Iterable[str]) -> list[str]:
    """Names of the Conv/ConvTranspose nodes matched by ``patterns`` ('depthwise' matches grouped convs)."""
    patterns = list(patterns)
    out = []
    for n in model.graph.node:
        if n.op_type not in OP_TYPES:
            continue
        if ("depthwise" in patterns and _group(n) > 1) or any(fnmatch.fnmatchcase(n.name, p) for p in patterns
                                                              if p != "depthwise"):
            out.append(n.name)
    return out


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
             exclude: Sequence[str] = DEFAULT_EXCLUDE, backend: str = "auto", batch_size: int = 8) -> tuple[str, list[str]]:
    """Write the INT8 Q/DQ model of ``fp32_path`` to ``out_path``; returns (backend used, excluded node names)."""
    import onnx

    if backend not in BACKENDS:
        raise UsageError(f"--int8-backend: choose one of {', '.join(BACKENDS)}, got {backend!r}")
    model = onnx.load(str(fp32_path))
    excluded = excluded_nodes(model, exclude)
    if len(excluded) == len(quantizable_nodes(model)):
        raise UsageError(f"--int8-exclude {','.join(exclude)}: excludes every convolution, nothing would be INT8")
    use_modelopt = backend == "modelopt" or (backend == "auto" and modelopt_available())
    if backend == "modelopt" and not modelopt_available():
        raise MissingDependencyError("--int8-backend modelopt: NVIDIA ModelOpt is not installed "
                                     "(pip install 'nvidia-modelopt[onnx]')")
    if use_modelopt:
        _quantize_modelopt(fp32_path, out_path, inputs, excluded)
        return "modelopt", excluded
    _quantize_ort(fp32_path, out_path, inputs, excluded, batch_size)
    return "ort", excluded


def _quantize_ort(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
                  excluded: list[str], batch_size: int) -> None:
    import logging

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    n = len(next(iter(inputs.values())))

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= n:
                return None
            feed = {k: np.ascontiguousarray(v[self.start:self.start + batch_size]) for k, v in inputs.items()}
            self.start += batch_size
            return feed

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer logs a pre-processing hint through the root logger
    try:
        quantize_static(str(fp32_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(OP_TYPES), per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        root.setLevel(level)


def _quantize_modelopt(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                       inputs: dict[str, np.ndarray], excluded: list[str]) -> None:  # pragma: no cover - needs ModelOpt
    from modelopt.onnx.quantization import quantize as mo_quantize

    mo_quantize(onnx_path=str(fp32_path), quantize_mode="int8", calibration_data=inputs, calibration_method="max",
                nodes_to_exclude=excluded, op_types_to_quantize=list(OP_TYPES), high_precision_dtype="fp32",
                output_path=str(out_path))
    if not Path(out_path).is_file():
        raise UsageError(f"ModelOpt wrote no {out_path}")


QDQ_FP16_OPSET = 19  # the first opset whose QuantizeLinear / DequantizeLinear take float16 inputs and scales


def unquantized_to_fp16(model: Any) -> Any:
    """The INT8 Q/DQ model (an onnx ModelProto) with its unquantized parts in float16: what TensorRT >= 10.12 builds.

    A strongly typed TensorRT network takes every precision from the graph, so a Q/DQ graph whose other
    layers are float32 runs them in FP32 and the INT8 plan can be slower than the FP16 one. Here the graph is
    raised to opset 19 and converted like the FP16 file (nerfgan.calibrate.fp16.to_fp16: the mapping and the
    demodulation stay float32): scales and the tensors around each Q/DQ pair become float16, the int8 weights
    and zero points stay as they are. ONNX Runtime's CPU provider runs the result, so it is judged here by the
    same INT8 gates before any plan is built from it.
    """
    from onnx import version_converter

    from nerfgan.calibrate.fp16 import to_fp16

    raised = version_converter.convert_version(model, QDQ_FP16_OPSET)
    converted, _, _ = to_fp16(raised)
    return converted
