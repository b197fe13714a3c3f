"""FP16 that is FP16: after conversion only the Casts the float32 islands need remain."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort

from nerfgan.calibrate.fp16 import to_fp16
from nerfgan.export.to_onnx import export_onnx
from nerfgan.student.checkpoint import load_student


def casts(model):
    return [n for n in model.graph.node if n.op_type == "Cast"]


def test_no_cast_is_redundant_and_the_outputs_still_match(tmp_path, tiny_student_path):
    student = load_student(tiny_student_path)
    path = export_onnx(student, "student", tmp_path / "student.onnx")
    fp32 = onnx.load(str(path))
    fp16, kept, total = to_fp16(onnx.load(str(path)))
    producer = {o: n for n in fp16.graph.node for o in n.output}
    cs = casts(fp16)
    pairs = collections.Counter((c.input[0], c.attribute[0].i) for c in cs)
    assert max(pairs.values()) == 1  # one tensor is cast to one type once
    assert not [c for c in cs if c.input[0] in producer and producer[c.input[0]].op_type == "Cast"]  # no Cast of a Cast
    assert len(cs) < 60  # the converter alone leaves 290 on this graph
    inferred = onnx.shape_inference.infer_shapes(fp16).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input]}
    convs = [n for n in fp16.graph.node if n.op_type == "Conv"]
    assert convs and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT16 for n in convs)  # every conv in float16

    so = ort.SessionOptions()
    so.log_severity_level = 3
    run = {name: ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
           for name, m in (("fp32", fp32), ("fp16", fp16))}
    rng = np.random.RandomState(0)
    from nerfgan import camera

    c = np.tile(camera.pose(20.0, 5.0).reshape(1, 25).astype(np.float32), (2, 1))
    feeds = {"w": (rng.randn(2, 512) * 0.5).astype(np.float32), "c": c}
    a, b = (run[k].run(None, feeds) for k in ("fp32", "fp16"))
    for x, y in zip(a, b):
        assert 10 * np.log10(4 / np.mean((x - y) ** 2)) > 40  # the FP16 gate's threshold
