"""``nerfgan bench``: the teacher and exported engines timed side by side, on one machine, in one run.

    nerfgan bench --teacher tiny --engine export/ --engine export/student_int8.onnx --batch 1,4,16 -o bench.json

Per batch B the inputs are seeds 0..B-1 (z as upstream draws them), yaws spread over -30..30 degrees
(0 for B = 1), pitch 0, truncation 0.7:

* teacher: PyTorch EG3D, float32, full generation from z: mapping + synthesis (backbone, deterministic
  rendering, super-resolution), backbone noise 'const';
* each engine (nerfgan.runtime.load): 'full' = Generator.generate(z=...), the mapping and the student,
  i.e. seeds -> images; 'from w' = Generator.generate(w=...), the student alone, w computed beforehand.

Each figure: ``warmup`` untimed calls, then ``runs`` timed calls (CUDA work synchronised for PyTorch;
the runtime returns numpy, so its calls are synchronous). Latency p50 / p90 = median / 90th percentile
(numpy, linear) in ms per batch call; images/s = B / p50. Speedup = an engine's images/s ('full', and
'from w') over the teacher's at the same batch.

Peak memory, per (model, batch), in MiB:

* CPU ('rss'): the process's peak resident set (VmHWM) during that measurement, reset before it through
  /proc/self/clear_refs (Linux). It is process-wide: the interpreter, torch and whatever model is loaded
  (the teacher is freed before the engines load; ``base_mib`` is the RSS when the measurement started).
  Where the reset is impossible ('rss-monotone'): getrusage's ru_maxrss, the high-water mark since the
  process started, which never decreases, so later rows include earlier ones.
* GPU ('cuda-allocated'): torch.cuda.max_memory_allocated, for PyTorch models only (the teacher, a
  student .safetensors). ONNX Runtime (CUDA) and TensorRT memory is not PyTorch's and is not measured:
  their rows give the host RSS ('rss') only.

A batch above an engine's max_batch (a TensorRT profile; the mapping's too, for 'full') is reported
'n/a' with the reason instead of being split or crashing; one below its min_batch is timed as the
Generator runs it, padded to the minimum, with a note.

``--backend onnxruntime|openvino`` (repeated like ``--precision``: once for all engines, or once per engine)
says what runs each engine's ONNX files (default: ONNX Runtime). When one student file is timed under two
runtimes (e.g. ``--engine E --engine E --backend onnxruntime --backend openvino``), the output ends with one
line per batch saying which is faster on this CPU, from images/s ('full', or 'from w' when either has no
'full'); the JSON has them under "comparisons". Nothing about the defaults changes.

Accuracy beside speed: every engine row carries ``psnr_vs_fp32``, the mean PSNR (dB, images clipped to [-1, 1])
of the engine's final images against the FP32 student's on the same probe (w of seeds 0..3 at truncation 0.7,
yaws -30, -10, 10, 30, pitch 0): the FP32 student is the export folder's ``student.onnx`` under ONNX Runtime
(the folder of an engine file that has a manifest beside it), or the student file itself for a ``.safetensors``
engine; 200 when the images are equal; None where there is no FP32 student to compare with.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

import nerfgan
from nerfgan.cli_common import dry_run_option, echo_json, out_option
from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import atomic_path, check_writable
from nerfgan.runtime.parity import DEVICES, torch_device_for

TRUNCATION = 0.7
BENCH_FORMAT = "nerfgan-bench"


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,4,16' -> (1, 4, 16): positive integers, each once."""
    try:
        batches = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        batches = ()
    if not batches or any(b < 1 for b in batches) or len(set(batches)) != len(batches):
        raise UsageError(f"--batch: expected distinct positive integers separated by commas (e.g. 1,4,16), got {text!r}")
    return batches


def yaws_for(batch: int) -> np.ndarray:
    return np.linspace(-30.0, 30.0, batch) if batch > 1 else np.zeros(1)


# --- measuring ----------------------------------------------------------------------------------
def _proc_status_kib(key: str) -> float | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return float(m.group(1)) if m else None


class PeakMemory:
    """Peak memory of one measurement: 'cuda-allocated' (PyTorch on CUDA), else 'rss' or 'rss-monotone'."""

    def __init__(self, torch_cuda: bool) -> None:
        self.torch_cuda = torch_cuda
        self.kind: str | None = None
        self.base_mib: float | None = None

    def start(self) -> None:
        if self.torch_cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_mib = torch.cuda.memory_allocated() / 2**20
            self.kind = "cuda-allocated"
            return
        rss = _proc_status_kib("VmRSS")
        self.base_mib = None if rss is None else rss / 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.kind = "rss" if _proc_status_kib("VmHWM") is not None else "rss-monotone"
        except OSError:
            self.kind = "rss-monotone"

    def peak_mib(self) -> float:
        if self.kind == "cuda-allocated":
            import torch

            return float(torch.cuda.max_memory_allocated()) / 2**20
        hwm = _proc_status_kib("VmHWM") if self.kind == "rss" else None
        if hwm is not None:
            return hwm / 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def timed(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def figures(times: Sequence[float], batch: int) -> dict[str, float]:
    p50 = statistics.median(times)
    return {"img_s": batch / p50, "p50_ms": 1000 * p50, "p90_ms": 1000 * float(np.percentile(times, 90))}


def _row(model: str, path: str, backend: str, precision: str, batch: int, student: str | None = None) -> dict[str, Any]:
    return {"model": model, "path": path, "backend": backend, "precision": precision, "batch": batch,
            "student": student, "status": "ok",
            "reason": None, "full": None, "from_w": None, "peak_mib": None, "base_mib": None, "memory": None,
            "speedup": None, "speedup_from_w": None, "note": None, "psnr_vs_fp32": None}


# --- the models ---------------------------------------------------------------------------------
def _teacher_full(model: Any, z: Any, c_cond: Any, c: Any) -> Any:
    """Seeds -> images for the teacher: mapping + synthesis (deterministic rendering, noise 'const')."""
    return model.synthesis(model.mapping(z, c_cond, TRUNCATION), c, noise_mode="const", render_mode="deterministic")


def bench_teacher(teacher: str, batches: Sequence[int], device: str, runs: int, warmup: int,
                  log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Teacher rows (full generation from z), one per batch. ``device``: a PyTorch device ('cpu', 'cuda')."""
    import torch

    from nerfgan.sampling import z_from_seed
    from nerfgan.teacher.checkpoint import load_teacher
    from nerfgan.teacher.views import cameras_for

    model = load_teacher(teacher, device=device)
    rows = []

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    for b in batches:
        log(f"teacher, batch {b}")
        z = torch.from_numpy(np.concatenate([z_from_seed(i, model.config.z_dim) for i in range(b)])).to(device)
        cams = [cameras_for(model, float(y), 0.0) for y in yaws_for(b)]
        c = torch.from_numpy(np.stack([cam[0] for cam in cams])).to(device)
        c_cond = torch.from_numpy(np.stack([cam[1] for cam in cams])).to(device)
        row = _row("teacher", str(teacher), f"pytorch-{device}-fp32", "fp32", b)
        mem = PeakMemory(device == "cuda")
        with torch.no_grad():
            mem.start()
            times = timed(functools.partial(_teacher_full, model, z, c_cond, c), runs, warmup, sync)
        row.update(full=figures(times, b), peak_mib=mem.peak_mib(), base_mib=mem.base_mib, memory=mem.kind, speedup=1.0)
        rows.append(row)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def bench_engine(label: str, path: str, precision: str | None, batches: Sequence[int], device: str, runs: int,
                 warmup: int, log: Callable[[str], None] = print, backend: str | None = None,
                 refs: dict[Path, tuple[np.ndarray, np.ndarray]] | None = None) -> list[dict[str, Any]]:
    """Rows of one engine ('full' and 'from w'), one per batch; 'n/a' rows above its max_batch. ``backend``: what
    runs its ONNX files (nerfgan.runtime.load's); ``refs``: the FP32 probe images met so far (psnr_vs_fp32)."""
    import nerfgan.runtime as nr

    rows = []
    with nr.load(path, precision=precision, device=device, backend=backend) as g:
        torch_cuda = g.backend.startswith("pytorch-cuda")
        accuracy = psnr_vs_fp32(g, path, device, {} if refs is None else refs)
        for b in batches:
            row = _row(label, str(path), g.backend, g.precision, b, str(g.student.path.resolve()))
            row["psnr_vs_fp32"] = accuracy
            rows.append(row)
            if g.student.max_batch is not None and b > g.student.max_batch:
                row.update(status="n/a", reason=f"batch {b} > max_batch {g.student.max_batch} of {g.student.path.name}")
                continue
            log(f"{label} ({g.backend}), batch {b}")
            if b < g.student.min_batch:  # the Generator pads up to a TensorRT profile's minimum: time counts them
                row["note"] = f"batch {b} < min_batch {g.student.min_batch} of {g.student.path.name}: padded"
            yaw = yaws_for(b)
            mem = PeakMemory(torch_cuda)
            mem.start()
            if g.mapping is None:
                row["reason"] = "'full' n/a: no mapping beside the engine"
                w = np.random.RandomState(0).randn(b, g.w_dim).astype(np.float32)  # speed does not depend on w
            elif g.mapping.max_batch is not None and b > g.mapping.max_batch:
                row["reason"] = f"'full' n/a: batch {b} > max_batch {g.mapping.max_batch} of {g.mapping.path.name}"
                w = np.concatenate([g.style(seed=i, truncation=TRUNCATION) for i in range(b)])
            else:
                z = g.latents(list(range(b)))
                full = functools.partial(g.generate, z=z, yaw=yaw, truncation=TRUNCATION)
                row["full"] = figures(timed(full, runs, warmup), b)
                w = g.style(z=z, truncation=TRUNCATION)
            row["from_w"] = figures(timed(functools.partial(g.generate, w=w, yaw=yaw), runs, warmup), b)
            row.update(peak_mib=mem.peak_mib(), base_mib=mem.base_mib, memory=mem.kind)
    return rows


PROBE_SEEDS, PROBE_YAWS = (0, 1, 2, 3), (-30.0, -10.0, 10.0, 30.0)
EXACT_DB = 200.0  # psnr_vs_fp32 of equal images (JSON has no inf)


def fp32_reference(path: str | os.PathLike[str]) -> Path | None:
    """What an engine's images are compared with (module docstring): an export folder, a student .safetensors, or
    None."""
    from nerfgan.runtime import spec as S

    p = Path(path)
    if p.is_dir():
        return p
    if p.suffix.lower() == ".safetensors":
        return p
    if (p.parent / S.MANIFEST).is_file():
        return p.parent
    return None


def probe_images(g: Any, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(w, final images) of the accuracy probe through Generator ``g``; ``w`` (4, w_dim) reuses a reference's codes."""
    if w is None:
        if g.mapping is not None:
            w = np.concatenate([g.style(seed=s, truncation=TRUNCATION) for s in PROBE_SEEDS])
        else:
            w = np.random.RandomState(0).randn(len(PROBE_SEEDS), g.w_dim).astype(np.float32)
    return w, g.generate(w=w, yaw=list(PROBE_YAWS))["image"]


def psnr_vs_fp32(g: Any, path: str, device: str, refs: dict[Path, tuple[np.ndarray, np.ndarray]]) -> float | None:
    """Mean PSNR of engine ``g``'s probe images against its FP32 student's (``refs`` caches the references)."""
    import nerfgan.runtime as nr
    from nerfgan.metrics import psnr

    ref = fp32_reference(path)
    if ref is None:
        return None
    if ref not in refs:
        with nr.load(ref, precision="fp32" if ref.is_dir() else None, device=device) as r:
            refs[ref] = probe_images(r)
    w, want = refs[ref]
    got = probe_images(g, w)[1]
    return float(np.mean(np.minimum(psnr(np.clip(got, -1, 1), np.clip(want, -1, 1)), EXACT_DB)))


def per_engine(values: Sequence[str | None], n: int, option: str) -> list[str | None]:
    """A repeated option for ``n`` engines: none (None for each), one for all, or one per engine."""
    if len(values) not in (0, 1, n):
        raise UsageError(f"{option}: give one for all engines or one per engine ({len(values)} given for {n} engines)")
    return list(values) * n if len(values) == 1 else (list(values) or [None] * n)


def check_replaceable_report(path: str | os.PathLike[str]) -> None:
    """-o may name a new file or an earlier bench report (replaced); any other file (a training run's config.json,
    say) is refused in one line before any work, nothing touched."""
    from nerfgan.errors import InputFileError, OutputError
    from nerfgan.jsonfile import read_json

    p = Path(path)
    if not os.path.lexists(p):
        return
    try:
        doc = read_json(p, "bench report", 64 << 20)
    except InputFileError:
        doc = None
    if not (isinstance(doc, dict) and doc.get("format") == BENCH_FORMAT):
        raise OutputError(f"-o {p}: exists and is not a nerfgan bench report; give a new file name (bench replaces "
                          "only its own reports) - nothing was changed")


def run_bench(teacher: str, engines: Sequence[str], precisions: Sequence[str | None] = (),
              batches: Sequence[int] = (1, 4, 16), device: str = "auto", runs: int = 5, warmup: int = 2,
              log: Callable[[str], None] = print, allow_other_teacher: bool = False,
              backends: Sequence[str | None] = ()) -> dict[str, Any]:
    """Time the teacher and every engine at every batch -> {'machine', 'settings', 'rows', 'comparisons', ...}
    (module docstring). ``backends``: like ``precisions``, none, one for all engines or one per engine.

    Engines distilled from another teacher are refused before any timing unless ``allow_other_teacher``.
    """
    if not engines:
        raise UsageError("--engine: give at least one engine")
    precs = per_engine(precisions, len(engines), "--precision")
    bends = per_engine(backends, len(engines), "--backend")
    for be in bends:
        if be not in (None, "onnxruntime", "openvino", "pt2"):
            raise UsageError(f"--backend: choose onnxruntime, openvino or pt2, got {be!r}")
    if "openvino" in bends:
        from nerfgan.runtime.openvino_backend import import_openvino

        import_openvino()  # a missing extra is one line before any timing
    if isinstance(runs, bool) or runs < 1 or isinstance(warmup, bool) or warmup < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    batches = parse_batches(",".join(str(b) for b in batches))
    if device not in DEVICES:
        raise UsageError(f"--device: choose one of {', '.join(DEVICES)}, got {device!r}")
    for e in engines:
        if not Path(e).exists():
            raise InputFileError(f"{e}: engine not found (expected an export folder, .onnx, .plan or .safetensors)")
    tdev = torch_device_for(device)
    checks = check_teachers(teacher, engines, precs, device, allow_other_teacher, log, bends)
    rows = bench_teacher(teacher, batches, tdev, runs, warmup, log)
    teacher_ips = {r["batch"]: r["full"]["img_s"] for r in rows}
    refs: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for k, (path, prec, be) in enumerate(zip(engines, precs, bends)):
        for r in bench_engine(f"engine {k + 1}", path, prec, batches, device, runs, warmup, log, be, refs):
            if r["full"] is not None:
                r["speedup"] = r["full"]["img_s"] / teacher_ips[r["batch"]]
            if r["from_w"] is not None:
                r["speedup_from_w"] = r["from_w"]["img_s"] / teacher_ips[r["batch"]]
            rows.append(r)
    return {"format": BENCH_FORMAT, "format_version": "1", "nerfgan_version": nerfgan.__version__,
            "machine": _machine(tdev),
            "settings": {"teacher": teacher, "engines": list(engines), "precisions": precs, "batches": list(batches),
                         "device": device, "runs": runs, "warmup": warmup, "truncation": TRUNCATION,
                         "backends": bends},
            "teacher_checks": checks, "rows": rows, "comparisons": compare_runtimes(rows)}


def _runtime(row: dict[str, Any]) -> str:
    """'onnxruntime', 'openvino', 'pytorch', 'tensorrt': the first word of a row's backend label."""
    return str(row["backend"]).split("-")[0]


def compare_runtimes(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each student file timed under two runtimes at one batch: which is faster, by how much.

    Figure: images/s 'full' when both rows have it, else 'from w'. The first row of each runtime counts (a
    second engine with the same file and runtime is not compared again). -> [{'file', 'batch', 'faster',
    'slower', 'ratio', 'figure'}].
    """
    firsts: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in rows:
        if r["model"] != "teacher" and r["status"] == "ok" and r.get("student"):
            firsts.setdefault((r["student"], r["batch"], _runtime(r)), r)
    out = []
    keys = list(firsts)
    for i, (file, batch, rt_a) in enumerate(keys):
        for file_b, batch_b, rt_b in keys[i + 1:]:
            if (file_b, batch_b) != (file, batch) or rt_b == rt_a:
                continue
            a, b = firsts[(file, batch, rt_a)], firsts[(file, batch, rt_b)]
            figure = "full" if a["full"] and b["full"] else "from_w"
            if not (a[figure] and b[figure]):
                continue
            ia, ib = a[figure]["img_s"], b[figure]["img_s"]
            fast, slow = (rt_a, rt_b) if ia >= ib else (rt_b, rt_a)
            out.append({"file": file, "batch": batch, "faster": fast, "slower": slow,
                        "ratio": max(ia, ib) / min(ia, ib), "figure": figure})
    return out


def check_teachers(teacher: str, engines: Sequence[str], precisions: Sequence[str | None], device: str,
                   allow_other: bool, log: Callable[[str], None],
                   backends: Sequence[str | None]) -> list[dict[str, Any]]:
    """Every engine's nerfgan.teacher.identity record against ``teacher``, before anything is timed."""
    import nerfgan.runtime as nr
    from nerfgan.runtime.parity import check_engine_teacher
    from nerfgan.teacher.checkpoint import load_teacher

    model = load_teacher(teacher, device="cpu")
    checks = []
    for path, prec, be in zip(engines, precisions, backends):
        with nr.load(path, precision=prec, device=device, backend=be) as g:
            checks.append(check_engine_teacher(model, g, str(path), teacher, allow_other))
        if checks[-1].get("note"):
            log(f"note: {path}: {checks[-1]['note']}")
    del model
    gc.collect()
    return checks


def _machine(torch_device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    ov = sys.modules.get("openvino")  # loaded by an engine run with --backend openvino; not imported here
    info["openvino"] = getattr(ov, "__version__", None) if ov is not None else None
    info["gpu"] = torch.cuda.get_device_name() if torch_device == "cuda" else None
    return info


def table_text(result: dict[str, Any]) -> str:
    """The result as an aligned table (one line per model and batch)."""
    head = ("model", "backend", "batch", "img/s", "p50 ms", "p90 ms", "img/s from w", "peak MiB", "x teacher",
            "PSNR vs FP32")
    lines = [head]

    def f(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append((r["model"], r["backend"], str(r["batch"]), f"n/a: {r['reason']}", "", "", "", "", "", ""))
            continue
        full, fw = r["full"] or {}, r["from_w"] or {}
        mem = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f} ({r['memory']})"
        sp = f(r["speedup"], ".2f")
        if r["model"] != "teacher" and r["speedup"] is None and r["speedup_from_w"] is not None:
            sp = f"{r['speedup_from_w']:.2f} (from w)"
        lines.append((r["model"], r["backend"], str(r["batch"]), f(full.get("img_s"), ".2f"), f(full.get("p50_ms"), ".1f"),
                      f(full.get("p90_ms"), ".1f"), f(fw.get("img_s"), ".2f") if r["model"] != "teacher" else "",
                      mem, sp, _db(r.get("psnr_vs_fp32")) if r["model"] != "teacher" else ""))
    widths = [max(len(line[i]) for line in lines if not line[3].startswith("n/a:") or i < 3) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    for k, e in enumerate(result["settings"]["engines"]):
        out.append(f"engine {k + 1}: {e}")
    out += [f"{r['model']}, batch {r['batch']}: {'; '.join(x for x in (r['reason'], r.get('note')) if x)}"
            for r in result["rows"] if r["status"] == "ok" and (r["reason"] or r.get("note"))]
    for c in result.get("comparisons", []):
        how = "images/s" if c["figure"] == "full" else "images/s from w"
        out.append(f"{c['faster']} is {c['ratio']:.2f}x faster than {c['slower']} for {Path(c['file']).name} "
                   f"on this CPU (batch {c['batch']}, {how})")
    s = result["settings"]
    out.append("PSNR vs FP32: the engine's images against its FP32 student's on a fixed probe (seeds 0-3, yaw -30..30)")
    out.append(f"median of {s['runs']} runs after {s['warmup']} warm-up(s); img/s and x teacher from 'full' "
               "(seeds -> images); peak memory: see nerfgan.runtime.bench")
    return "\n".join(out)


def _db(x: float | None) -> str:
    return "n/a" if x is None else ("exact" if x >= EXACT_DB else f"{x:.1f} dB")


@click.command("bench", short_help="Time the teacher and exported engines side by side.")
@click.option("--teacher", required=True, help="TEACHER.safetensors, or a built-in teacher name ('tiny').")
@click.option("--engine", "engines", multiple=True, required=True,
              help="Export folder, student .onnx / .plan or .safetensors; repeat for several engines.")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Student precision inside an export folder: once for all engines, or once per engine.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(["onnxruntime", "openvino", "pt2"]),
              help="What runs the student (default onnxruntime; pt2: the export's AOTInductor package): once for all "
                   "engines, or once per engine.")
@click.option("--batch", "batch_text", default="1,4,16", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True, help="Where to run.")
@click.option("--runs", type=int, default=5, show_default=True, help="Timed calls per figure (the median is reported).")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed calls before them.")
@out_option("json_path", "Also write the rows to this JSON file (old name: --json).", old=("--json",),
            type=click.Path(dir_okay=False), default=None)
@click.option("--allow-other-teacher", is_flag=True,
              help="Time engines that record another teacher's weights (the JSON says so).")
@dry_run_option("Print the resolved settings as JSON; load, time and write nothing.")
def bench_command(teacher: str, engines: tuple[str, ...], precisions: tuple[str, ...], backends: tuple[str, ...],
                  batch_text: str, device: str, runs: int, warmup: int, json_path: str | None,
                  allow_other_teacher: bool, dry_run: bool) -> None:
    """Time the teacher and exported engines: images/s, latency p50/p90, peak memory, speedup per batch.

    \b
    Examples:
      nerfgan bench --teacher tiny --engine qs/export --batch 1,4,16
      nerfgan bench --teacher tiny --engine qs/export --engine qs/export --precision fp32 --precision int8 -o bench.json
      nerfgan bench --teacher tiny --engine qs/export --engine qs/export --backend onnxruntime --backend openvino
    """
    batches = parse_batches(batch_text)
    if dry_run:
        echo_json({"teacher": teacher, "engines": list(engines), "precisions": list(precisions), "backends": list(backends),
                   "batches": list(batches), "device": device, "runs": runs, "warmup": warmup, "out": json_path,
                   "allow_other_teacher": allow_other_teacher})
        return
    if json_path:
        check_writable(json_path, "-o/--out file")
        check_replaceable_report(json_path)
    result = run_bench(teacher, engines, precisions, batches, device, runs, warmup,
                       log=lambda s: click.echo(s, err=True), allow_other_teacher=allow_other_teacher, backends=backends)
    click.echo(table_text(result))
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(result, indent=1, allow_nan=False))
        click.echo(f"wrote {json_path}")
