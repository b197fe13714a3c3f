"""PyTorch student -> two ONNX files with a dynamic batch, self-describing metadata.

    mapping.onnx  (z, c_cond, psi) -> w            EG3D's mapping network with truncation
    student.onnx  (w, c) -> image, image_raw       pose mapping, synthesis, super-resolution

The names, shapes and meanings are nerfgan.runtime.spec's. Export uses torch's TorchScript-based
exporter (``dynamo=False``): it keeps the graph to standard ops at a pinned opset (17 by default,
read by TensorRT 10 and 11 and every ONNX Runtime of the last years), names nodes after the module
path (``/g/synthesis/b64/conv1/...``), which the FP16 block list and INT8 exclusions match on,
and writes one file (no external data below 2 GB).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

import nerfgan
from nerfgan.runtime import spec as S
from nerfgan.student.generator import StudentGenerator


class MappingGraph(nn.Module):
    """What mapping.onnx computes: (z (B, z_dim), c_cond (B, 25), psi (B,)) -> w (B, w_dim)."""

    def __init__(self, student: StudentGenerator) -> None:
        super().__init__()
        self.g = student.teacher_mapping

    def forward(self, z: torch.Tensor, c_cond: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        return self.g(z, c_cond, psi)


class StudentGraph(nn.Module):
    """What student.onnx computes: (w (B, w_dim), c (B, 25)) -> image (B, 3, H, W), image_raw (B, 3, R, R)."""

    def __init__(self, student: StudentGenerator) -> None:
        super().__init__()
        self.g = student

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.g(w, c)
        return out.image, out.image_raw


def specs_for(student: StudentGenerator) -> dict[str, S.ModelSpec]:
    cfg = student.config
    return {"mapping": S.mapping_spec(cfg.teacher.z_dim, cfg.teacher.w_dim),
            "student": S.student_spec(cfg.teacher.w_dim, cfg.resolution, cfg.img_resolution)}


def graph_for(student: StudentGenerator, kind: str) -> nn.Module:
    return MappingGraph(student) if kind == "mapping" else StudentGraph(student)


def example_inputs(spec: S.ModelSpec, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible inputs for tracing: normal latents, frontal-ish cameras, psi 0.7."""
    from nerfgan import camera

    g = torch.Generator().manual_seed(seed)
    feeds: dict[str, torch.Tensor] = {}
    for t in spec.inputs:
        if t.name in ("c", "c_cond"):
            feeds[t.name] = torch.from_numpy(camera.frontal()).float().expand(batch, -1).contiguous()
        elif t.name == "psi":
            feeds[t.name] = torch.full((batch,), 0.7)
        else:
            feeds[t.name] = torch.randn(*t.concrete(batch), generator=g)
    return feeds


def export_onnx(student: StudentGenerator, kind: str, path: str | os.PathLike[str], opset: int = 17) -> Path:
    """Trace ``kind`` ('mapping' or 'student') of the eval-mode ``student`` to ``path`` (no metadata yet), then
    simplify the graph (:func:`simplify`)."""
    spec = specs_for(student)[kind]
    module = graph_for(student, kind).eval()
    feeds = example_inputs(spec, batch=2)
    axes = {t.name: {0: "batch"} for t in spec.inputs + spec.outputs}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about the Python ints that fix channel counts and about the legacy exporter itself.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(feeds[n] for n in spec.input_names), str(path), dynamo=False,
                          opset_version=opset, input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=axes, do_constant_folding=True)
    simplify(path)
    return Path(path)


def simplify(path: str | os.PathLike[str]) -> None:
    """Constant folding and shape simplification with onnxslim, in place.

    The tracer leaves the shape arithmetic of every reshape and repeat in the graph (Shape, Gather, Unsqueeze,
    Concat chains) and symbolic output heights and widths. onnxslim folds them: the tiny student's graph goes
    from 1,516 nodes to 366 with the same outputs bit for bit, the image sizes become static, and ONNX Runtime
    starts its session about a third faster. Only the batch axis stays dynamic.
    """
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    onnx.save(model, str(path))


def artifact_metadata(student: StudentGenerator, kind: str, precision: str, checkpoint_sha256: str,
                      batch: tuple[int, int, int], teacher_digest: str | None = None) -> dict[str, str]:
    """The metadata_props every exported file carries (keys in nerfgan.runtime.spec); ``teacher_digest``: the
    student checkpoint's record of its teacher (nerfgan.teacher.identity), left out when it has none."""
    r = student.config.teacher.rendering
    from nerfgan import camera

    return {
        S.META_FORMAT: S.FORMAT,
        S.META_KIND: kind,
        S.META_PRECISION: precision,
        S.META_VERSION: nerfgan.__version__,
        S.META_CONFIG: student.config.to_json(),
        S.META_CAMERA: json.dumps({"radius": r.avg_camera_radius, "pivot": list(r.avg_camera_pivot),
                                   "focal": camera.DEFAULT_FOCAL, "convention": "nerfgan.camera (OpenCV cam2world + "
                                   "normalised intrinsics, 25 values)"}),
        S.META_CHECKPOINT: checkpoint_sha256,
        S.META_IO: specs_for(student)[kind].to_json(),
        S.META_BATCH: json.dumps(list(batch)),
        **({S.META_TEACHER: teacher_digest} if teacher_digest else {}),
    }


def write_metadata(path: str | os.PathLike[str], metadata: dict[str, str], out: str | os.PathLike[str] | None = None) -> Path:
    """Set ``metadata`` as the ONNX file's metadata_props (replacing keys already there); also doc_string."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in metadata.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name, model.producer_version = "nerfgan", nerfgan.__version__
    kind = metadata.get(S.META_KIND, "")
    model.doc_string = f"nerfgan {kind} ({metadata.get(S.META_PRECISION, '')}): see the nerfgan.* metadata_props"
    onnx.save(model, str(out or path))
    return Path(out or path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
