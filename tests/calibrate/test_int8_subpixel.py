"""Transposed convolutions as sub-pixel convolutions (nerfgan.calibrate.int8.subpixel_model), which ONNX Runtime's
CPU provider can run as QLinearConv once quantized."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nerfgan.calibrate.int8 import INTERLEAVE, quantize, subpixel_model  # noqa: E402


def convt_model(cin=3, cout=4, k=(3, 3), stride=(2, 2), pads=(0, 0, 0, 0), output_padding=(0, 0), group=1,
                dilations=(1, 1), bias=True, hw=(5, 6), seed=0, name="/g/b8/conv0/ConvTranspose"):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cin, cout // group, *k)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["x", "W"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "B"))
        inputs.append("B")
    node = helper.make_node("ConvTranspose", inputs, ["y"], name=name, strides=list(stride), pads=list(pads),
                            output_padding=list(output_padding), group=group, dilations=list(dilations))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def ops(model):
    return [n.op_type for n in model.graph.node]


CASES = {
    "stylegan_up": dict(k=(3, 3), stride=(2, 2)),  # the student's upsampling conv: no pads, FIR after it
    "pads_1": dict(k=(3, 3), stride=(2, 2), pads=(1, 1, 1, 1), output_padding=(1, 1)),
    "k4_pads": dict(k=(4, 4), stride=(2, 2), pads=(1, 2, 1, 0), bias=False),
    "k2": dict(k=(2, 2), stride=(2, 2)),
    "stride3_k5": dict(k=(5, 5), stride=(3, 3), pads=(2, 1, 0, 2)),
    "rect_kernel": dict(k=(3, 1), stride=(2, 2), pads=(1, 0, 0, 0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewrite_is_exact(case):
    m = convt_model(**CASES[case])
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 6)).astype(np.float32)
    m2, done = subpixel_model(m)
    onnx.checker.check_model(m2)
    assert done == ["/g/b8/conv0/ConvTranspose"] and ops(m2) == ["Conv", "ConvTranspose"]
    assert [n.name for n in m2.graph.node] == ["/g/b8/conv0/ConvTranspose/subpixel",
                                               f"/g/b8/conv0/ConvTranspose/{INTERLEAVE}"]
    assert {t.name for t in m2.graph.initializer}.isdisjoint({"W"})  # the old weight is gone
    ref, got = run(m, x), run(m2, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
    assert ops(m) == ["ConvTranspose"]  # the input model is left as it was


def test_a_wrong_phase_order_would_be_caught():
    """The comparison above is sensitive: the same rewrite with two phases swapped in the interleaving is far off."""
    m = convt_model(**CASES["stylegan_up"])
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 6)).astype(np.float32)
    m2, _ = subpixel_model(m)
    t = next(t for t in m2.graph.initializer if t.name.endswith("subpixel_iw"))
    iw = numpy_helper.to_array(t).copy()
    iw[:, 0] = iw[:, 0, ::-1]  # rows of phases swapped
    t.CopyFrom(numpy_helper.from_array(iw, t.name))
    assert np.abs(run(m2, x) - run(m, x)).max() > 0.1


@pytest.mark.parametrize("kwargs", [dict(group=3, cin=3, cout=6), dict(stride=(2, 1)), dict(dilations=(2, 2)),
                                    dict(stride=(1, 1))])
def test_unsupported_layers_are_kept(kwargs):
    m = convt_model(**kwargs)
    m2, done = subpixel_model(m)
    assert done == [] and ops(m2) == ["ConvTranspose"]


def test_skipped_by_name_or_unnamed():
    m2, done = subpixel_model(convt_model(), skip={"/g/b8/conv0/ConvTranspose"})
    assert done == [] and ops(m2) == ["ConvTranspose"]
    assert subpixel_model(convt_model(name=""))[1] == []


def test_quantized_upsampling_becomes_qlinearconv(tmp_path):
    """quantize (ONNX Runtime backend, subpixel=True): the transposed convolution ends up as QLinearConv in ONNX
    Runtime's optimised graph (without the rewrite it stays a float ConvTranspose between Q/DQ pairs), and stays
    close to float."""
    m = convt_model(cin=8, cout=8, hw=(8, 8))
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    rng = np.random.default_rng(2)
    calib = {"x": rng.standard_normal((16, 8, 8, 8)).astype(np.float32)}
    backend, excluded = quantize(src, tmp_path / "q.onnx", calib, exclude=(), backend="ort", subpixel=True)
    assert backend == "ort" and excluded == [f"/g/b8/conv0/ConvTranspose/{INTERLEAVE}"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), so, providers=["CPUExecutionProvider"])
    fused = onnx.load(str(tmp_path / "opt.onnx")).graph.node
    assert "QLinearConv" in [n.op_type for n in fused]
    # the only transposed convolution left is the float interleaving of the phases (it just moves values)
    assert [n.name for n in fused if n.op_type == "ConvTranspose"] == [f"/g/b8/conv0/ConvTranspose/{INTERLEAVE}"]
    x = calib["x"][:2]
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    # without subpixel (the default) the transposed convolution stays a float ConvTranspose between Q/DQ pairs
    quantize(src, tmp_path / "q0.onnx", calib, exclude=(), backend="ort")
    so.optimized_model_filepath = str(tmp_path / "opt0.onnx")
    ort.InferenceSession(str(tmp_path / "q0.onnx"), so, providers=["CPUExecutionProvider"])
    fused0 = [n.op_type for n in onnx.load(str(tmp_path / "opt0.onnx")).graph.node]
    assert "ConvTranspose" in fused0 and "QLinearConv" not in fused0
