"""``nerfgan-export``: a student checkpoint -> validated ONNX files (+ FP16, INT8, TensorRT, Triton) and a manifest.

Every artifact is written into a staging folder inside OUT_DIR, validated (nerfgan.export.validate),
and only when every gate passed are they renamed into place, ``manifest.json`` last. A miss raises
ExportMismatchError listing every output that missed, and OUT_DIR keeps what it had before.

    OUT_DIR/mapping.onnx            (z, c_cond, psi) -> w                       float32
    OUT_DIR/student.onnx            (w, c) -> image, image_raw                  float32
    OUT_DIR/student_fp16.onnx       --fp16: float16 inside, float32 inputs/outputs
    OUT_DIR/student_int8.onnx       --int8: symmetric per-channel Q/DQ
    OUT_DIR/*.plan (+ .plan.json)   --trt: TensorRT engines with their sidecars
    OUT_DIR/student.pt2 (+ .pt2.json) --aoti: AOTInductor package of the student for --device (nerfgan.export.aoti)
    OUT_DIR/manifest.json           every artifact: sha256, precision, size, validation figures; the export config
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import nerfgan
from nerfgan.calibrate.int8 import BACKENDS, DEFAULT_EXCLUDE
from nerfgan.errors import InputFileError, NerfganError, OutputError, UsageError
from nerfgan.io import (OWNER_FILE, atomic_dir, atomic_path, check_may_replace, check_writable_dir, claim_dir,
                        folder_lock, mark_dir, may_replace)
from nerfgan.runtime import spec as S



DEFAULT_BATCH = (1, 1, 16)
DEFAULT_TRITON_BATCH = (1, 16, 16)


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how to judge it (saved in manifest.json)."""

    # min, opt, max batch: TensorRT profile, Triton max_batch_size. None: (1, 16, 16) for a Triton repository, whose
    # dynamic batcher forms batches up to max (the plans are tuned for them), else (1, 1, 16) for one image at a time.
    batch: tuple[int, int, int] | None = None
    opset: int = 17  # ONNX opset
    fp16: bool = False  # also write student_fp16.onnx
    int8: bool = False  # also write student_int8.onnx (needs calib)
    calib: str | None = None  # CALIB.npz from `nerfgan calibrate`
    int8_exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # node-name patterns kept in float ('depthwise' = FIR convs)
    int8_backend: str = "auto"  # 'ort', 'modelopt', or 'auto' (ModelOpt when installed)
    trt: bool = False  # build TensorRT plans of every ONNX file
    workspace_gib: float = 4.0  # TensorRT builder workspace
    triton: str | None = None  # REPO_DIR for a Triton model repository
    triton_precision: str | None = None  # student precision served by Triton (default: the lowest exported)
    triton_backend: str | None = None  # 'onnxruntime', 'tensorrt' or 'python' (default: tensorrt with trt, else onnxruntime)
    aoti: bool = False  # also compile student.pt2, an AOTInductor package (nerfgan.export.aoti)
    aoti_device: str = "cpu"  # where the --aoti package is compiled and runs: 'cpu' or 'cuda'
    validate_batches: tuple[int, ...] = (1, 3)  # batch sizes of the validation feeds
    validate_seed: int = 1234  # seed of the validation samples
    fp32_atol: float = 1e-4  # max |onnx - pytorch| for float32 files
    fp16_min_psnr: float = 40.0  # dB against the float32 PyTorch student
    int8_max_drop: float = 2.0  # dB of PSNR against the teacher the INT8 file may lose vs float32
    int8_min_psnr_vs_fp32: float = 30.0  # dB: every INT8 output against the float32 PyTorch student, at least
    int8_holdout: float = 0.5  # share of the calibration file's samples (its last rows) kept out of calibration to judge INT8

    @property
    def resolved_batch(self) -> tuple[int, int, int]:
        assert self.batch is not None  # set by __post_init__
        return self.batch

    def __post_init__(self) -> None:
        if self.batch is None:
            object.__setattr__(self, "batch", DEFAULT_TRITON_BATCH if self.triton else DEFAULT_BATCH)
        lo, opt, hi = self.resolved_batch
        if not 1 <= lo <= opt <= hi:
            raise UsageError(f"--batch: need 1 <= MIN <= OPT <= MAX, got {lo},{opt},{hi}")
        if not 9 <= self.opset <= 21:
            raise UsageError(f"--opset: {self.opset} is outside the range this exporter writes (9-21; 17 recommended)")
        if self.int8 and not self.calib:
            raise UsageError("--int8 needs --calib CALIB.npz (make one with `nerfgan calibrate`)")
        if not 0.0 < self.int8_holdout < 1.0:
            raise UsageError(f"int8_holdout: the share of calibration samples that judge INT8 must be in (0, 1), "
                             f"got {self.int8_holdout}")
        if self.int8_backend not in BACKENDS:
            raise UsageError(f"--int8-backend: choose one of {', '.join(BACKENDS)}")
        if self.triton_precision not in (None, *S.PRECISIONS):
            raise UsageError(f"--triton-precision: choose one of {', '.join(S.PRECISIONS)}")
        if self.triton_backend not in (None, "onnxruntime", "tensorrt", "python"):
            raise UsageError("--triton-backend: choose one of onnxruntime, tensorrt, python")
        if self.triton_backend and not self.triton:
            raise UsageError(f"--triton-backend {self.triton_backend}: given without --triton REPO_DIR")
        if self.triton_backend == "tensorrt" and not self.trt:
            raise UsageError("--triton-backend tensorrt: serves a TensorRT plan; add --trt to build it")
        if self.aoti_device not in ("cpu", "cuda"):
            raise UsageError(f"--device: choose cpu or cuda, got {self.aoti_device!r}")
        if self.aoti_device != "cpu" and not self.aoti:
            raise UsageError(f"--device {self.aoti_device}: sets where the --aoti package is compiled; add --aoti")
        wanted = {"fp16": self.fp16, "int8": self.int8, "fp32": True}
        if self.triton_precision and not wanted[self.triton_precision]:
            raise UsageError(f"--triton-precision {self.triton_precision}: that precision is not being exported")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Artifact:
    file: str
    kind: str  # 'mapping' or 'student'
    precision: str
    format: str  # 'onnx', 'tensorrt' or 'pt2'
    checks: list[Any] = field(default_factory=list)  # validate.Check
    extra: dict[str, Any] = field(default_factory=dict)


def export(ckpt: str | os.PathLike[str], out_dir: str | os.PathLike[str], config: ExportConfig = ExportConfig(),
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, validate and install everything ``config`` asks for; returns the manifest."""
    from nerfgan.io import existing_file, file_sha256
    from nerfgan.student.checkpoint import load_student, read_student_metadata
    from nerfgan.teacher.identity import TEACHER_KEY

    ckpt_path = existing_file(ckpt, "student checkpoint")
    out = check_destinations(ckpt_path, out_dir, config, log)
    if config.trt:  # fail before any work when TensorRT or the GPU is missing
        from nerfgan.export.tensorrt import gpu_info, import_tensorrt

        import_tensorrt()
        gpu_info()
    if config.aoti:  # a cuda package without a GPU: say so before any work
        from nerfgan.export.aoti import check_device

        check_device(config.aoti_device)
    calib = None
    if config.int8:
        from nerfgan.calibrate.calibset import load_calibration_set

        calib = load_calibration_set(str(config.calib))
        from nerfgan.export.validate import int8_split

        int8_split(len(calib), config.int8_holdout, str(config.calib))  # too few samples: say so before any work
    student = load_student(ckpt_path)
    if calib is not None and calib.meta.get("teacher_config") != json.loads(student.config.teacher.to_json()):
        raise InputFileError(f"{config.calib}: calibrated for another teacher config than {ckpt_path}'s")
    sha = file_sha256(ckpt_path)
    teacher = read_student_metadata(ckpt_path).get(TEACHER_KEY)  # the teacher it was distilled from, if recorded
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"-o {out}: cannot make the folder ({e.strerror})") from None
    with folder_lock(out, name=EXPORT_LOCK, what="export folder", on_wait=log):
        claim_dir(out, OWNER_KIND, "-o", _is_export)  # again, now that no other export can be changing it
        for legacy in out.glob(".nerfgan-export-*"):  # staging folders of versions before the lock (all dead now)
            if legacy.is_dir() and not legacy.is_symlink():
                shutil.rmtree(legacy, ignore_errors=True)
        with atomic_dir(out / "staging") as stage:
            artifacts = _make_all(student, sha, teacher, stage, config, calib, log)
            misses = [c for a in artifacts for c in a.checks if not c.ok]
            if misses:
                from nerfgan.export.validate import raise_on_misses

                raise_on_misses(misses)
            manifest = _manifest(artifacts, stage, ckpt_path, sha, teacher, student, config)
            if config.triton:
                _triton(config, stage, artifacts, student, log)
            _install(out, stage, artifacts, manifest)
        return manifest


OWNER_KIND = "export"  # nerfgan.io owner-file kind of an export folder
EXPORT_LOCK = ".nerfgan-export.lock"  # held for a whole export: exports into one folder run one after another


def check_destinations(ckpt: Path, out_dir: str | os.PathLike[str], config: ExportConfig,
                       log: Callable[[str], None] | None = None) -> Path:
    """Check, before any work, that -o and --triton may be written and do not overlap the checkpoint or each other;
    ``log`` gets a warning when the --triton folder's name shadows an importable Python module."""
    out = Path(out_dir)
    claim_dir(out, OWNER_KIND, "-o", _is_export)
    check_writable_dir(out, "export folder")
    if out.is_dir():  # the one rule of what a writer may replace (nerfgan.io.may_replace), before any work
        check_may_replace(out, planned_files(config), _records(out), "-o", _is_nerfgan_sidecar)
    if config.triton:
        from nerfgan.export.triton import check_destination

        repo = Path(os.path.realpath(config.triton))  # (symbolic links resolved: the folders really meant)
        here = Path(os.path.realpath(out))
        if repo == here or here in repo.parents or repo in here.parents:
            raise UsageError(f"--triton {config.triton}: must be a folder of its own, not -o {out_dir}, inside it "
                             "or around it")
        if repo in Path(os.path.realpath(ckpt)).parents:
            raise UsageError(f"--triton {config.triton}: holds the checkpoint {ckpt}; give a folder of its own")
        check_destination(config.triton, overwrite=True)
        check_writable_dir(repo, "Triton repository")
        shadowed = shadowed_module(repo)
        if shadowed and log is not None:
            log(f"warning: --triton {config.triton}: a folder named {shadowed!r} hides the Python module {shadowed} "
                f"from Python started in {repo.parent} (torch imports triton, for one); the usual name is "
                "model_repository")
    return out


def shadowed_module(folder: str | os.PathLike[str]) -> str | None:
    """The name of the importable module (standard library, built in, or installed on sys.path outside the folder's
    parent) that a folder of this name hides from Python started in its parent folder, or None."""
    import importlib.machinery
    import sys

    p = Path(os.path.abspath(folder))
    name = p.name
    if not name.isidentifier():
        return None
    if name in sys.builtin_module_names or name in getattr(sys, "stdlib_module_names", ()):
        return name
    parent = os.path.realpath(p.parent)
    paths = [e for e in sys.path if os.path.realpath(e or os.getcwd()) != parent]
    try:
        found = importlib.machinery.PathFinder.find_spec(name, paths)
    except (ImportError, ValueError, OSError):
        return None
    return name if found is not None else None


def planned_files(config: ExportConfig) -> list[str]:
    """The names an export with ``config`` writes into -o (manifest.json and the owner file aside)."""
    onnx = ["mapping.onnx", "student.onnx"] + ["student_fp16.onnx"] * config.fp16 + ["student_int8.onnx"] * config.int8
    names = list(onnx)
    if config.trt:
        names += [n for f in onnx for n in (f.replace(".onnx", ".plan"), f.replace(".onnx", ".plan.json"))]
    if config.aoti:
        names += ["student.pt2", "student.pt2.json"]
    return names


def _is_export(folder: Path) -> bool:
    """A folder from before owner files: it has a nerfgan export manifest."""
    try:
        S.read_manifest(folder)
    except NerfganError:
        return False
    return True


def _install(out: Path, stage: Path, artifacts: list[Artifact], manifest: dict[str, Any]) -> None:
    """Rename the staged files into ``out``, manifest.json last, and remove the files the previous manifest listed
    that this one does not (nothing nerfgan did not list is touched). Readers hold the folder lock shared while they
    load, so they see the old set or the new one, never a mix; a kill part-way leaves files that do not match the
    manifest's sha256, which readers refuse by name until the next export completes."""
    names = [n for a in artifacts for n in [a.file] + ([a.file + ".json"] if a.format in ("tensorrt", "pt2") else [])]
    records = _records(out)
    check_may_replace(out, names, records, "-o", _is_nerfgan_sidecar)  # (again: the folder may have changed meanwhile)
    mark_dir(stage, OWNER_KIND)
    with atomic_path(stage / S.MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    new = {a["file"]: a["sha256"] for a in manifest["artifacts"]}
    new.update({n: None for n in names if n not in new})  # sidecars
    with folder_lock(out, what="export folder"):
        with atomic_path(out / INSTALLING) as tmp:  # what the renames below put there, until the manifest says it
            tmp.write_text(json.dumps({"format": INSTALLING_FORMAT, "files": new}))
        for name in names:
            os.replace(stage / name, out / name)
        os.replace(stage / OWNER_FILE, out / OWNER_FILE)
        os.replace(stage / S.MANIFEST, out / S.MANIFEST)
        keep = set(names) | {S.MANIFEST, OWNER_FILE}
        for name in sorted({n for r in records for n in r}):
            if name not in keep and os.path.lexists(out / name) and any(
                    may_replace(out / name, r, name, _is_nerfgan_sidecar) for r in records):
                (out / name).unlink()
        (out / INSTALLING).unlink()


INSTALLING = ".nerfgan-installing.json"
"""Written into -o just before an install's renames (name -> sha256 of every file it puts there) and removed once
the new manifest is in place: after a kill in between, the next export may replace those files too."""
INSTALLING_FORMAT = "nerfgan-export-install"


def _records(out: Path) -> list[dict[str, str | None]]:
    """What nerfgan wrote in ``out``: the files its manifest lists and those of an install killed part-way."""
    from nerfgan.jsonfile import read_json

    pending: dict[str, str | None] = {}
    if os.path.lexists(out / INSTALLING):
        try:
            d = read_json(out / INSTALLING, "install record", S.MANIFEST_MAX_BYTES, S.MANIFEST_MAX_VALUES)
        except InputFileError:
            d = None
        files = d.get("files") if isinstance(d, dict) and d.get("format") == INSTALLING_FORMAT else None
        if isinstance(files, dict):
            pending = {k: v for k, v in files.items() if isinstance(k, str) and S.plain_name_problem(k) is None
                       and (v is None or isinstance(v, str))}
    return [_listed_files(out), pending]


def _is_nerfgan_sidecar(path: Path) -> bool:
    """For a plan's or package's sidecar (listed in the manifest without a sha256): a small JSON file that is a
    nerfgan sidecar (what nerfgan.io.may_replace asks of an entry recorded without a sha256)."""
    if path.is_symlink() or not path.is_file():
        return False
    from nerfgan.runtime.plan import EngineSidecar
    from nerfgan.runtime.pt2_backend import Pt2Sidecar

    try:
        if path.stat().st_size > 1 << 20:
            return False
        text = path.read_text(encoding="utf-8")
        parse = Pt2Sidecar.from_json if path.name.endswith(".pt2.json") else EngineSidecar.from_json
        sidecar = parse(text, str(path))
    except (OSError, ValueError, NerfganError):
        return False
    return sidecar.metadata.get(S.META_FORMAT) == S.FORMAT


def _listed_files(out: Path) -> dict[str, str | None]:
    """File names the folder's current manifest lists -> their recorded sha256 (None for plan sidecars); empty when
    there is no well-formed manifest (S.read_export checks that every entry is a plain name in the folder)."""
    try:
        manifest = S.read_export(out)
    except NerfganError:
        return {}
    files: dict[str, str | None] = {}
    for a in manifest.artifacts:
        if a.file not in (S.MANIFEST, OWNER_FILE):
            files[a.file] = a.sha256
            if (a.format, Path(a.file).suffix) in (("tensorrt", ".plan"), ("pt2", ".pt2")):
                files[a.file + ".json"] = None  # its sidecar (removed only if it is one: _unchanged)
    return files


Judge = Callable[[Any, str], list[Any]]  # (a Polygraphy runner of a candidate, its file name) -> its gate's Checks


def _make_all(student: Any, sha: str, teacher: str | None, stage: Path, config: ExportConfig, calib: Any,
              log: Callable[[str], None]) -> list[Artifact]:
    """Write and judge every ONNX file, then the TensorRT plans (each held to the gate of its ONNX file)."""
    from nerfgan.export import validate as V
    from nerfgan.export.to_onnx import artifact_metadata, export_onnx, graph_for, specs_for, write_metadata

    specs = specs_for(student)
    artifacts: list[Artifact] = []
    judges: dict[str, Judge] = {}  # ONNX file name -> how it (and a plan built from it) is judged
    reference: dict[str, tuple[list[dict[str, Any]], Any]] = {}  # kind -> (feeds, PyTorch outputs on them)
    for kind in ("mapping", "student"):
        name = f"{kind}.onnx"
        export_onnx(student, kind, stage / name, config.opset)
        write_metadata(stage / name, artifact_metadata(student, kind, "fp32", sha, config.resolved_batch, teacher))
        feeds = V.validation_feeds(student, specs[kind], config.validate_batches, config.validate_seed)
        reference[kind] = feeds, V.run_reference(V.torch_runner(graph_for(student, kind), specs[kind]), feeds)

        def fp32_judge(runner: Any, file: str, kind: str = kind) -> list[Any]:
            feeds, ref = reference[kind]
            return V.check_fp32(file, V.run_pair(ref, runner, feeds), specs[kind], config.fp32_atol)

        judges[name] = fp32_judge
        artifacts.append(Artifact(name, kind, "fp32", "onnx", fp32_judge(V.onnx_runner(stage / name), name)))
        _log_checks(artifacts[-1].checks, log)
    if config.fp16:
        artifacts.append(_fp16(student, sha, teacher, stage, config, reference["student"], judges, log))
    if config.int8:
        artifacts.append(_int8(student, sha, teacher, stage, config, calib, judges, log))
    if config.trt:
        artifacts += _plans(student, stage, config, [a for a in artifacts if a.format == "onnx"], judges, log)
    if config.aoti:
        artifacts.append(_aoti(student, sha, teacher, stage, config, judges, log))
    return artifacts


def _aoti(student: Any, sha: str, teacher: str | None, stage: Path, config: ExportConfig, judges: dict[str, Judge],
          log: Callable[[str], None]) -> Artifact:
    """student.pt2, compiled on config.aoti_device, run through the runtime's Pt2Backend on the feeds student.onnx
    was judged on and held to the same FP32 gate (max |pt2 - pytorch| <= fp32_atol)."""
    from nerfgan.export import validate as V
    from nerfgan.export.aoti import compile_package
    from nerfgan.export.to_onnx import artifact_metadata, specs_for
    from nerfgan.runtime.pt2_backend import Pt2Backend

    name = "student.pt2"
    log(f"compiling {name} with AOTInductor on {config.aoti_device} (a minute or more: the C++ compiler)")
    meta = artifact_metadata(student, "student", "fp32", sha, config.resolved_batch, teacher)
    sidecar = compile_package(student, "student", stage / name, config.resolved_batch, config.aoti_device, meta)
    runner = V.backend_runner(lambda: Pt2Backend(stage / name, device=config.aoti_device), specs_for(student)["student"],
                              name)
    a = Artifact(name, "student", "fp32", "pt2", judges["student.onnx"](runner, name),
                 {"device": sidecar.device, "target": sidecar.target, "torch_version": sidecar.torch_version,
                  "compile_seconds": sidecar.compile_seconds, "sidecar": name + ".json"})
    log(f"compiled {name} in {sidecar.compile_seconds:.1f} s")
    _log_checks(a.checks, log)
    return a


def _fp16(student: Any, sha: str, teacher: str | None, stage: Path, config: ExportConfig,
          reference: tuple[list[dict[str, Any]], Any], judges: dict[str, Judge], log: Callable[[str], None]) -> Artifact:
    """student_fp16.onnx, judged against the float32 PyTorch outputs ``reference`` = (feeds, results)."""
    import onnx

    from nerfgan.calibrate.fp16 import to_fp16
    from nerfgan.export import validate as V
    from nerfgan.export.to_onnx import artifact_metadata, specs_for, write_metadata

    spec = specs_for(student)["student"]
    name = "student_fp16.onnx"
    model, kept, total = to_fp16(onnx.load(str(stage / "student.onnx")))
    onnx.save(model, str(stage / name))
    write_metadata(stage / name, artifact_metadata(student, "student", "fp16", sha, config.resolved_batch, teacher))
    feeds, reference_results = reference

    def judge(runner: Any, file: str) -> list[Any]:
        return V.check_psnr_vs_reference(file, V.run_pair(reference_results, runner, feeds), spec, config.fp16_min_psnr)

    judges[name] = judge
    a = Artifact(name, "student", "fp16", "onnx", judge(V.onnx_runner(stage / name), name),
                 {"nodes_kept_fp32": kept, "nodes": total})
    _log_checks(a.checks, log)
    return a


def _int8(student: Any, sha: str, teacher: str | None, stage: Path, config: ExportConfig, calib: Any,
          judges: dict[str, Judge], log: Callable[[str], None]) -> Artifact:
    """student_int8.onnx, calibrated on the calibration file's first rows and judged on the rest (held out): against
    the float32 PyTorch student (int8_min_psnr_vs_fp32) and by its PSNR drop against the teacher (int8_max_drop)."""
    from dataclasses import replace

    from nerfgan.calibrate.int8 import quantize
    from nerfgan.export import validate as V
    from nerfgan.export.to_onnx import artifact_metadata, graph_for, specs_for, write_metadata
    from nerfgan.io import file_sha256

    spec = specs_for(student)["student"]
    name = "student_int8.onnx"
    n = len(calib)
    k = V.int8_split(n, config.int8_holdout, str(config.calib))
    inputs = calib.student_inputs()
    backend, excluded = quantize(stage / "student.onnx", stage / name, {a: v[:k] for a, v in inputs.items()},
                                 config.int8_exclude, config.int8_backend)
    meta = artifact_metadata(student, "student", "int8", sha, config.resolved_batch, teacher)
    meta["nerfgan.calibration_sha256"] = file_sha256(calib.path)
    write_metadata(stage / name, meta)
    step = 8
    feeds = [{a: v[i:min(i + step, n)] for a, v in inputs.items()} for i in range(k, n, step)]
    reference = V.run_reference(V.torch_runner(graph_for(student, "student"), spec), feeds)
    fp32 = {o: np.concatenate([r[o] for r in V._outputs(reference, 0)]) for o in spec.output_names}
    held_out = {o: v[k:] for o, v in calib.teacher_images().items()}
    where = f" [held-out rows {k}-{n - 1} of {Path(str(config.calib)).name}]"

    def judge(runner: Any, file: str) -> list[Any]:
        results = V.run_pair(reference, runner, feeds)
        q = {o: np.concatenate([c[o] for c in V._outputs(results, 1)]) for o in spec.output_names}
        return [replace(c, detail=c.detail + where)
                for c in V.check_psnr_vs_reference(file, results, spec, config.int8_min_psnr_vs_fp32)
                + V.check_psnr_drop_vs_teacher(file, fp32, q, held_out, config.int8_max_drop)]

    judges[name] = judge
    a = Artifact(name, "student", "int8", "onnx", judge(V.onnx_runner(stage / name), name),
                 {"int8_backend": backend, "excluded_nodes": excluded, "calibration": str(calib.path),
                  "calibration_samples": k,
                  "judged_on": {"rows": [k, n], "sample_index": [int(i) for i in calib.arrays["index"][k:]]}})
    _log_checks(a.checks, log)
    return a


def _plans(student: Any, stage: Path, config: ExportConfig, onnx_artifacts: list[Artifact], judges: dict[str, Judge],
           log: Callable[[str], None]) -> list[Artifact]:
    """A TensorRT plan of every ONNX file, run through the runtime's TensorRT backend on the feeds its ONNX file
    was judged on and held to the same gate (an FP32 plan, built without TF32, to the FP32 tolerance).

    On TensorRT >= 10.12 (strongly typed) the INT8 plan is built from the INT8 graph with its unquantized parts in
    float16 (nerfgan.calibrate.int8.unquantized_to_fp16), itself judged by the INT8 gates first, so that the INT8
    plan runs everything it does not quantize in FP16, as TensorRT's weakly typed INT8 builds did.
    """
    import tempfile

    import onnx

    from nerfgan.calibrate.int8 import unquantized_to_fp16
    from nerfgan.export import validate as V
    from nerfgan.export.tensorrt import build_engine, import_tensorrt, strongly_typed
    from nerfgan.export.to_onnx import read_metadata, specs_for, write_metadata

    specs = specs_for(student)
    typed = strongly_typed(import_tensorrt().__version__)
    plans = []
    with tempfile.TemporaryDirectory(prefix="nerfgan-plan-") as scratch:
        for a in onnx_artifacts:
            name = a.file.replace(".onnx", ".plan")
            source, extra = stage / a.file, {"onnx": a.file}
            if a.precision == "int8" and typed:
                source = Path(scratch) / "student_int8_fp16.onnx"
                onnx.save(unquantized_to_fp16(onnx.load(str(stage / a.file))), str(source))
                write_metadata(source, read_metadata(stage / a.file))
                source_checks = judges[a.file](V.onnx_runner(source), f"{a.file} (unquantized parts in FP16)")
                _log_checks(source_checks, log)
                V.raise_on_misses(source_checks)
                extra["built_from"] = f"{a.file} with its unquantized layers in float16 (opset 19 Q/DQ)"
            build_engine(source, stage / name, spec=specs[a.kind], batch=config.resolved_batch, precision=a.precision,
                         workspace_gib=config.workspace_gib, timing_cache=stage.parent / ".nerfgan-timing.cache",
                         onnx_metadata=read_metadata(source), log=log)
            plans.append(Artifact(name, a.kind, a.precision, "tensorrt",
                                  judges[a.file](V.plan_runner(stage / name, specs[a.kind]), name), extra))
            _log_checks(plans[-1].checks, log)
    return plans


def _triton(config: ExportConfig, stage: Path, artifacts: list[Artifact], student: Any, log: Callable[[str], None]) -> None:
    from nerfgan.export.to_onnx import specs_for
    from nerfgan.export.triton import write_triton_repository

    order = ["int8", "fp16", "fp32"]
    precision = config.triton_precision or next(p for p in order if any(a.precision == p for a in artifacts))
    backend = config.triton_backend or ("tensorrt" if config.trt else "onnxruntime")
    fmt = "tensorrt" if backend == "tensorrt" else "onnx"
    student_file = next(a.file for a in artifacts if a.kind == "student" and a.precision == precision and a.format == fmt)
    mapping_file = next(a.file for a in artifacts if a.kind == "mapping" and a.format == "onnx")
    specs = specs_for(student)
    write_triton_repository(str(config.triton), mapping_file=stage / mapping_file, student_file=stage / student_file,
                            mapping_spec=specs["mapping"], student_spec=specs["student"], student_backend=backend,
                            max_batch_size=config.resolved_batch[2], plan_max_batch=config.resolved_batch[2] if fmt == "tensorrt" else None,
                            overwrite=True)
    log(f"wrote Triton repository {config.triton} (student: {student_file}, {backend} backend)")


def _log_checks(checks: list[Any], log: Callable[[str], None]) -> None:
    for c in checks:
        log(f"{'ok  ' if c.ok else 'MISS'} {c.describe()}")


def _manifest(artifacts: list[Artifact], stage: Path, ckpt: Path, sha: str, teacher: str | None, student: Any, config: ExportConfig) -> dict[str, Any]:
    from nerfgan.export.to_onnx import specs_for
    from nerfgan.io import file_sha256
    from nerfgan.teacher.identity import TEACHER_KEY

    specs = specs_for(student)
    return {
        "format": S.MANIFEST_FORMAT, "nerfgan_version": nerfgan.__version__,
        "checkpoint": {"path": str(ckpt), "sha256": sha}, TEACHER_KEY: teacher,
        "student_config": json.loads(student.config.to_json()),
        "export_config": json.loads(config.to_json()),
        "artifacts": [{"file": a.file, "kind": a.kind, "precision": a.precision, "format": a.format,
                       "sha256": file_sha256(stage / a.file), "bytes": (stage / a.file).stat().st_size,
                       "io": json.loads(specs[a.kind].to_json()),
                       "validation": [c.as_dict() for c in a.checks], **a.extra} for a in artifacts],
    }
