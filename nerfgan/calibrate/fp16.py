"""FP16 ONNX: the student's convolutions in float16, its numerically sensitive parts kept in float32.

TensorRT 11 has no FP16 builder flag: precision lives in the graph, and the engine is built strongly
typed. We convert with ONNX Runtime's float16 converter (onnxruntime.transformers.float16: float32
inputs and outputs kept, Casts inserted at the boundaries; onnxconverter-common's older copy of it
mistypes the exporter's Cast nodes) and block, by node, what StyleGAN2's own mixed precision keeps in float32:

* the pose-conditioned mapping network (every node under ``/mapping/``), including the
  normalisation of the camera embedding;
* the weight demodulation of every modulated convolution: the style affine, weight * style, its
  square, the sum over (I, K, K), + 1e-8, sqrt and reciprocal (found from each ReduceSum: its
  ancestors inside the layer and the scalar ops after it), so only the final (B, O) coefficients are
  cast to float16;
* the converter's default block list (Resize, Range, Min/Max, ...).

The synthesis activations are clamped to +-256 (conv_clamp) as in StyleGAN2's FP16 layers, which
keeps them far inside float16's range. The mapping file stays float32 altogether.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FP32_SCOPES = ("/mapping/", "/teacher_mapping/")  # node-name fragments kept in float32 entirely
_AFTER_SUM = {"Add", "Sqrt", "Div", "Reciprocal", "Reshape", "Unsqueeze", "Pow", "Constant"}


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0] + "/" if "/" in name else ""


def demodulation_nodes(graph: Any) -> set[str]:
    """Names of the nodes that compute demodulation coefficients (see the module docstring)."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keep: set[str] = set()
    for n in graph.node:
        if n.op_type != "ReduceSum":
            continue
        scope = _scope(n.name)
        stack = [n]
        while stack:  # ancestors inside the layer: weight * style, square, the style affine
            m = stack.pop()
            if m.name in keep:
                continue
            keep.add(m.name)
            stack.extend(producer[i] for i in m.input if i in producer and producer[i].name.startswith(scope))
        frontier = list(n.output)
        while frontier:  # + eps, sqrt, reciprocal, reshape to (B, O, 1, 1)
            t = frontier.pop()
            for m in consumers.get(t, []):
                if m.op_type in _AFTER_SUM and m.name.startswith(scope) and m.name not in keep:
                    keep.add(m.name)
                    frontier.extend(m.output)
    return keep


def fp32_nodes(graph: Any, extra_scopes: Iterable[str] = ()) -> list[str]:
    scopes = tuple(FP32_SCOPES) + tuple(extra_scopes)
    names = {n.name for n in graph.node if any(s in n.name for s in scopes)}
    return sorted(names | demodulation_nodes(graph))


def drop_identities(model: Any) -> Any:
    """Remove Identity nodes (the exporter emits them for weights used twice): consumers read the
    source directly. The converter would otherwise give an Identity a float16 output feeding a
    float32 consumer."""
    graph_outputs = {o.name for o in model.graph.output}
    rename = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.output[0] not in graph_outputs}
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in rename)]
    for n in kept:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def to_fp16(model: Any, extra_fp32_scopes: Iterable[str] = ()) -> tuple[Any, int, int]:
    """An onnx ModelProto in float32 -> (FP16 model with float32 IO, nodes kept fp32, nodes in total)."""
    from onnxruntime.transformers import float16

    model = drop_identities(model)
    keep = fp32_nodes(model.graph, extra_fp32_scopes)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    return converted, len(keep), len(model.graph.node)
