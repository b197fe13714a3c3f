"""FP16 block list and INT8 Q/DQ structure on the exported tiny student."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nerfgan.calibrate.fp16 import demodulation_nodes, fp32_nodes, to_fp16
from nerfgan.calibrate.int8 import DEFAULT_EXCLUDE, excluded_nodes, quantizable_nodes, quantize
from nerfgan.errors import UsageError


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory, tiny_student_path):
    from nerfgan.export.to_onnx import export_onnx
    from nerfgan.student.checkpoint import load_student

    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    return export_onnx(load_student(tiny_student_path), "student", path)


def test_demodulation_chain_found_for_every_modulated_conv(student_onnx):
    model = onnx.load(str(student_onnx))
    demod = demodulation_nodes(model.graph)
    sums = [n for n in model.graph.node if n.op_type == "ReduceSum"]
    assert len(sums) == 13  # 9 synthesis + 4 super-resolution modulated convolutions (ToRGB is not demodulated)
    by_name = {n.name: n for n in model.graph.node}
    for s in sums:
        scope = s.name.rsplit("/", 1)[0] + "/"
        ops = {by_name[n].op_type for n in demod if n.startswith(scope) and "/affine/" not in n}
        assert {"ReduceSum", "Sqrt", "Div", "Mul"} <= ops, scope
    convs = {n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    assert not convs & demod, "a convolution was put on the float32 list"


def test_fp16_keeps_mapping_and_demodulation_float32(student_onnx):
    model = onnx.load(str(student_onnx))
    keep = fp32_nodes(model.graph)
    assert any("/mapping/" in n for n in keep)
    converted, kept, total = to_fp16(model)
    assert kept == len(keep) and total > kept
    dtypes = {t.name: t.data_type for t in converted.graph.initializer}
    nodes = {n.name: n for n in converted.graph.node}
    conv_w = [dtypes[nodes[n].input[1]] for n in nodes if nodes[n].op_type == "Conv" and nodes[n].input[1] in dtypes]
    assert conv_w and all(d == onnx.TensorProto.FLOAT16 for d in conv_w)
    mapping_w = [dtypes[i] for n in nodes.values() if "/mapping/" in n.name for i in n.input if i in dtypes]
    assert mapping_w and onnx.TensorProto.FLOAT16 not in mapping_w
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in converted.graph.input)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in converted.graph.output)


def test_int8_is_symmetric_per_channel_and_respects_exclusions(tmp_path, student_onnx, tiny_calib_path):
    from nerfgan.calibrate.calibset import load_calibration_set

    model = onnx.load(str(student_onnx))
    excluded = excluded_nodes(model, DEFAULT_EXCLUDE)
    assert any("torgb" in n for n in excluded) and len(excluded) < len(quantizable_nodes(model))
    backend, got = quantize(student_onnx, tmp_path / "q.onnx", load_calibration_set(tiny_calib_path).student_inputs(),
                            backend="ort")
    assert backend == "ort" and got == excluded
    q = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    producers = {o: n for n in q.graph.node for o in n.output}
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:  # TensorRT needs zero zero-points
        if len(n.input) > 2 and n.input[2] in inits:
            assert not np.any(inits[n.input[2]]), n.name
            assert inits[n.input[2]].dtype == np.int8
    for n in q.graph.node:
        if n.op_type not in ("Conv", "ConvTranspose"):
            continue
        w_src = producers.get(n.input[1])
        if n.name in excluded:
            assert w_src is None or w_src.op_type != "DequantizeLinear", n.name
        else:
            assert w_src is not None and w_src.op_type == "DequantizeLinear", n.name
            scale = inits[w_src.input[1]]
            assert scale.ndim == 1 and scale.size > 1, f"{n.name}: weights not per channel"


def test_int8_refuses_to_exclude_everything(tmp_path, student_onnx):
    with pytest.raises(UsageError, match="excludes every convolution"):
        quantize(student_onnx, tmp_path / "q.onnx", {}, exclude=("*",), backend="ort")
    with pytest.raises(UsageError, match="int8-backend"):
        quantize(student_onnx, tmp_path / "q.onnx", {}, backend="tensorrt")


def test_int8_for_tensorrt_runs_its_unquantized_layers_in_float16(tmp_path, student_onnx, tiny_calib_path):
    """The Q/DQ graph a strongly typed TensorRT build gets: float16 everywhere but the float32 islands, same
    quantization, and (run by ONNX Runtime here) the same images as the float32-remainder INT8 file."""
    import collections

    import onnxruntime as ort

    from nerfgan.calibrate.calibset import load_calibration_set
    from nerfgan.calibrate.int8 import QDQ_FP16_OPSET, unquantized_to_fp16
    from nerfgan.metrics import mean_psnr

    calib = load_calibration_set(tiny_calib_path).student_inputs()
    quantize(student_onnx, tmp_path / "q.onnx", calib, backend="ort")
    q = onnx.load(str(tmp_path / "q.onnx"))
    t = unquantized_to_fp16(onnx.load(str(tmp_path / "q.onnx")))
    assert next(o.version for o in t.opset_import if o.domain in ("", "ai.onnx")) == QDQ_FP16_OPSET
    g = onnx.shape_inference.infer_shapes(t).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input]}
    types.update({i.name: i.data_type for i in t.graph.initializer})
    ops = collections.Counter(n.op_type for n in t.graph.node)
    assert ops["QuantizeLinear"] == sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 0
    for n in t.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert types[n.input[1]] == onnx.TensorProto.FLOAT16, n.name  # float16 scales: DQ yields float16
        if n.op_type in ("Conv", "ConvTranspose"):
            assert types[n.input[0]] == onnx.TensorProto.FLOAT16, n.name
    assert {types[i.name] for i in t.graph.input} == {onnx.TensorProto.FLOAT}  # the IO stays float32

    so = ort.SessionOptions()
    so.log_severity_level = 3
    feeds = {k: v[:4] for k, v in calib.items()}
    fp32, a, b = (ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(["image"], feeds)[0]
                  for m in (onnx.load(str(student_onnx)), q, t))
    assert mean_psnr(b, fp32) > mean_psnr(a, fp32) - 1.0  # float16 costs the INT8 file less than a dB against float32
