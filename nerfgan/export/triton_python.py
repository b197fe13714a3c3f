"""The model.py of a composing model served by Triton's Python backend (``--triton-backend python``).

Each composing model (the mapping, the student) gets this file beside its ``model.onnx`` in its version
folder. Triton's Python backend runs it in its own process; it loads ``model.onnx`` with
``nerfgan.runtime`` (ONNX Runtime), so the Python the backend stub runs must have nerfgan installed
(``pip install nerfgan``; on a CPU-only server ONNX Runtime's CPU provider is used).

Triton hands ``execute`` every request of one dynamic batch; they are joined along the batch axis, run
as one batch, and split back, so dynamic batching batches the ONNX Runtime call, not just the queue.
A ``(B,)`` tensor (psi) arrives as ``(B, 1)`` or ``(B,)`` depending on the config's reshape; it is put
back to the shape the model's spec names either way.
"""

from __future__ import annotations

MODEL_FILE = "model.py"  # name the Python backend looks for in the version folder

MODEL_PY = '''\
"""Triton Python-backend model written by nerfgan: runs model.onnx (beside this file) with nerfgan.runtime."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils

from nerfgan.errors import NerfganError
from nerfgan.runtime.backends import OnnxBackend


class TritonPythonModel:
    def initialize(self, args):
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                device = "cuda"
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.onnx")
        self.backend = OnnxBackend(path, device=device)
        self.spec = self.backend.spec

    def execute(self, requests):
        batches = []
        for request in requests:
            feeds = {}
            for t in self.spec.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, t.name)
                a = tensor.as_numpy()
                feeds[t.name] = a.reshape(t.concrete(a.shape[0]))  # (B, 1) -> (B,) for psi
            batches.append(feeds)
        sizes = [f[self.spec.inputs[0].name].shape[0] for f in batches]
        try:
            joined = {t.name: np.concatenate([f[t.name] for f in batches]) for t in self.spec.inputs}
            outs = self.backend.infer(joined)
        except NerfganError as e:
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))) for _ in requests]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(t.name, np.ascontiguousarray(outs[t.name][start:start + n]))
                       for t in self.spec.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self):
        self.backend.close()
'''
