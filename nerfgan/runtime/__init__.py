"""nerfgan.runtime: exported students behind one small API. Importing it never imports torch.

    import nerfgan.runtime as nr
    with nr.load("export/") as g:
        images = g.render(seeds=[0, 1], yaw=20, pitch=-5)    # (2, H, W, 3) uint8

:func:`load` takes an export folder (manifest.json; ``precision`` picks the student file), a
student ONNX file (mapping.onnx beside it is used for seeds), a TensorRT plan (student.plan with
its sidecar; mapping.plan or mapping.onnx beside it), or a student checkpoint (.safetensors, run
by PyTorch). See nerfgan.runtime.generator for the contract and nerfgan.runtime.backends for the
backends.
"""

from __future__ import annotations

import os
from pathlib import Path

from nerfgan.errors import InputFileError, UsageError
from nerfgan.runtime.backends import Backend, OnnxBackend, TorchBackend
from nerfgan.runtime.generator import Generator
from nerfgan.runtime.spec import read_manifest

__all__ = ["Backend", "Generator", "load", "open_backend"]

DEVICES = ("auto", "cpu", "cuda")


def _resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise UsageError(f"--device: choose one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    try:
        import onnxruntime as ort

        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    except ImportError:
        return "cpu"


def open_backend(path: str | os.PathLike[str], kind: str = "student", device: str = "cpu",
                 precision: str = "fp32", threads: int | None = None) -> Backend:
    """One model file as a Backend: .onnx (ONNX Runtime), .plan (TensorRT), .safetensors (PyTorch, ``kind`` part)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return OnnxBackend(p, device=device, threads=threads)
    if suffix in (".plan", ".engine"):
        from nerfgan.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(p)
    if suffix == ".safetensors":
        return TorchBackend(p, kind, device="cuda" if device == "cuda" else "cpu", precision=precision)
    raise InputFileError(f"{p}: unknown model file type (expected an export folder, .onnx, .plan or .safetensors)")


def load(path: str | os.PathLike[str], precision: str | None = None, device: str = "auto",
         threads: int | None = None) -> Generator:
    """A Generator for ``path`` (see the module docstring). ``threads``: ONNX Runtime intra-op threads."""
    p = Path(path)
    dev = _resolve_device(device)
    if p.is_dir():
        return _load_export_dir(p, precision, dev, threads)
    if not p.is_file():
        raise InputFileError(f"{p}: not found (expected an export folder, .onnx, .plan or student .safetensors)")
    if p.suffix.lower() == ".safetensors":
        import torch

        from nerfgan.student.checkpoint import load_student

        torch_dev = "cuda" if dev == "cuda" and torch.cuda.is_available() else "cpu"
        model = load_student(p, device=torch_dev)
        prec = precision or "fp32"
        return Generator(TorchBackend(p, "student", torch_dev, prec, model=model),
                         TorchBackend(p, "mapping", torch_dev, "fp32", model=model))
    if precision is not None:
        raise UsageError("--precision picks a file inside an export folder; a file path already names one")
    student = open_backend(p, "student", dev, threads=threads)
    mapping = None
    for name in ("mapping.plan", "mapping.onnx") if p.suffix.lower() in (".plan", ".engine") else ("mapping.onnx",):
        if (p.parent / name).is_file():
            mapping = open_backend(p.parent / name, "mapping", dev, threads=threads)
            break
    return Generator(student, mapping)


def _load_export_dir(d: Path, precision: str | None, device: str, threads: int | None) -> Generator:
    manifest = read_manifest(d)
    arts = [a for a in manifest.get("artifacts", []) if isinstance(a, dict)]
    fmt = "tensorrt" if device == "cuda" and any(a.get("format") == "tensorrt" for a in arts) else "onnx"
    prec = precision or "fp32"
    student = next((a for a in arts if a.get("kind") == "student" and a.get("precision") == prec
                    and a.get("format") == fmt), None)
    if student is None:
        have = sorted({f"{a.get('precision')} ({a.get('format')})" for a in arts if a.get("kind") == "student"})
        raise UsageError(f"{d}: no {prec} {fmt} student in this export (it has: {', '.join(have)})")
    mapping = next((a for a in arts if a.get("kind") == "mapping" and a.get("format") == fmt), None) \
        or next((a for a in arts if a.get("kind") == "mapping"), None)
    s = open_backend(d / student["file"], "student", device, threads=threads)
    m = open_backend(d / mapping["file"], "mapping", device, threads=threads) if mapping else None
    return Generator(s, m)
