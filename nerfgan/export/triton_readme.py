"""README.md of a Triton model repository written by nerfgan.export.triton: the models, the tensors as
clients send them, how to serve each backend's repository, and a client example that runs as written."""

from __future__ import annotations

from nerfgan.export.triton import BACKENDS, VERSION, TritonNames, link_tensor, mapping_backend, triton_dims
from nerfgan.export.triton_python import MODEL_FILE
from nerfgan.runtime.spec import BATCH, ModelSpec, TensorSpec

# client-example values for the tensors of the default specs (others are sent as zeros); {shape} = (1, *dims)
_EXAMPLE_FEEDS = {
    "z": "np.random.default_rng(0).standard_normal({shape}).astype(np.float32)",
    "c_cond": "camera.frontal()[None]",
    "psi": "np.full({shape}, 0.7, np.float32)",
    "c": "camera.pose(yaw_deg=20.0)[None]",
}

_SERVE = {
    "onnxruntime": """Any Triton with the ONNX Runtime backend serves it, for example NVIDIA's container (NGC
`nvcr.io/nvidia/tritonserver:<yy.mm>-py3`; add `--gpus all` for KIND_GPU/KIND_AUTO on a GPU):

```sh
docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
```""",
    "tensorrt": """The student is a TensorRT plan: serve it on the GPU model it was built for, in a Triton whose
TensorRT version is the one that built the plan (plans are not portable across TensorRT versions or
GPU compute capabilities; pick the NGC `nvcr.io/nvidia/tritonserver:<yy.mm>-py3` release whose support
matrix lists that TensorRT version). The mapping runs in the ONNX Runtime backend of the same container.

```sh
docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\
    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
```""",
    "python": """Both models run in Triton's Python backend (`model.py` beside each `model.onnx`), which
runs them with `nerfgan.runtime` on ONNX Runtime: any Triton with the Python backend serves it,
CPU-only ones included (the NGC container, or the `tritonserver` inside the `nvidia-pytriton` wheel).
The Python the backend stub embeds must import nerfgan: install it there (`pip install nerfgan`) and
put that environment's `bin` first on `PATH` when starting the server. The Python backend of Triton
2.51 (the one in `nvidia-pytriton` 0.7) needs numpy < 2 in that environment: under numpy 2 it was seen
answering with empty output tensors.

```sh
tritonserver --model-repository=/path/to/this/directory
```""",
}


def repository_readme(names: TritonNames, mapping_spec: ModelSpec, student_spec: ModelSpec, student_backend: str,
                      max_batch_size: int) -> str:
    """README.md of the repository: the models, their tensors, and how to serve and call the ensemble.

    Shapes are given as clients send them: (B, *dims) of the ensemble's config, so psi is (B, 1).
    """
    wire = link_tensor(mapping_spec, student_spec)
    inputs = list(mapping_spec.inputs) + [t for t in student_spec.inputs if t.name != wire]
    tensors = [f"- input `{t.name}` {_wire_shape(t)} {t.dtype}: {t.doc}" for t in inputs]
    tensors += [f"- output `{t.name}` {_wire_shape(t)} {t.dtype}: {t.doc}" for t in student_spec.outputs]
    feeds = []
    for t in inputs:
        shape = (1, *triton_dims(t, names.ensemble)[0])
        value = _EXAMPLE_FEEDS.get(t.name, "np.zeros({shape}, np.{dtype})").format(shape=shape, dtype=t.dtype)
        feeds.append(f"    {t.name!r}: {value},")
    (mapping_line, _), (student_line, file_name) = BACKENDS[mapping_backend(student_backend)], BACKENDS[student_backend]
    extra = f" + `{MODEL_FILE}`" if student_backend == "python" else ""
    return f"""# nerfgan Triton model repository

| model | runs in | file |
|---|---|---|
| `{names.mapping}` | `{mapping_line}` | `{names.mapping}/{VERSION}/model.onnx`{extra} |
| `{names.student}` | `{student_line}` | `{names.student}/{VERSION}/{file_name}`{extra} |
| `{names.ensemble}` | ensemble | `{names.mapping}` -> `{names.student}`; `{wire}` stays on the server |

Clients call `{names.ensemble}` with a batch of B <= {max_batch_size} (shapes as sent; a per-sample
scalar such as `psi` is sent as (B, 1)):

{chr(10).join(tensors)}

## Serving

{_SERVE[student_backend]}

## Calling

```python
import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from nerfgan import camera

feeds = {{  # one sample: its latent, conditioning camera, truncation psi and render camera
{chr(10).join(feeds)}
}}
inputs = [httpclient.InferInput(k, list(v.shape), np_to_triton_dtype(v.dtype)) for k, v in feeds.items()]
for i, v in zip(inputs, feeds.values()):
    i.set_data_from_numpy(v)
client = httpclient.InferenceServerClient("localhost:8000")
result = client.infer("{names.ensemble}", inputs)
image = result.as_numpy("{student_spec.outputs[0].name}")
```
"""


def _wire_shape(tensor: TensorSpec) -> str:
    """The shape a client sends: (B, *dims) as the ensemble config declares it."""
    dims, _ = triton_dims(tensor, "README")
    return "(" + ", ".join([BATCH, *(str(d) for d in dims)]) + ")"
