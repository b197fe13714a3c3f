"""PyTorch student -> an AOTInductor package (``--aoti``): a TensorRT-free compiled artifact for the CPU or a GPU.

    OUT_DIR/student.pt2        (w (B, w_dim), c (B, 25)) -> image (B, 3, H, W), image_raw (B, 3, R, R)   float32
    OUT_DIR/student.pt2.json   its sidecar (nerfgan.runtime.pt2_backend.Pt2Sidecar): device, torch version,
                               target ISA or compute capability, batch, package sha256, the nerfgan.* metadata

``torch.export.export`` of the student's forward(w, c) with the batch axis dynamic in [1, max(2, batch max)],
then ``torch._inductor.aoti_compile_and_package`` on ``device``: one shared library with the weights inside, loaded
by ``torch._inductor.aoti_load_package`` (the runtime's Pt2Backend) without nerfgan's model code. The nerfgan.*
metadata (as in an ONNX file's metadata_props) is compiled into the package (``aot_inductor.metadata``) and
written to the sidecar; the runtime compares the two.

The mapping (z, c_cond, psi) -> w is not compiled: it runs once per seed, a few microseconds, and the runtime
runs the export's mapping.onnx for it in ONNX Runtime on the CPU.

Compile time is the C++ compiler's: the tiny student (128 px) takes about 35 s of CPU time, a minute of wall time
on a busy 2-core machine; larger students take longer. A package is tied to the torch version, and a CPU package
to the vector instructions (AVX2, AVX512) of the machine that compiled it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import nerfgan
from nerfgan.errors import UsageError
from nerfgan.io import atomic_path, file_sha256
from nerfgan.runtime.pt2_backend import DEVICES, Pt2Sidecar, sidecar_path

if TYPE_CHECKING:
    from nerfgan.student.generator import StudentGenerator


def check_device(device: str) -> None:
    """Refuse, before any work, a device the package cannot be compiled for here."""
    if device not in DEVICES:
        raise UsageError(f"--device: --aoti compiles for cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to compile the --aoti package on (a CUDA "
                         "package is compiled on the GPU it runs on); use --device cpu")


def compile_package(student: StudentGenerator, kind: str, path: str | os.PathLike[str], batch: tuple[int, int, int],
                    device: str, metadata: dict[str, str]) -> Pt2Sidecar:
    """Compile ``kind`` of ``student`` into the package ``path`` and write its sidecar beside it; returns the sidecar.

    ``batch``: the export's (min, opt, max); the package takes batches 1 to max (the runtime splits larger ones).
    ``metadata``: the nerfgan.* metadata (nerfgan.export.to_onnx.artifact_metadata), compiled in and in the sidecar.
    """
    from nerfgan.export.to_onnx import example_inputs, graph_for, specs_for

    check_device(device)
    spec = specs_for(student)[kind]
    module = graph_for(student, kind).to(device).eval()
    feeds = example_inputs(spec, batch=2)  # 2, not 1: torch.export specialises a size-1 axis
    args = tuple(feeds[n].to(device) for n in spec.input_names)
    dim = torch.export.Dim("batch", min=1, max=max(2, batch[2]))
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's and inductor's notes on deprecated internals
        program = torch.export.export(module, args, dynamic_shapes={n: {0: dim} for n in spec.input_names})
        with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=Path(path).parent,
                                                                    prefix=".nerfgan-aoti-") as scratch:
            package = Path(scratch) / Path(path).name  # the package's inner folder is named after its file's stem
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(package), inductor_configs={"aot_inductor.metadata": dict(metadata)})
            os.replace(package, tmp)
    seconds = time.perf_counter() - start
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        target = f"{major}.{minor}"
    else:
        from torch._inductor import cpu_vec_isa

        target = str(cpu_vec_isa.pick_vec_isa()).upper()
    sidecar = Pt2Sidecar(package_sha256=file_sha256(path), device=device, torch_version=torch.__version__,
                         target=target, batch=batch, kind=kind, precision=metadata.get("nerfgan.precision", "fp32"),
                         nerfgan_version=nerfgan.__version__, created=datetime.now(timezone.utc).isoformat(),
                         compile_seconds=round(seconds, 2), metadata=dict(metadata))
    with atomic_path(sidecar_path(path)) as tmp:
        Path(tmp).write_text(sidecar.to_json(), encoding="utf-8")
    json.loads(sidecar.to_json())  # (a sidecar that does not round-trip is a bug here, not the reader's to find)
    return sidecar
