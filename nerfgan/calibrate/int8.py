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
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nerfgan.errors import MissingDependencyError, UsageError

DEFAULT_EXCLUDE = ("*/torgb/*", "depthwise")  # 'depthwise' = every grouped (FIR) convolution
INTERLEAVE = "subpixel_interleave"  # name suffix of the phase-interleaving layers subpixel_model adds (kept float)
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


def _ints(node: Any, name: str, default: list[int]) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), default)


def subpixel_model(model: Any, skip: Collection[str] = ()) -> tuple[Any, list[str]]:
    """``model`` (onnx ModelProto, not changed) with its 2-D transposed convolutions as sub-pixel convolutions.

    A ConvTranspose of stride s (both axes), kernel K x K, group 1, dilation 1, constant weight W (Cin, Cout, K, K)
    and pads computes, per output phase (ry, rx) in [0, s)^2, an ordinary convolution of the input with J x J taps
    (J = ceil(K / s)): ``y[o, s*m + ry, s*n + rx] = sum_{c,a,b} x[c, m - (J-1) + a, n - (J-1) + b] *
    W[c, o, ry + s*(J-1-a), rx + s*(J-1-b)]`` (taps whose kernel index is >= K are zero). So it becomes

        Conv(Cin -> Cout*s*s, J x J, pads J-1)  ->  interleave: ConvTranspose(group Cout, s x s, stride s, 0/1
                                                     weights, the original pads): DepthToSpace(s, CRD) and crop

    with the same result up to float rounding (the sums are the same products in another order), and a Conv is
    what ONNX Runtime's CPU provider quantizes into QLinearConv. The interleaving layer (named ``INTERLEAVE``) only
    moves values and must stay float (quantize excludes it).
    Nodes named in ``skip``, unnamed ones, and any that do not fit (other strides per axis, groups, dilations, auto_pad,
    output_shape, a weight that is not a float32 initializer), are kept. The new Conv is named
    ``<ConvTranspose name>/subpixel`` so that name patterns of the layer still match. Returns (model, names of
    the ConvTranspose nodes rewritten).
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    nodes: list[Any] = []
    done: list[str] = []
    for n in g.node:
        w_init = inits.get(n.input[1]) if n.op_type == "ConvTranspose" and len(n.input) > 1 else None
        b_init = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        attrs = {a.name for a in n.attribute}
        if (w_init is None or not n.name or n.name in skip or w_init.data_type != onnx.TensorProto.FLOAT
                or len(w_init.dims) != 4
                or (len(n.input) > 2 and n.input[2] and b_init is None) or attrs & {"output_shape"}
                or next((a.s for a in n.attribute if a.name == "auto_pad"), b"NOTSET") != b"NOTSET"
                or _group(n) != 1 or set(_ints(n, "dilations", [1, 1])) != {1}):
            nodes.append(n)
            continue
        w = numpy_helper.to_array(w_init)
        cin, cout, kh, kw = w.shape
        strides = _ints(n, "strides", [1, 1])
        pads = _ints(n, "pads", [0, 0, 0, 0])
        opad = _ints(n, "output_padding", [0, 0])
        s = strides[0]
        j = -(-max(kh, kw) // s)
        tail = [s * j - k - op + pe for k, op, pe in zip((kh, kw), opad, pads[2:])]  # cut off after the phases
        if strides != [s, s] or s < 2 or min(tail) < 0:
            nodes.append(n)
            continue
        w2 = np.zeros((cout * s * s, cin, j, j), dtype=np.float32)
        for ry in range(s):
            for rx in range(s):
                for a in range(j):
                    for b in range(j):
                        ky, kx = ry + s * (j - 1 - a), rx + s * (j - 1 - b)
                        if ky < kh and kx < kw:
                            w2[ry * s + rx::s * s, :, a, b] = w[:, :, ky, kx].T
        base = n.name
        names = {k: f"{base}/subpixel_{k}" for k in ("w", "b", "conv", "iw")}
        g.initializer.append(numpy_helper.from_array(w2, names["w"]))
        conv_in = [n.input[0], names["w"]]
        if b_init is not None:
            g.initializer.append(numpy_helper.from_array(np.repeat(numpy_helper.to_array(b_init).astype(np.float32),
                                                                   s * s), names["b"]))
            conv_in.append(names["b"])
        # the phases interleaved (DepthToSpace, CRD order) and the pads cut off by one depthwise s x s transposed
        # convolution of stride s with 0/1 weights: exact, and in ONNX Runtime 2-3x faster than its DepthToSpace
        iw = np.zeros((cout * s * s, 1, s, s), dtype=np.float32)
        for ry in range(s):
            for rx in range(s):
                iw[ry * s + rx::s * s, 0, ry, rx] = 1.0
        g.initializer.append(numpy_helper.from_array(iw, names["iw"]))
        nodes += [helper.make_node("Conv", conv_in, [names["conv"]], name=f"{base}/subpixel", kernel_shape=[j, j],
                                   pads=[j - 1] * 4, strides=[1, 1]),
                  helper.make_node("ConvTranspose", [names["conv"], names["iw"]], list(n.output[:1]),
                                   name=f"{base}/{INTERLEAVE}", group=cout, kernel_shape=[s, s], strides=[s, s],
                                   pads=pads[:2] + tail)]
        done.append(n.name)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for nd in g.node for i in nd.input} | {i.name for i in g.input}
    keep = [t for t in g.initializer if t.name in used]  # the ConvTransposes' weights go
    del g.initializer[:]
    g.initializer.extend(keep)
    return out, done


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str], inputs: dict[str, np.ndarray],
             exclude: Sequence[str] = DEFAULT_EXCLUDE, backend: str = "auto", batch_size: int = 8,
             subpixel: bool = False) -> tuple[str, list[str]]:
    """Write the INT8 Q/DQ model of ``fp32_path`` to ``out_path``; returns (backend used, excluded node names).

    ``subpixel`` (ONNX Runtime backend only): quantize the transposed convolutions as sub-pixel convolutions
    (:func:`subpixel_model`), so that ONNX Runtime's CPU provider runs them as QLinearConv; the phase-interleaving
    layers it adds are kept float and are appended to the excluded names returned. Off by default for now (the
    INT8 file's layout stays what TensorRT builds were checked with, and the speed-up is not settled): on the
    quickstart student, on a busy 2-core CPU, round-robin timings gave INT8 +6% to +20% images/s with it, a
    sequential ``nerfgan bench`` -16%; the INT8 gates were met (PSNR vs FP32 41.9 / 43.0 dB, 41.5 / 42.5 without).
    """
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
    if not subpixel:
        del model
        _quantize_ort(fp32_path, out_path, inputs, excluded, batch_size)
        return "ort", excluded
    import tempfile

    # ONNX Runtime's CPU provider has no int8 transposed convolution: a quantized ConvTranspose runs in float with its
    # Q/DQ pairs around it. As sub-pixel convolutions the upsampling layers become QLinearConv (see subpixel_model).
    rewritten, done = subpixel_model(model, skip=set(excluded))
    del model
    interleave = [f"{name}/{INTERLEAVE}" for name in done]
    with tempfile.TemporaryDirectory(prefix="nerfgan-int8-") as tmp:
        src = Path(tmp) / "subpixel.onnx"
        onnx.save(rewritten, str(src))
        del rewritten
        _quantize_ort(src, out_path, inputs, excluded + interleave, batch_size)
    return "ort", excluded + interleave


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
