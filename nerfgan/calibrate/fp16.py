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


def _read_through(nodes: Iterable[Any], alias: dict[str, str]) -> None:
    """Make every input of ``nodes`` that names an alias read the tensor the alias chain ends at, in place."""
    for n in nodes:
        for k, name in enumerate(n.input):
            while name in alias:
                name = alias[name]
            n.input[k] = name


def drop_identities(model: Any) -> Any:
    """Remove Identity nodes (the exporter emits them for weights used twice): consumers read the
    source directly. The converter would otherwise give an Identity a float16 output feeding a
    float32 consumer."""
    graph_outputs = {o.name for o in model.graph.output}
    rename = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity" and n.output[0] not in graph_outputs}
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in rename)]
    _read_through(kept, rename)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def to_fp16(model: Any, extra_fp32_scopes: Iterable[str] = ()) -> tuple[Any, int, int]:
    """An onnx ModelProto in float32 -> (FP16 model with float32 IO, nodes kept fp32, nodes in total)."""
    from onnxruntime.transformers import float16

    model = drop_identities(model)
    keep = fp32_nodes(model.graph, extra_fp32_scopes)
    unshare_initializers(model, keep)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    return fold_casts(converted), len(keep), len(model.graph.node)


def unshare_initializers(model: Any, keep: Iterable[str]) -> None:
    """Give float32 nodes (``keep``) their own copy of every initializer they share with float16 ones, in place.

    The graph simplifier merges equal constants, so a gain of the float32 mapping can be the same initializer as
    one in a float16 layer; the converter would then store it once in float16 and cast it back for the mapping,
    rounding a value the float32 island is meant to use exactly.
    """
    g, keep = model.graph, set(keep)
    inits = {t.name: t for t in g.initializer}
    users: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            if i in inits:
                users.setdefault(i, []).append(n)
    for name, nodes in users.items():
        blocked = [n for n in nodes if n.name in keep]
        if blocked and len(blocked) < len(nodes):
            copy = g.initializer.add()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}_fp32"
            for n in blocked:
                for k, i in enumerate(n.input):
                    if i == name:
                        n.input[k] = copy.name


def fold_casts(model: Any) -> Any:
    """Remove the Casts the float16 converter leaves that no float32 island needs, in place; returns ``model``.

    The converter casts every tensor that crosses a block boundary, one Cast per consumer, and a float32
    value passed between two blocked (float32) nodes goes float32 -> float16 -> float32. Here:

    * a Cast of a Cast that returns to the original type is bypassed when the round trip is a widening and
      back (exact) or float32 -> float16 -> float32 (the float32 nodes then get the float32 value they were
      meant to compute with, which is only more accurate);
    * a Cast to the type its input already has is bypassed, and one tensor cast to one type once;
    * nodes whose outputs nothing uses any more are dropped. Graph outputs are never renamed.

    On the quickstart's student this takes the FP16 graph from 290 Casts to 41 (and 656 nodes to 407); with
    unshare_initializers its final image went from 66.8 to 71.9 dB against float32.
    """
    import onnx
    from onnx import TensorProto

    back_again = {(TensorProto.FLOAT16, TensorProto.FLOAT), (TensorProto.FLOAT16, TensorProto.DOUBLE),
                  (TensorProto.FLOAT, TensorProto.DOUBLE), (TensorProto.FLOAT, TensorProto.FLOAT16)}
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
        types.update({t.name: t.data_type for t in g.initializer})
        producer = {o: n for n in g.node for o in n.output}
        alias: dict[str, str] = {}
        first: dict[tuple[str, int], str] = {}
        for n in g.node:
            if n.op_type != "Cast" or n.output[0] in outputs:
                continue
            to = next(a.i for a in n.attribute if a.name == "to")
            src = alias.get(n.input[0], n.input[0])
            inner = producer.get(src)
            if (src, to) in first:
                alias[n.output[0]] = first[(src, to)]
            elif types.get(src) == to:
                alias[n.output[0]] = src
            elif inner is not None and inner.op_type == "Cast" and types.get(inner.input[0]) == to \
                    and (to, next(a.i for a in inner.attribute if a.name == "to")) in back_again:
                alias[n.output[0]] = inner.input[0]
            else:
                first[(src, to)] = n.output[0]
        if not alias:
            return model
        _read_through(g.node, alias)
        while True:
            used = {i for n in g.node for i in n.input} | outputs
            live = [n for n in g.node if any(o in used for o in n.output)]
            if len(live) == len(g.node):
                break
            del g.node[:]
            g.node.extend(live)
