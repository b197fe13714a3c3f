"""Pt2Backend: an AOTInductor package (``student.pt2`` with its sidecar ``student.pt2.json``), run by PyTorch.

    with Pt2Backend("export/student.pt2") as b:
        out = b.infer({"w": w, "c": c})          # {"image": (B, 3, H, W), "image_raw": (B, 3, R, R)}

``nerfgan-export --aoti`` writes the package: torch._inductor's ahead-of-time compile of a ``torch.export`` of the
student, a zip holding one shared library with the weights inside, built for one device ('cpu' or 'cuda'), one
torch version and a batch axis dynamic in [1, max]. It needs torch (no TensorRT, no ONNX Runtime) and none of
nerfgan's model code: this module never imports nerfgan.student or nerfgan.export.

The contract is the base class's (nerfgan.runtime.backends): inputs checked against the spec, one lock serialising
calls, close(). Any batch is accepted: it is run in chunks of the package's max batch (the sidecar's ``batch[2]``).

Checked before the package is loaded (InputFileError naming the file, one line):

* the sidecar ``<package>.json`` is a regular file of at most SIDECAR_MAX_BYTES, well-formed, and records the
  sha256 of the package bytes read (a sidecar of another package is refused);
* with a manifest entry, the package's size and sha256 are the manifest's (S.read_checked);
* this torch has the version that compiled the package; a 'cpu' package's vector instructions (x86: AVX2,
  AVX512, ...) are ones this CPU has (its own flags: no compiler needed); a 'cuda' package needs a CUDA device with
  the compute capability it was compiled for (refused on a CPU-only machine); ``device`` asks for the package's
  own device or 'auto'.

The package is loaded from the very bytes checked (no second read by name). After loading, the metadata compiled
into it (``aot_inductor.metadata``) must equal the sidecar's nerfgan.* metadata. Loading a package runs its native
code, as loading a TensorRT plan does: use packages you exported, or ones a manifest you trust lists by sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import threading
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nerfgan.errors import InputFileError, MissingDependencyError, UsageError
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend, spec_from_metadata

SIDECAR_MAX_BYTES = S.SIDECAR_MAX_BYTES  # a sidecar is a few kB (the config JSON); a larger file is not read
PT2_MAX_BYTES = 8 << 30  # a package holds the weights: the 512 px student is a few hundred MB
DEVICES = ("cpu", "cuda")
PT2_FORMAT = "pt2"  # the manifest's ``format`` of a package


@dataclass(frozen=True)
class Pt2Sidecar:
    """What a package was compiled from and for; saved as JSON at :func:`sidecar_path` of the package."""

    package_sha256: str  # sha256 of the .pt2 file it describes
    device: str  # 'cpu' or 'cuda': where the package runs
    torch_version: str  # torch.__version__ that compiled it, e.g. '2.13.0+cpu'
    target: str  # 'cpu': inductor's vector ISA ('AVX512 AVX512_VNNI', '' for none); 'cuda': compute capability '9.0'
    batch: tuple[int, int, int]  # (min, opt, max) batch the export declared; the package's batch axis is [1, max]
    kind: str  # 'mapping' or 'student'
    precision: str  # 'fp32'
    nerfgan_version: str
    created: str  # ISO 8601 time of the compile, UTC
    compile_seconds: float  # wall time of torch.export + the AOTInductor compile
    metadata: dict[str, str] = field(default_factory=dict)  # the nerfgan.* metadata (as an ONNX file's metadata_props)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "package sidecar") -> Pt2Sidecar:
        """Parse and check a sidecar; InputFileError naming ``source`` and the field at fault."""
        from nerfgan.jsonfile import loads

        d: Any = loads(text, source, "package sidecar", 1 << 16)
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or sorted(d) != sorted(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputFileError(f"{source}: malformed package sidecar (expected the keys {names}, got {got})")
        strings = [n for n in names if n not in ("batch", "compile_seconds", "metadata")]
        bad = next((n for n in strings if not isinstance(d[n], str)), None)
        if bad:
            raise InputFileError(f"{source}: malformed package sidecar ({bad} must be a string)")
        batch = d["batch"]
        if not (isinstance(batch, list) and len(batch) == 3 and all(type(b) is int for b in batch)
                and 1 <= batch[0] <= batch[1] <= batch[2] <= 1 << 16):
            raise InputFileError(f"{source}: malformed package sidecar (batch must be [min, opt, max] with "
                                 f"1 <= min <= opt <= max, got {str(batch)[:60]})")
        meta = d["metadata"]
        if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise InputFileError(f"{source}: malformed package sidecar (metadata must map strings to strings)")
        if d["device"] not in DEVICES:
            raise InputFileError(f"{source}: malformed package sidecar (device must be one of {', '.join(DEVICES)})")
        if not isinstance(d["compile_seconds"], (int, float)) or isinstance(d["compile_seconds"], bool):
            raise InputFileError(f"{source}: malformed package sidecar (compile_seconds must be a number)")
        return cls(**{n: d[n] for n in strings}, batch=(batch[0], batch[1], batch[2]),
                   compile_seconds=float(d["compile_seconds"]), metadata=dict(meta))


sidecar_path = S.sidecar_path  # student.pt2 -> student.pt2.json


def read_sidecar(package: Path) -> Pt2Sidecar:
    """The sidecar beside ``package``, contained in its folder and read only up to SIDECAR_MAX_BYTES."""
    text = S.read_sidecar_text(package, "package sidecar", "export it again with nerfgan-export --aoti")
    return Pt2Sidecar.from_json(text, str(sidecar_path(package)))


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("running a .pt2 package needs PyTorch (pip install torch)") from None
    return torch


def check_target(sidecar: Pt2Sidecar, torch: Any, package: Path) -> None:
    """Refuse a package this machine cannot run: another torch version, a CPU without the package's vector ISA,
    or (for 'cuda') no CUDA device or one of another compute capability."""
    here = torch.__version__.split("+")[0]
    if sidecar.torch_version.split("+")[0] != here:
        raise InputFileError(f"{package}: compiled by torch {sidecar.torch_version}, this is torch "
                             f"{torch.__version__}; export it again with this torch (AOTInductor packages are tied "
                             "to the torch version)")
    if sidecar.device == "cuda":
        if not torch.cuda.is_available():
            why = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise InputFileError(f"{package}: compiled for CUDA, and no CUDA device is available here (this torch "
                                 f"{why}); run it on a GPU machine, or export with --aoti --device cpu")
        major, minor = torch.cuda.get_device_capability()
        if f"{major}.{minor}" != sidecar.target:
            raise InputFileError(f"{package}: compiled for compute capability {sidecar.target}, this GPU "
                                 f"({torch.cuda.get_device_name()}) has {major}.{minor}; export it again here")
        return
    import platform

    if sidecar.target and platform.machine() in ("x86_64", "AMD64"):
        # the CPU's own flags (inductor's valid_vec_isa_list would need a C++ compiler here, and seconds)
        from torch._inductor.cpu_vec_isa import x86_isa_checker

        have = x86_isa_checker()
        if not all(flag in have for flag in sidecar.target.lower().split()):
            raise InputFileError(f"{package}: compiled for CPU vector instructions {sidecar.target}, which this CPU "
                                 f"lacks (it has: {' '.join(have).upper() or 'none'}); export it again on this machine")


_LOAD_LOCK = threading.Lock()  # TMPDIR is process-wide: one package load at a time


def _load_package(torch: Any, data: bytes, p: Path) -> tuple[Any, str]:
    """(the loaded package, its private scratch folder). torch's loader unpacks the package under ``$TMPDIR``
    (``aotinductor_*`` folders) and leaves them there when the load fails; here it unpacks into a folder of nerfgan's
    own (``nerfgan-aoti-*``), removed on a failed load and when the backend is closed (or collected)."""
    import tempfile

    scratch = tempfile.mkdtemp(prefix="nerfgan-aoti-")
    with _LOAD_LOCK:
        before = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = scratch
        try:
            model = torch._inductor.aoti_load_package(io.BytesIO(data))
        except Exception as e:  # a damaged zip or library: torch raises RuntimeError and others
            shutil.rmtree(scratch, ignore_errors=True)
            raise InputFileError(f"{p}: torch cannot load it as an AOTInductor package ({type(e).__name__}: "
                                 f"{str(e)[:200]})") from None
        finally:
            if before is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = before
    return model, scratch


class Pt2Backend(Backend):
    """An AOTInductor package with its sidecar (module docstring). ``device``: 'auto' (the package's), 'cpu' or
    'cuda' (must be the package's); ``artifact``/``manifest``: its manifest entry, checked before use."""

    def __init__(self, path: str | os.PathLike[str], device: str = "auto", artifact: S.Artifact | None = None,
                 manifest: Path | None = None) -> None:
        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"{p}: AOTInductor package not found")
        if device not in ("auto", *DEVICES):
            raise UsageError(f"device {device!r}: expected 'auto', 'cpu' or 'cuda'")
        sidecar = read_sidecar(p)
        if device != "auto" and device != sidecar.device:
            raise UsageError(f"{p}: compiled for {sidecar.device}, so it runs on --device {sidecar.device} (or auto), "
                             f"not {device}; export with --aoti --device {device} for that")
        spec = spec_from_metadata(sidecar.metadata, p)
        if spec.kind != sidecar.kind or sidecar.metadata.get(S.META_KIND) != sidecar.kind:
            raise InputFileError(f"{p}: its sidecar says kind {sidecar.kind!r}, its metadata "
                                 f"{sidecar.metadata.get(S.META_KIND)!r} and spec {spec.kind!r}")
        torch = import_torch()
        check_target(sidecar, torch, p)
        data = S.read_checked(p, artifact, manifest, limit=PT2_MAX_BYTES)
        if hashlib.sha256(data).hexdigest() != sidecar.package_sha256:
            raise InputFileError(f"{p}: its sidecar {sidecar_path(p).name} describes another package (sha256 "
                                 f"{sidecar.package_sha256[:16]}...); export again")
        model, self._scratch = _load_package(torch, data, p)
        weakref.finalize(self, shutil.rmtree, self._scratch, True)  # (also when never closed, or refused below)
        del data
        compiled = {k: v for k, v in model.get_metadata().items() if k.startswith("nerfgan.")}
        if compiled != sidecar.metadata:
            keys = set(compiled) | set(sidecar.metadata)
            differ = sorted(k for k in keys if compiled.get(k) != sidecar.metadata.get(k))
            raise InputFileError(f"{p}: the metadata compiled into the package differs from its sidecar's "
                                 f"({', '.join(differ)[:200]}); export again")
        super().__init__(p, spec, sidecar.metadata, max_batch=None)  # any batch: chunks of package_max_batch
        self.sidecar = sidecar
        self.package_max_batch = sidecar.batch[2]
        self.device = sidecar.device
        self.name = f"pt2-{sidecar.device}-{self.precision}"
        self._torch = torch
        self._model: Any = model

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        n = len(feeds[self.spec.input_names[0]])
        parts: dict[str, list[np.ndarray]] = {o: [] for o in self.spec.output_names}
        # fp32 means fp32 on a GPU too: cuDNN's TF32 convolutions (torch's default) are off during the call
        no_tf32 = torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if self.device == "cuda" else nullcontext()
        with torch.no_grad(), no_tf32:
            for i in range(0, n, self.package_max_batch):
                args = [torch.from_numpy(feeds[name][i:i + self.package_max_batch]).to(self.device)
                        for name in self.spec.input_names]
                outs = self._model(*args)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                if len(outs) != len(self.spec.output_names):
                    raise InputFileError(f"{self.path}: the package returned {len(outs)} outputs, its spec names "
                                         f"{self.spec.output_names}")
                for name, o in zip(self.spec.output_names, outs):
                    parts[name].append(o.detach().float().cpu().numpy())
        out = {name: v[0] if len(v) == 1 else np.concatenate(v) for name, v in parts.items()}
        for name, a in out.items():
            want = self.spec.output(name).concrete(n)
            if a.shape != want:
                raise InputFileError(f"{self.path}: output {name} has shape {a.shape}, its spec says {want}")
        return out

    def _release(self) -> None:
        self._model = None
        shutil.rmtree(self._scratch, ignore_errors=True)
