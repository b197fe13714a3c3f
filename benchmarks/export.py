"""Export speed and INT8 quality on this CPU: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8.

    python benchmarks/export.py                                   # tiny and ffhq512 students
    python benchmarks/export.py --configs tiny --student run/student.safetensors   # a trained tiny student

For each student config: a teacher (the built-in tiny one, or the ffhq512-128 preset with seeded
random weights), a student made from it (seeded; or --student for the tiny row), a calibration file
of --calib-n teacher renders, and nerfgan-export with --int8 (every validation gate runs). Then, in
the same process and on the same inputs (w and cameras of the calibration samples):

* images/s of the student's (w, c) -> image graph at each --batches size: PyTorch eager (float32),
  ONNX Runtime FP32 and ONNX Runtime INT8 (CPU provider); median of --repeats calls after --warmup;
  the teacher's full generation at batch 1 in the same run, for the ratio;
* PSNR (dB, images in [-1, 1]) against the teacher's renders of the FP32 and INT8 students, and of
  INT8 against FP32, on the calibration samples (seed 1: held out from training, which uses seed 0).

An untrained student is ~7 dB from its teacher, so its "vs teacher" PSNRs measure nothing but the
pipeline; pass a distilled student (--student) for meaningful figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, warmup: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of ``repeats`` calls after ``warmup`` (nerfgan bench's timing loop)."""
    from nerfgan.runtime.bench import timed as bench_timed

    return statistics.median(bench_timed(fn, repeats, warmup))


def run_config(name: str, student_path: str | None, batches: list[int], calib_n: int, warmup: int, repeats: int,
               work: Path) -> list[dict[str, object]]:
    import onnxruntime as ort

    from nerfgan.calibrate.calibset import load_calibration_set, make_calibration_set
    from nerfgan.export.pipeline import ExportConfig, export
    from nerfgan.export.to_onnx import StudentGraph
    from nerfgan.metrics import psnr
    from nerfgan.student.checkpoint import load_student, save_student
    from nerfgan.student.config import student_preset
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.checkpoint import build_teacher, load_teacher, save_teacher
    from nerfgan.teacher.config import preset

    torch.manual_seed(0)
    if name == "tiny":
        teacher_path: str = "tiny"
        teacher = load_teacher("tiny")
    else:
        teacher = build_teacher(preset("ffhq512-128"))
        teacher_path = str(save_teacher(teacher, work / f"{name}-teacher.safetensors"))
    if student_path is None:
        student = StudentGenerator.from_teacher(student_preset(name, teacher.config), teacher).eval()
        student_path = str(save_student(student, work / f"{name}-student.safetensors"))
    student = load_student(student_path)
    t0 = time.perf_counter()
    # seed 1: samples no student saw (nerfgan train and the quickstart draw their training samples with seed 0)
    calib_path = make_calibration_set(teacher_path, student_path, calib_n, work / f"{name}-calib.npz", seed=1,
                                      progress=True)
    print(f"[{name}] calibration: {calib_n} teacher renders in {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    out = work / f"{name}-export"
    manifest = export(student_path, out, ExportConfig(int8=True, calib=str(calib_path)), log=print)
    print(f"[{name}] export with validation: {time.perf_counter() - t0:.0f} s", flush=True)
    cs = load_calibration_set(calib_path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sessions = {p: ort.InferenceSession(str(out / f), so, providers=["CPUExecutionProvider"])
                for p, f in (("fp32", "student.onnx"), ("int8", "student_int8.onnx"))}
    inputs = cs.student_inputs()
    outs = {p: s.run(["image"], inputs)[0] for p, s in sessions.items()}
    teacher_img = cs.teacher_images()["image"]
    quality = {"fp32_vs_teacher": float(psnr(outs["fp32"], teacher_img).mean()),
               "int8_vs_teacher": float(psnr(outs["int8"], teacher_img).mean()),
               "int8_vs_fp32": float(psnr(outs["int8"], outs["fp32"]).mean())}
    graph = StudentGraph(student).eval()
    z = torch.randn(1, teacher.config.z_dim)
    c = torch.from_numpy(inputs["c"][:1])
    with torch.no_grad():
        t_teacher = timed(lambda: teacher(z, c, c, truncation_psi=0.7), warmup, repeats)
    rows = []
    for b in batches:
        idx = np.arange(b) % len(cs)
        feed = {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}
        w, cc = torch.from_numpy(feed["w"]), torch.from_numpy(feed["c"])
        with torch.no_grad():
            t_torch = timed(lambda: graph(w, cc), warmup, repeats)
        t_fp32 = timed(lambda: sessions["fp32"].run(["image"], feed), warmup, repeats)
        t_int8 = timed(lambda: sessions["int8"].run(["image"], feed), warmup, repeats)
        rows.append({"config": name, "batch": b, "teacher": 1 / t_teacher, "pytorch": b / t_torch,
                     "ort_fp32": b / t_fp32, "ort_int8": b / t_int8, **quality,
                     "onnx_mb": next(a["bytes"] for a in manifest["artifacts"] if a["file"] == "student.onnx") / 1e6})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,ffhq512", help="student presets: tiny, ffhq512")
    ap.add_argument("--student", default=None, help="a trained student checkpoint for the tiny row")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--calib-n", type=int, default=8, help="teacher renders for calibration and the INT8 PSNR")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            rows += run_config(name, args.student if name == "tiny" else None, [int(b) for b in args.batches.split(",")],
                               args.calib_n, args.warmup, args.repeats, Path(tmp))
    print(f"\nCPU, {torch.get_num_threads()} threads, torch {torch.__version__}; images/s (ratio to the teacher's "
          "full generation at batch 1); PSNR dB on the calibration samples")
    print("| student | batch | teacher img/s | PyTorch eager | ORT FP32 | ORT INT8 | FP32 vs teacher | INT8 vs teacher "
          "| INT8 vs FP32 | student.onnx MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = float(r["teacher"])  # type: ignore[arg-type]
        cells = [f"{float(r[k]):.2f} ({float(r[k]) / t:.1f}x)" for k in ("pytorch", "ort_fp32", "ort_int8")]  # type: ignore[arg-type]
        print(f"| {r['config']} | {r['batch']} | {t:.2f} | " + " | ".join(cells) +
              f" | {r['fp32_vs_teacher']:.2f} | {r['int8_vs_teacher']:.2f} | {r['int8_vs_fp32']:.2f} | {r['onnx_mb']:.0f} |")


if __name__ == "__main__":
    main()
