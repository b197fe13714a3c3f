"""nerfgan.runtime: exported students behind one small API. Importing it never imports torch.

    import nerfgan.runtime as nr
    with nr.load("export/") as g:
        images = g.render(seeds=[0, 1], yaw=20, pitch=-5)    # (2, H, W, 3) uint8

:func:`load` takes an export folder (manifest.json; ``precision`` picks the student file), a
student ONNX file (mapping.onnx beside it is used for seeds), a TensorRT plan (student.plan with
its sidecar; mapping.plan or mapping.onnx beside it), or a student checkpoint (.safetensors, run
by PyTorch). ONNX files run in ONNX Runtime unless ``backend="openvino"`` asks for OpenVINO's CPU
plugin (nerfgan.runtime.openvino_backend; never chosen silently). ``backend="pt2"`` runs an export's
AOTInductor package (student.pt2 from ``nerfgan-export --aoti``; a .pt2 path given directly runs it too)
in PyTorch, with mapping.onnx in ONNX Runtime on the CPU for seeds (nerfgan.runtime.pt2_backend). See
nerfgan.runtime.generator for the contract and nerfgan.runtime.backends for the backends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nerfgan.errors import InputFileError, NerfganError, UsageError
from nerfgan.io import folder_lock
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend, OnnxBackend, TorchBackend
from nerfgan.runtime.generator import Generator

__all__ = ["Backend", "Generator", "Runtime", "load", "open_backend"]

DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("onnxruntime", "openvino", "pt2")  # what runs the student (load's ``backend``)


@dataclass(frozen=True)
class Runtime:
    """Which runtime runs ONNX files: 'onnxruntime' (the default) or 'openvino' (CPU), or 'pt2' (the student's
    AOTInductor package; its mapping runs in ONNX Runtime), and OpenVINO's inference precision for the student
    ('fp32', or 'bf16' behind its gate); a mapping always runs fp32."""

    backend: str = "onnxruntime"
    openvino_precision: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in RUNTIMES:
            raise UsageError(f"--backend: choose one of {', '.join(RUNTIMES)}, got {self.backend!r}")
        if self.openvino_precision is not None and self.backend != "openvino":
            raise UsageError("openvino_precision works with backend='openvino' only")
        if self.openvino_precision not in (None, "fp32", "bf16"):
            raise UsageError(f"openvino_precision: choose fp32 or bf16, got {self.openvino_precision!r}")

    def for_kind(self, kind: str) -> "Runtime":
        if kind == "student":
            return self
        return ONNXRUNTIME if self.backend == "pt2" else Runtime(self.backend)

    def mapping_device(self, device: str) -> str:
        """Where the mapping runs: beside a pt2 student, on the CPU (ONNX Runtime; one small MLP per seed)."""
        return "cpu" if self.backend == "pt2" else device


ONNXRUNTIME = Runtime()


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
                 precision: str = "fp32", threads: int | None = None, artifact: S.Artifact | None = None,
                 manifest: Path | None = None, runtime: Runtime = ONNXRUNTIME) -> Backend:
    """One model file as a Backend: .onnx (ONNX Runtime, or OpenVINO when ``runtime`` says so), .plan (TensorRT),
    .safetensors (PyTorch, ``kind`` part).

    ``artifact``: the file's manifest entry (``manifest`` is that manifest's path); its size and sha256 are checked
    before the file is used.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".pt2" or runtime.backend == "pt2":
        if suffix != ".pt2":
            raise UsageError(f"{p}: --backend pt2 runs AOTInductor packages (.pt2, from nerfgan-export --aoti), "
                             f"not {suffix or 'this file'}")
        if threads is not None:
            raise UsageError("--threads sets ONNX Runtime's or OpenVINO's threads; a .pt2 package runs on torch's "
                             "(set OMP_NUM_THREADS)")
        from nerfgan.runtime.pt2_backend import Pt2Backend

        return Pt2Backend(p, device=device, artifact=artifact, manifest=manifest)
    if runtime.backend == "openvino":
        if suffix != ".onnx":
            raise UsageError(f"{p}: --backend openvino runs ONNX files (.onnx), not {suffix or 'this file'}")
        if device != "cpu":
            raise UsageError(f"--backend openvino runs on the CPU: --device {device} is not available with it")
        from nerfgan.runtime.openvino_backend import OpenVinoBackend, OpenVinoSettings

        settings = OpenVinoSettings(inference_precision=runtime.openvino_precision or "fp32", threads=threads)
        return OpenVinoBackend(p, settings, artifact=artifact, manifest=manifest)
    if suffix == ".onnx":
        return OnnxBackend(p, device=device, threads=threads, artifact=artifact, manifest=manifest)
    if suffix in (".plan", ".engine"):
        from nerfgan.runtime.tensorrt_backend import TensorRTBackend

        if artifact is not None:
            S.verify_file(p, artifact, manifest)
        if os.path.lexists(f"{p}.json"):  # a missing one is TensorRTBackend's to report
            S.contained(p.parent, Path(f"{p}.json"), "plan sidecar")
        return TensorRTBackend(p)
    if suffix == ".safetensors":
        return TorchBackend(p, kind, device="cuda" if device == "cuda" else "cpu", precision=precision)
    raise InputFileError(f"{p}: unknown model file type (expected an export folder, .onnx, .plan, .pt2 or "
                         ".safetensors)")


def load(path: str | os.PathLike[str], precision: str | None = None, device: str = "auto",
         threads: int | None = None, backend: str | None = None, openvino_precision: str | None = None) -> Generator:
    """A Generator for ``path`` (see the module docstring). ``threads``: ONNX Runtime intra-op threads (OpenVINO's
    INFERENCE_NUM_THREADS).

    ``backend``: what runs ONNX files: None or 'onnxruntime' (the default), or 'openvino' (OpenVINO's CPU plugin,
    the ``[openvino]`` extra; CPU only, so device 'auto' means 'cpu'; an export folder's ONNX files, never a
    TensorRT plan or a .safetensors). ``openvino_precision``: the student's inference precision under OpenVINO,
    'fp32' (the default, set explicitly: OpenVINO would pick bf16 on a CPU with bfloat16) or 'bf16' (refused when
    its image outputs are below BF16_MIN_PSNR, 30 dB, from ONNX Runtime's on a probe batch; see
    nerfgan.runtime.openvino_backend). Or 'pt2': the export's AOTInductor package (student.pt2, ``nerfgan-export
    --aoti``) run by PyTorch on the device it was compiled for (device 'auto' means that one; another is refused), its
    mapping.onnx by ONNX Runtime on the CPU; a .pt2 file given directly always runs this way. ``threads`` does not
    apply to a package (torch's threads: OMP_NUM_THREADS) and is refused with it.

    What is checked before a file is used (InputFileError naming the file, one line):

    * an export folder: manifest.json is well-formed; the files it lists are plain names whose real location is in
      the folder; each file used has the size and sha256 the manifest records and carries the manifest's checkpoint
      sha256 in its metadata (so a folder mixing two exports is refused). The folder is read under its shared lock,
      so an export being installed into it (which holds the lock exclusively) is seen whole or not at all.
    * a single file with a manifest.json beside it: the file is listed there with the same sha256 (an unlisted file
      is a leftover of an earlier export); a mapping beside it is used only when listed and from the same
      checkpoint. Without a manifest, a mapping beside it is used only when from the same checkpoint.
    * every ONNX file: its external data locations stay inside its folder (nerfgan.runtime.backends).

    The cost, per file used: one read and one sha256 (0.10-0.17 s for a 200 MB file, see spec.read_checked) and, for
    ONNX, one protobuf parse to find external data (0.12 s for 200 MB), before ONNX Runtime's own load.
    """
    p = Path(path)
    if backend is None and p.suffix.lower() == ".pt2":
        backend = "pt2"  # the file says what runs it
    via = Runtime(backend or "onnxruntime", openvino_precision)
    if via.backend == "pt2" and threads is not None:
        raise UsageError("--threads sets ONNX Runtime's or OpenVINO's threads; a .pt2 package runs on torch's "
                         "(set OMP_NUM_THREADS)")
    # OpenVINO runs on the CPU: 'auto' is the CPU (open_backend refuses 'cuda' with it); a .pt2 package runs where it
    # was compiled: 'auto' is resolved from its sidecar
    if via.backend == "pt2":
        dev = device if device in DEVICES else _resolve_device(device)  # (an unknown name: UsageError)
    else:
        dev = "cpu" if via.backend == "openvino" and device == "auto" else _resolve_device(device)
    if p.is_dir():
        with folder_lock(p, shared=True, what="export folder"):
            return _load_export_dir(p, precision, dev, threads, via)
    if not p.is_file():
        what = "not a regular file" if p.exists() else "not found"
        raise InputFileError(f"{p}: {what} (expected an export folder, .onnx, .plan, .pt2 or student .safetensors)")
    if via.backend == "pt2" and p.suffix.lower() != ".pt2":
        raise UsageError(f"{p}: --backend pt2 runs AOTInductor packages (an export folder with student.pt2, or a "
                         ".pt2 file)")
    if via.backend == "openvino" and p.suffix.lower() != ".onnx":
        raise UsageError(f"{p}: --backend {via.backend} runs ONNX files (an export folder or a .onnx file)")
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
    if p.suffix.lower() not in (".onnx", ".plan", ".engine", ".pt2"):
        raise InputFileError(f"{p}: unknown model file type (expected an export folder, .onnx, .plan, .pt2 or "
                             ".safetensors)")
    if (p.parent / S.MANIFEST).exists():
        with folder_lock(p.parent, shared=True, what="export folder"):
            return _load_listed_file(p, dev, threads, via)
    return _load_file(p, dev, threads, via)


def _mapping_names(p: Path) -> tuple[str, ...]:
    return ("mapping.plan", "mapping.onnx") if p.suffix.lower() in (".plan", ".engine") else ("mapping.onnx",)


def _load_file(p: Path, device: str, threads: int | None, via: Runtime = ONNXRUNTIME) -> Generator:
    """A model file with no manifest beside it; a mapping beside it only when it comes from the same checkpoint."""
    student = open_backend(p, "student", device, threads=threads, runtime=via)
    try:
        for name in _mapping_names(p):
            if (p.parent / name).is_file():
                mapping = open_backend(p.parent / name, "mapping", via.mapping_device(device), threads=threads,
                                       runtime=via.for_kind("mapping"))
                ours, theirs = _checkpoint(student), _checkpoint(mapping)
                if ours and ours == theirs:
                    return Generator(student, mapping)
                mapping.close()
                return Generator(student, None, no_mapping=f"{name} beside it was exported from another checkpoint "
                                 f"({theirs[:12] or 'unrecorded'}, the student's is {ours[:12] or 'unrecorded'})")
        return Generator(student, None)
    except BaseException:
        student.close()
        raise


def _load_listed_file(p: Path, device: str, threads: int | None, via: Runtime = ONNXRUNTIME) -> Generator:
    """A model file with manifest.json beside it: it must be listed there (the folder lock is held)."""
    manifest = S.read_export(p.parent)
    art = manifest.find(p.name)
    if art is None:
        raise InputFileError(f"{p}: not listed in {manifest.path}: a leftover of an earlier export; use the "
                             f"folder {p.parent} or a file it lists")
    student = _open_listed(manifest, art, "student", device, threads, via)
    try:
        for name in _mapping_names(p):
            listed = manifest.find(name)
            if listed is not None and listed.kind == "mapping":
                return Generator(student, _open_listed(manifest, listed, "mapping", device, threads, via))
        note = next((f"{n} beside it is not listed in {S.MANIFEST} (a leftover of an earlier export)"
                     for n in _mapping_names(p) if (p.parent / n).exists()), None)
        return Generator(student, None, no_mapping=note)
    except BaseException:
        student.close()
        raise


def _load_export_dir(d: Path, precision: str | None, device: str, threads: int | None,
                     via: Runtime = ONNXRUNTIME) -> Generator:
    """An export folder (the caller holds its shared lock)."""
    manifest = S.read_export(d)
    arts = manifest.artifacts
    fmt = "tensorrt" if device == "cuda" and via.backend == "onnxruntime" and any(a.format == "tensorrt" for a in arts) \
        else "pt2" if via.backend == "pt2" else "onnx"
    prec = precision or "fp32"
    student = next((a for a in arts if a.kind == "student" and a.precision == prec and a.format == fmt), None)
    if student is None:
        have = sorted({f"{a.precision} ({a.format})" for a in arts if a.kind == "student"})
        hint = " (export it with nerfgan-export --aoti)" if fmt == "pt2" else ""
        raise UsageError(f"{d}: no {prec} {fmt} student in this export (it has: {', '.join(have) or 'none'}){hint}")
    mapping = next((a for a in arts if a.kind == "mapping" and a.format == fmt), None) \
        or next((a for a in arts if a.kind == "mapping" and a.format in
                 (("onnx",) if via.backend in ("openvino", "pt2") else ("onnx", "tensorrt"))), None)
    s = _open_listed(manifest, student, "student", device, threads, via)
    m = None
    try:
        m = _open_listed(manifest, mapping, "mapping", device, threads, via) if mapping else None
        return Generator(s, m)
    except BaseException:
        for b in (s, m):
            if b is not None:
                b.close()
        raise


def _open_listed(manifest: S.Manifest, art: S.Artifact, kind: str, device: str, threads: int | None,
                 via: Runtime = ONNXRUNTIME) -> Backend:
    """A file the manifest lists, checked: contained in the folder, size and sha256, kind and checkpoint."""
    path = S.artifact_path(manifest, art)
    b = open_backend(path, kind, device if kind == "student" else via.mapping_device(device), threads=threads,
                     artifact=art, manifest=manifest.path, runtime=via.for_kind(kind))
    try:
        if b.spec.kind != art.kind:
            raise InputFileError(f"{path}: is a {b.spec.kind} model, but {manifest.path} lists it as a {art.kind}")
        got = _checkpoint(b)
        if got != manifest.checkpoint_sha256:
            raise InputFileError(f"{path}: exported from checkpoint {got[:12] or '(unrecorded)'}, but {manifest.path} "
                                 f"is for checkpoint {manifest.checkpoint_sha256[:12]}: the folder mixes two exports; "
                                 "export again")
    except NerfganError:
        b.close()
        raise
    return b


def _checkpoint(b: Backend) -> str:
    """The checkpoint sha256 a backend's file records ('' when none)."""
    v = b.metadata.get(S.META_CHECKPOINT, "")
    return v if isinstance(v, str) else ""
