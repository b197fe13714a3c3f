"""Clean graphs: the exported student carries its convolutions and little else, sizes static but the batch."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import torch

from nerfgan import camera
from nerfgan.export.to_onnx import export_onnx
from nerfgan.student.checkpoint import load_student


def test_student_graph_is_folded_broadcast_and_static(tmp_path, tiny_student_path):
    student = load_student(tiny_student_path).eval()
    model = onnx.load(str(export_onnx(student, "student", tmp_path / "student.onnx")))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Tile"] == 0  # codes and the constant input are broadcast (Expand), never copied
    assert ops["Conv"] + ops["ConvTranspose"] >= 25
    assert sum(ops.values()) < 500  # the traced graph has ~1,500 nodes before onnxslim folds its shape arithmetic
    assert ops["Shape"] <= 2  # what is left of the shape arithmetic: the batch size of the constant input
    for out in model.graph.output:
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and all(isinstance(d, int) and d > 0 for d in dims[1:]), (out.name, dims)

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.RandomState(1)
    for batch in (1, 3):  # the broadcast batch axis still follows the input
        w = (rng.randn(batch, 512) * 0.5).astype(np.float32)
        c = np.tile(camera.pose(15.0, -5.0).reshape(1, 25).astype(np.float32), (batch, 1))
        image = session.run(["image"], {"w": w, "c": c})[0]
        with torch.no_grad():
            ref = student(torch.from_numpy(w), torch.from_numpy(c)).image.numpy()
        assert image.shape == ref.shape
        assert np.abs(image - ref).max() <= 1e-4
