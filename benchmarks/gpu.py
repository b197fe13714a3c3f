"""GPU speed table: the ffhq512 teacher and its students on one card, in one run.

On a CUDA machine with PyTorch >= 2.6 (AOTInductor packages), from the repository root; nothing to
install, since the script puts this repository first on sys.path and imports only torch, numpy and
nerfgan's camera, sampling, metrics, teacher and student modules (no onnx, onnxruntime, safetensors,
click: the JSON's env.heavy_modules lists any that got imported anyway):

    PYTHONUNBUFFERED=1 timeout 590 python3 benchmarks/gpu.py --out $OUT

(``pip install -e . --no-deps`` first is not needed; on a machine with no network it may also fail,
since pip builds the package in an isolated environment that downloads setuptools.) On a CPU, the
script's own check with tiny random models:

    python benchmarks/gpu.py --device cpu --scale tiny --quick --out /tmp/gpu-bench

Models, built here with seeded random weights (speed does not depend on the values): the teacher
preset ffhq512-128 (EG3D's 512 px FFHQ model), its students from nerfgan.student.config.PRESETS
('ffhq512', and 'ffhq512-fast' when that preset exists); --scale tiny: the 'tiny' teacher config and
the 'tiny' (and 'tiny-fast') students.

Inputs at batch B: z of seeds 0..B-1, yaws spread over -30..30 degrees (0 for B = 1), pitch 0,
truncation 0.7 (as ``nerfgan bench``). Rows:

* teacher, full generation from z (mapping + synthesis: backbone, deterministic rendering,
  super-resolution; backbone noise 'const'), float32: 'eager' (the non-fused modulated convolution,
  what ``nerfgan bench`` times) and 'eager-fused' (upstream's grouped-convolution eval path);
* each student: forward(w, c) -> (image, image_raw), the graph student.onnx holds, with w the
  teacher mapping's code of the same seeds (computed once, outside the timing) by path:

  - eager: PyTorch eager, float32;
  - fp16: autocast float16 + channels_last weights and activations;
  - cudagraph: the fp16 path captured once per batch size in a torch.cuda.CUDAGraph (static input
    buffers, copy in, replay). Chosen over torch.compile(mode='reduce-overhead'): it needs no compile
    time inside the budget and runs fp16's own kernels, so the difference between the two rows is
    the launch overhead alone. A forward that makes the host wait for the GPU (see 'host syncs') is
    refused before the capture, with the count as the reason;
  - aoti: torch.export of forward(w, c) with a dynamic batch (1..max(64, largest batch)), compiled on
    this device by torch._inductor.aoti_compile_and_package into a .pt2 package (in a temporary
    folder) and run through torch._inductor.aoti_load_package; float32;
  - aoti-fp16: the same with forward(w, c) under autocast float16.

  Paths run in the order --paths gives them; the default, eager, fp16, cudagraph, aoti-fp16, aoti, puts
  the compiles last and the likelier faster compile first, so a spent budget skips the least useful rows.

Figures: --warmup untimed calls, then up to --runs timed calls (each ended by torch.cuda.synchronize;
wall clock, perf_counter), stopped early after --row-cap-s seconds but never below 3. p50 / p90 =
median / 90th percentile latency of one batch call; images/s = B / p50. Peak memory: CUDA,
torch.cuda.max_memory_allocated over warm-up and timed calls, reset before them ('peak MiB'; 'base
MiB' is what was allocated when it was reset: every model's weights, and the CUDA graphs' pools); CPU,
the process's peak RSS (VmHWM, reset through /proc/self/clear_refs). 'x teacher' = images/s over the
faster teacher row at the same batch. PSNR (dB, images clipped to [-1, 1]) and max |difference| of
each student path's image against the same student's eager float32 image on the same inputs: how far
the FP16 paths move the output. Host syncs (CUDA): how many times one call made the host wait for the
GPU (torch.cuda.set_sync_debug_mode('warn') counts them), each a stall of the launch queue. The goal
checked on an H200: the best student path >= 10x the teacher
and >= 1,000 images/s at batch 16, >= 5x at batch 1.

The run stops starting new work once --budget-s seconds have passed (default 480; a compile needs
--compile-reserve-s left): the rows not run are listed as skipped, with the reason. The table is
rewritten after every row (gpu_bench.json, gpu_bench.md, gpu_bench.log in --out), so a run killed
from outside still leaves every finished row; on SIGTERM (``timeout``'s signal) it also notes where it
stopped and exits 1. Every step is guarded: a failure is a row's status and reason (its traceback in
the log), and the run goes on.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this repository's nerfgan, installed or not

import numpy as np  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.generator import EG3D

FORMAT = "nerfgan-gpu-bench"
TRUNCATION = 0.7
SCALES = {  # --scale -> (teacher preset, student presets tried in order; absent ones are left out)
    "ffhq512": ("ffhq512-128", ("ffhq512", "ffhq512-fast")),
    "tiny": ("tiny", ("tiny", "tiny-fast")),
}
TEACHER_PATHS = ("eager", "eager-fused")
STUDENT_PATHS = ("eager", "fp16", "cudagraph", "aoti-fp16", "aoti")  # the default order: compiles last, fp16 first
PRECISION = {"eager": "fp32", "eager-fused": "fp32", "fp16": "fp16", "cudagraph": "fp16", "aoti": "fp32",
             "aoti-fp16": "fp16"}
CUDA_ONLY = ("cudagraph",)
COMPILED = ("aoti", "aoti-fp16")
HEAVY_MODULES = ("onnx", "onnxruntime", "onnxslim", "safetensors", "click", "openvino", "tensorrt")
GOAL = {"batch": 16, "ratio": 10.0, "img_s": 1000.0, "batch_small": 1, "ratio_small": 5.0}
FILES = ("gpu_bench.json", "gpu_bench.md", "gpu_bench.log")


class UsageError(Exception):
    """A bad option: printed as one line, exit 2."""


class Stopped(BaseException):
    """SIGTERM (e.g. from ``timeout``): not an Exception, so no row's guard catches it; the run writes what it has."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Stopped(f"signal {signum}")


# --- bookkeeping ----------------------------------------------------------------------------------
@dataclass
class Run:
    """The table and log of one run, rewritten to ``out`` after every change."""

    out: Path
    budget_s: float
    meta: dict[str, Any]
    t0: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{self.elapsed():6.1f} s] {msg}"
        print(line, flush=True)
        self.lines.append(line)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        self.write()
        return row

    def skip_reason(self, reserve_s: float = 0.0) -> str | None:
        if self.left() <= 0:
            return f"skipped: the --budget-s {self.budget_s:g} s budget was spent ({self.elapsed():.0f} s elapsed)"
        if self.left() < reserve_s:
            return (f"skipped: {self.left():.0f} s of the --budget-s {self.budget_s:g} s budget left, under the "
                    f"--compile-reserve-s {reserve_s:g} s a compile needs")
        return None

    def document(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, **self.meta, "elapsed_s": round(self.elapsed(), 1),
                "budget_s": self.budget_s, "goal": goal(self.rows, self.meta["device"]), "notes": self.notes,
                "rows": self.rows}

    def write(self) -> None:
        doc = self.document()
        doc["env"]["heavy_modules"] = sorted(m for m in HEAVY_MODULES if m in sys.modules)
        _write(self.out / "gpu_bench.json", json.dumps(doc, indent=1) + "\n")
        _write(self.out / "gpu_bench.md", markdown(doc))
        _write(self.out / "gpu_bench.log", "\n".join(self.lines) + "\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def new_row(model: str, preset: str, path: str, batch: int) -> dict[str, Any]:
    return {"model": model, "preset": preset, "path": path, "precision": PRECISION[path], "batch": batch,
            "status": "ok", "reason": None, "img_s": None, "p50_ms": None, "p90_ms": None, "runs": None,
            "peak_mib": None, "base_mib": None, "memory": None, "ratio_to_teacher": None, "psnr_vs_eager_db": None,
            "identical_to_eager": None, "max_abs_vs_eager": None, "setup_s": None, "host_syncs": None}


def failure(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"failed: {type(e).__name__}: {first[:300]}"


# --- measuring ------------------------------------------------------------------------------------
def _status_kib(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


class Memory:
    """Peak memory of one measurement: 'cuda-allocated' (torch.cuda.max_memory_allocated), else 'rss'."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.kind: str | None = None
        self.base_mib: float | None = None

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.kind, self.base_mib = "cuda-allocated", torch.cuda.memory_allocated() / 2**20
            return
        rss = _status_kib("VmRSS")
        self.base_mib = None if rss is None else rss / 1024
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
            self.kind = "rss"
        except OSError:
            self.kind = None

    def peak_mib(self) -> float | None:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        hwm = _status_kib("VmHWM") if self.kind == "rss" else None
        return None if hwm is None else hwm / 1024


def timed(fn: Callable[[], object], sync: Callable[[], None], warmup: int, runs: int, cap_s: float) -> list[float]:
    """Seconds of up to ``runs`` calls after ``warmup`` untimed ones; stops after ``cap_s`` s (>= 3 calls)."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    while len(times) < runs and (len(times) < 3 or sum(times) < cap_s):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def host_syncs(fn: Callable[[], object]) -> int:
    """How many times one call of ``fn`` makes the host wait for the GPU (torch.cuda's sync debug mode counts
    each: a CPU tensor copied to the GPU, .item(), nonzero, ...). A CUDA graph cannot capture such a call."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(run: Run, row: dict[str, Any], fn: Callable[[], object], device: torch.device, args: argparse.Namespace) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    mem = Memory(device)
    with torch.no_grad():
        mem.start()
        times = timed(fn, sync, args.warmup, args.runs, args.row_cap_s)
        peak = mem.peak_mib()
        syncs = host_syncs(fn) if device.type == "cuda" else None
    p50 = statistics.median(times)
    row.update(img_s=row["batch"] / p50, p50_ms=1000 * p50, p90_ms=1000 * float(np.percentile(times, 90)),
               runs=len(times), peak_mib=peak, base_mib=mem.base_mib, memory=mem.kind, host_syncs=syncs)


def compare(row: dict[str, Any], image: torch.Tensor, reference: np.ndarray) -> None:
    from nerfgan.metrics import psnr

    got = image.detach().float().cpu().numpy()
    diff = float(np.abs(got.astype(np.float64) - reference).max())
    p = psnr(got, reference)
    row.update(max_abs_vs_eager=diff, identical_to_eager=diff == 0.0,
               psnr_vs_eager_db=float(np.mean(p)) if np.all(np.isfinite(p)) else None)


# --- models and inputs ----------------------------------------------------------------------------
class StudentForward(torch.nn.Module):
    """forward(w (B, w_dim), c (B, 25)) -> (image (B, 3, H, W), image_raw (B, 3, R, R)), float32 out.

    What student.onnx holds; with ``autocast`` the student runs under torch.autocast(float16). ``cache``:
    autocast's cast-weight cache (must be off inside a CUDA graph capture)."""

    def __init__(self, student: torch.nn.Module, device_type: str, autocast: bool, cache: bool = True) -> None:
        super().__init__()
        self.g, self.device_type, self.autocast, self.cache = student, device_type, autocast, cache

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=torch.float16, enabled=self.autocast, cache_enabled=self.cache):
            out = self.g(w, c)
        return out.image.float(), out.image_raw.float()


@dataclass
class Inputs:
    z: torch.Tensor  # (B, z_dim)
    c: torch.Tensor  # (B, 25) render cameras
    c_cond: torch.Tensor  # (B, 25) conditioning cameras (frontal)
    w: torch.Tensor  # (B, w_dim) the teacher mapping's truncated code


def make_inputs(teacher: EG3D, batch: int, device: torch.device) -> Inputs:
    from nerfgan.sampling import z_from_seed
    from nerfgan.teacher.views import cameras_for

    cfg = teacher.config
    z = torch.from_numpy(np.concatenate([z_from_seed(i, cfg.z_dim) for i in range(batch)])).to(device)
    yaws = np.linspace(-30.0, 30.0, batch) if batch > 1 else np.zeros(1)
    cams = [cameras_for(teacher, float(y), 0.0) for y in yaws]
    c = torch.from_numpy(np.stack([cam[0] for cam in cams])).to(device)
    c_cond = torch.from_numpy(np.stack([cam[1] for cam in cams])).to(device)
    with torch.no_grad():
        w = teacher.mapping(z, c_cond, TRUNCATION)[:, 0].contiguous()
    return Inputs(z, c, c_cond, w)


def build(scale: str, students: Sequence[str], device: torch.device) -> tuple[EG3D, dict[str, StudentGenerator]]:
    from nerfgan.student.config import student_preset
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.checkpoint import build_teacher
    from nerfgan.teacher.config import preset

    torch.manual_seed(0)
    teacher = build_teacher(preset(SCALES[scale][0]))
    models = {}
    for name in students:
        torch.manual_seed(1)
        student = StudentGenerator.from_teacher(student_preset(name, teacher.config), teacher)
        models[name] = student.eval().requires_grad_(False).to(device)
    return teacher.to(device), models


# --- paths ----------------------------------------------------------------------------------------
Setup = Callable[[torch.nn.Module, dict[int, Inputs]], dict[int, Callable[[], torch.Tensor]]]


def _calls(module: Callable[..., Any], inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
    """One call per batch size: module(w, c)[0], the image."""

    def call(x: Inputs) -> Callable[[], torch.Tensor]:
        return lambda: module(x.w, x.c)[0]

    return {b: call(x) for b, x in inputs.items()}


def setup_eager(student: torch.nn.Module, inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
    dev = inputs[next(iter(inputs))].w.device.type
    return _calls(StudentForward(student, dev, autocast=False), inputs)


def _fp16_module(student: torch.nn.Module, device_type: str, cache: bool = True) -> StudentForward:
    g = copy.deepcopy(student).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return StudentForward(g, device_type, autocast=True, cache=cache)


def setup_fp16(student: torch.nn.Module, inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
    dev = inputs[next(iter(inputs))].w.device.type
    return _calls(_fp16_module(student, dev), inputs)


def setup_cudagraph(student: torch.nn.Module, inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
    module = _fp16_module(student, "cuda", cache=False)
    calls: dict[int, Callable[[], torch.Tensor]] = {}
    for b, x in inputs.items():
        w, c = x.w.clone(), x.c.clone()  # the graph's static input buffers
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture (cuDNN autotuning, allocator)
                module(w, c)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            syncs = host_syncs(lambda: module(w, c))
        if syncs:  # checked first: a failed capture can leave the CUDA context unusable for the later rows
            raise RuntimeError(f"the fp16 forward makes the host wait for the GPU {syncs} times per call (e.g. a CPU "
                               "tensor copied to the GPU); a CUDA graph cannot capture it")
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            image, _ = module(w, c)

        def call(graph: torch.cuda.CUDAGraph = graph, w: torch.Tensor = w, c: torch.Tensor = c, x: Inputs = x,
                 image: torch.Tensor = image) -> torch.Tensor:
            w.copy_(x.w)
            c.copy_(x.c)
            graph.replay()
            return image

        calls[b] = call
    return calls


def make_setup_aoti(fp16: bool, workdir: Path, max_batch: int, log: Callable[[str], None]) -> Setup:
    def setup(student: torch.nn.Module, inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.export's and inductor's notes on their own deprecated internals
            return compile_student(student, inputs)

    def compile_student(student: torch.nn.Module, inputs: dict[int, Inputs]) -> dict[int, Callable[[], torch.Tensor]]:
        import torch._inductor

        x = next(iter(inputs.values()))
        dev = x.w.device.type
        module = StudentForward(student, dev, autocast=fp16).eval()
        # Example batch 2: a traced batch of 1 would be specialised to 1 (0/1 specialisation).
        ex = make_pair(x, 2)
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        t0 = time.perf_counter()
        with torch.no_grad():
            ep = torch.export.export(module, ex, dynamic_shapes=({0: batch}, {0: batch}), strict=False)
        log(f"  torch.export: {time.perf_counter() - t0:.1f} s; compiling with AOTInductor")
        pkg = workdir / f"student-{id(student)}-{'fp16' if fp16 else 'fp32'}.pt2"
        t0 = time.perf_counter()
        path = torch._inductor.aoti_compile_and_package(ep, package_path=str(pkg))
        log(f"  aoti_compile_and_package: {time.perf_counter() - t0:.1f} s, {Path(path).stat().st_size / 2**20:.0f} MiB")
        runner = torch._inductor.aoti_load_package(str(path))
        return _calls(runner, inputs)

    return setup


def make_pair(x: Inputs, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, c) of ``n`` rows from ``x`` (rows repeated when x has fewer)."""
    idx = torch.arange(n, device=x.w.device) % x.w.shape[0]
    return x.w[idx].contiguous(), x.c[idx].contiguous()


# --- report ---------------------------------------------------------------------------------------
def goal(rows: Sequence[dict[str, Any]], device: str) -> dict[str, Any]:
    """The issue's target per student preset, from the best ok row at each batch (None: not measured)."""
    out: dict[str, Any] = {"target": (f"best student path >= {GOAL['ratio']:g}x the teacher and >= {GOAL['img_s']:g} "
                                      f"images/s at batch {GOAL['batch']}, >= {GOAL['ratio_small']:g}x at batch "
                                      f"{GOAL['batch_small']}, on an H200"), "device": device, "students": {}}
    for preset in dict.fromkeys(r["preset"] for r in rows if r["model"] == "student"):
        res: dict[str, Any] = {}
        for b, key in ((GOAL["batch"], "large"), (GOAL["batch_small"], "small")):
            ok = [r for r in rows if r["model"] == "student" and r["preset"] == preset and r["batch"] == b
                  and r["status"] == "ok" and r["ratio_to_teacher"] is not None]
            best = max(ok, key=lambda r: r["img_s"], default=None)
            res[key] = None if best is None else {"batch": b, "path": best["path"], "img_s": round(best["img_s"], 1),
                                                  "ratio": round(best["ratio_to_teacher"], 2)}
        big, small = res["large"], res["small"]
        res["met"] = None if big is None or small is None else bool(
            big["ratio"] >= GOAL["ratio"] and big["img_s"] >= GOAL["img_s"] and small["ratio"] >= GOAL["ratio_small"])
        out["students"][preset] = res
    return out


def _f(v: Any, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def markdown(doc: dict[str, Any]) -> str:
    env = doc["env"]
    lines = [f"# nerfgan GPU table ({doc['scale']}, {doc['device']})", "",
             f"torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
             f"cudnn.benchmark {env['cudnn_benchmark']}, cuDNN TF32 {env['cudnn_tf32']}, matmul TF32 {env['matmul_tf32']}; "
             f"warm-up {doc['settings']['warmup']}, up to {doc['settings']['runs']} timed calls per row; "
             f"{doc['elapsed_s']:.0f} s of a {doc['budget_s']:g} s budget", "",
             f"`{doc['command']}`", "",
             "| model | preset | path | precision | batch | img/s | p50 ms | p90 ms | peak MiB | base MiB | x teacher "
             "| PSNR vs eager dB | max abs vs eager | setup s | host syncs | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        psnr = "identical" if r["identical_to_eager"] else _f(r["psnr_vs_eager_db"], ".2f")
        lines.append(f"| {r['model']} | {r['preset']} | {r['path']} | {r['precision']} | {r['batch']} | "
                     f"{_f(r['img_s'], '.1f')} | {_f(r['p50_ms'], '.2f')} | {_f(r['p90_ms'], '.2f')} | "
                     f"{_f(r['peak_mib'], '.0f')} | {_f(r['base_mib'], '.0f')} | {_f(r['ratio_to_teacher'], '.2f')} | "
                     f"{psnr} | {_f(r['max_abs_vs_eager'], '.2g')} | {_f(r['setup_s'], '.1f')} | {_f(r['host_syncs'], 'd')} | "
                     f"{r['status'] if r['reason'] is None else r['reason']} |")
    g = doc["goal"]
    lines += ["", f"Goal: {g['target']}."]
    for preset, res in g["students"].items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[res["met"]]
        parts = [f"batch {v['batch']}: {v['path']} {v['img_s']} img/s, {v['ratio']}x" for v in (res["large"], res["small"]) if v]
        lines.append(f"- {preset}: {verdict} on {g['device']} ({'; '.join(parts) or 'no rows'})")
    lines += [""] + [f"Note: {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


# --- the run --------------------------------------------------------------------------------------
def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_bench.{json,md,log} (default: $OUT)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--scale", default="ffhq512", choices=sorted(SCALES))
    ap.add_argument("--students", default=None, help="student presets, comma-separated (default: the scale's, those present)")
    ap.add_argument("--paths", default=None, help=f"student paths, comma-separated, of {', '.join(STUDENT_PATHS)} "
                    "(default: all on CUDA; eager,aoti on CPU)")
    ap.add_argument("--teacher-paths", default=None, help=f"of {', '.join(TEACHER_PATHS)} (default: both; eager with --quick)")
    ap.add_argument("--batches", default=None, help="default 1,16 (--quick: 1,2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default 5 on CUDA, 1 on CPU)")
    ap.add_argument("--runs", type=int, default=None,
                    help="timed calls per row at most (default 30 on CUDA, 5 on CPU; --quick 3)")
    ap.add_argument("--row-cap-s", type=float, default=20.0, help="stop a row's timed calls after this many seconds (>= 3 calls)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no new work after this many seconds")
    ap.add_argument("--compile-reserve-s", type=float, default=None,
                    help="start an AOTInductor compile only with this much budget left (default 120 on CUDA, 60 on CPU)")
    ap.add_argument("--quick", action="store_true", help="a short check: batches 1,2, 1 warm-up, 3 runs, teacher 'eager' only")
    ap.add_argument("--force", action="store_true", help="replace gpu_bench.* files already in --out")
    args = ap.parse_args(argv)

    if not args.out:
        raise UsageError("--out: no folder given and $OUT is not set")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    existing = [f for f in FILES if (out / f).exists()]
    if existing and not args.force:
        raise UsageError(f"--out: {out} already holds {', '.join(existing)}; pass --force to replace them")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: torch {torch.__version__} sees no CUDA device (use --device cpu)")
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index is not None):
        raise UsageError(f"--device: expected cuda, cuda:N or cpu, got {args.device!r}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) here")
    cuda = args.device != "cpu"
    args.paths = _names(args.paths or (",".join(STUDENT_PATHS) if cuda else "eager,aoti"), STUDENT_PATHS, "--paths")
    args.teacher_paths = _names(args.teacher_paths or ("eager" if args.quick else ",".join(TEACHER_PATHS)),
                                TEACHER_PATHS, "--teacher-paths")
    try:
        args.batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,16")).split(",")]
    except ValueError:
        args.batches = []
    if not args.batches or min(args.batches) < 1 or len(set(args.batches)) != len(args.batches):
        raise UsageError("--batches: expected distinct positive integers separated by commas (e.g. 1,16)")
    from nerfgan.student.config import PRESETS

    candidates = SCALES[args.scale][1]
    args.students = (_names(args.students, tuple(PRESETS), "--students") if args.students
                     else [s for s in candidates if s in PRESETS])
    args.missing_students = [s for s in candidates if s not in PRESETS]
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick or not cuda else 5)
    args.runs = args.runs if args.runs is not None else (3 if args.quick else 30 if cuda else 5)
    if args.warmup < 0 or args.runs < 3:
        raise UsageError("--warmup must be >= 0 and --runs >= 3")
    args.compile_reserve_s = args.compile_reserve_s if args.compile_reserve_s is not None else (120.0 if cuda else 60.0)
    return args


def _names(text: str, allowed: Sequence[str], option: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise UsageError(f"{option}: unknown {', '.join(bad) or 'empty list'}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def environment(device: torch.device) -> tuple[str, dict[str, Any]]:
    import platform

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "numpy": np.__version__,
                           "python": platform.python_version(),
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                           "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "threads": torch.get_num_threads()}
    try:
        import triton  # type: ignore[import-not-found, unused-ignore]

        env["triton"] = triton.__version__
    except Exception:  # triton is optional (CPU builds)
        env["triton"] = None
    return name, env


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
    except UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed shapes per row: let cuDNN pick its fastest kernels
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name, env = environment(device)
    meta = {"device": name, "scale": args.scale, "command": " ".join(["python", "benchmarks/gpu.py", *sys.argv[1:]]),
            "env": env, "settings": {"warmup": args.warmup, "runs": args.runs, "row_cap_s": args.row_cap_s,
                                     "batches": args.batches, "paths": args.paths, "teacher_paths": args.teacher_paths,
                                     "students": args.students, "truncation": TRUNCATION}}
    run = Run(out, args.budget_s, meta)
    run.log(f"{name}; torch {env['torch']}, CUDA {env['cuda']}, triton {env['triton']}; budget {args.budget_s:g} s")
    if args.missing_students:
        run.notes.append(f"student presets not in this nerfgan's PRESETS, left out: {', '.join(args.missing_students)}")
        run.log(run.notes[-1])
    signal.signal(signal.SIGTERM, _on_sigterm)
    with tempfile.TemporaryDirectory(prefix="nerfgan-gpu-") as tmp:
        try:
            bench(run, args, device, Path(tmp))
        except Exception as e:  # building the models failed: nothing can be timed; the table says why
            run.log(traceback.format_exc())
            run.notes.append(f"stopped: {failure(e)}")
        except Stopped as e:
            run.notes.append(f"stopped by {e} after {run.elapsed():.0f} s: the row in progress and all after it were not run")
            run.log(run.notes[-1])
            run.write()
            return 1
    run.log(f"done in {run.elapsed():.0f} s; wrote {', '.join(str(out / f) for f in FILES)}")
    run.write()
    print()
    print(markdown(run.document()))
    return 0


def bench(run: Run, args: argparse.Namespace, device: torch.device, workdir: Path) -> None:
    t0 = time.perf_counter()
    teacher, students = build(args.scale, args.students, device)
    inputs = {b: make_inputs(teacher, b, device) for b in args.batches}
    run.log(f"built teacher {SCALES[args.scale][0]} and students {', '.join(students)} on {device} "
            f"in {time.perf_counter() - t0:.1f} s")

    best_teacher: dict[int, float] = {}
    for path in args.teacher_paths:
        fused = path == "eager-fused"
        for b in args.batches:
            row = new_row("teacher", SCALES[args.scale][0], path, b)
            row["reason"] = run.skip_reason()
            if row["reason"] is None:
                x = inputs[b]

                def full(x: Inputs = x, fused: bool = fused) -> torch.Tensor:
                    ws = teacher.mapping(x.z, x.c_cond, TRUNCATION)
                    return teacher.synthesis(ws, x.c, noise_mode="const", fused=fused).image

                try:
                    measure(run, row, full, device, args)
                    best_teacher[b] = max(best_teacher.get(b, 0.0), row["img_s"])
                    row["ratio_to_teacher"] = None
                except Exception as e:
                    row["reason"] = failure(e)
                    run.log(traceback.format_exc())
                    _free(device)
            _finish(run, row)
    for row in run.rows:
        if row["model"] == "teacher" and row["img_s"] is not None:
            row["ratio_to_teacher"] = row["img_s"] / best_teacher[row["batch"]]
    _free(device)

    references: dict[tuple[str, int], np.ndarray] = {}

    def reference(sname: str, b: int) -> np.ndarray:
        """The student's eager float32 image at batch b, the PSNR's reference (computed once, when first needed)."""
        if (sname, b) not in references:
            with torch.no_grad():
                image = StudentForward(students[sname], device.type, autocast=False)(inputs[b].w, inputs[b].c)[0]
            references[(sname, b)] = image.cpu().numpy().astype(np.float64)
        return references[(sname, b)]

    setups: dict[str, Setup] = {"eager": setup_eager, "fp16": setup_fp16, "cudagraph": setup_cudagraph,
                                "aoti": make_setup_aoti(False, workdir, max(64, *args.batches), run.log),
                                "aoti-fp16": make_setup_aoti(True, workdir, max(64, *args.batches), run.log)}
    fn: Callable[[], torch.Tensor] | None = None
    setup_s = 0.0
    for path in args.paths:  # in the order given: rows of cheap paths come before compiles that may hit the budget
        for sname, student in students.items():
            rows = [new_row("student", sname, path, b) for b in args.batches]
            reason = ("skipped: needs CUDA" if path in CUDA_ONLY and device.type != "cuda"
                      else run.skip_reason(args.compile_reserve_s if path in COMPILED else 0.0))
            calls: dict[int, Callable[[], torch.Tensor]] = {}
            if reason is None:
                run.log(f"student {sname}: setting up {path}")
                t0 = time.perf_counter()
                try:
                    with torch.no_grad():
                        calls = setups[path](student, inputs)
                except Exception as e:
                    reason = failure(e)
                    run.log(traceback.format_exc())
                    _free(device)
                setup_s = time.perf_counter() - t0
            for row in rows:
                row["reason"] = reason if reason is not None else run.skip_reason()
                if row["reason"] is None:
                    row["setup_s"] = setup_s
                    try:
                        fn = calls[row["batch"]]
                        with torch.no_grad():
                            compare(row, fn(), reference(sname, row["batch"]))
                        measure(run, row, fn, device, args)
                        if row["batch"] in best_teacher:
                            row["ratio_to_teacher"] = row["img_s"] / best_teacher[row["batch"]]
                    except Exception as e:
                        row["reason"] = failure(e)
                        run.log(traceback.format_exc())
                        _free(device)
                _finish(run, row)
            calls.clear()  # frees the path's modules, graphs and packages before the next one
            fn = None
            _free(device)


def _finish(run: Run, row: dict[str, Any]) -> None:
    if row["reason"] is not None:
        row["status"] = row["reason"].split(":")[0]
        row.update(img_s=None, p50_ms=None, p90_ms=None)
    run.add(row)
    what = f"{row['model']} {row['preset']} {row['path']} b{row['batch']}"
    if row["status"] == "ok":
        extra = "" if row["psnr_vs_eager_db"] is None else f", {row['psnr_vs_eager_db']:.1f} dB vs eager"
        extra += "" if row["ratio_to_teacher"] is None else f", {row['ratio_to_teacher']:.2f}x teacher"
        run.log(f"{what}: {row['img_s']:.1f} img/s, p50 {row['p50_ms']:.2f} ms, peak {_f(row['peak_mib'], '.0f')} MiB{extra}")
    else:
        run.log(f"{what}: {row['reason']}")


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        try:
            torch.cuda.empty_cache()
        except Exception:  # a broken CUDA context: later rows will say so
            pass


if __name__ == "__main__":
    sys.exit(main())
