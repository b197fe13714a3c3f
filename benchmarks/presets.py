"""Student presets side by side: FLOPs, parameters and CPU speed of default vs '-fast' students.

    python benchmarks/presets.py                                  # tiny, tiny-fast, ffhq512, ffhq512-fast
    python benchmarks/presets.py --presets tiny,tiny-fast --work /tmp/fast_bench
    python benchmarks/presets.py --presets tiny,tiny-fast --student tiny=run_a/student.safetensors \\
        --student tiny-fast=run_b/student.safetensors --calib tiny=calib.npz      # trained students, + INT8

For each preset: a teacher (the built-in tiny one for tiny*, the ffhq512-128 preset with seeded random
weights for ffhq512*), a student made from it with StudentGenerator.from_teacher (seeded; or --student),
exported with nerfgan's pipeline (FP32 validated against PyTorch within 1e-4 at batch 1; with --calib for
that scale also INT8), then:

* GFLOP: the student graph (w, c) -> image for one image, counted by torch.utils.flop_counter on the meta
  device (deterministic; the mapping network, a few MFLOP, is not included);
* params: the student graph's parameters (the frozen teacher mapping excluded), millions;
* img/s: nerfgan.runtime (ONNX Runtime, CPU provider) generating from w at batch 1, median of --repeats
  timed calls after --warmup, FP32 (and INT8 when calibrated); the presets of one scale are loaded together
  and timed in turn in every repeat, so a load change on a shared machine hits them alike; ratio to the
  default preset of its scale.

Speed depends on the CPU and on what else runs on it: say which when you quote the table. Exports are kept in
--work (PRESET-export/) and reused when the student file there is unchanged (and still of the preset's
config), so a second run only times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

DEFAULT_OF = {"tiny": "tiny", "tiny-fast": "tiny", "ffhq512": "ffhq512", "ffhq512-fast": "ffhq512"}


def scale_of(preset: str) -> str:
    return preset.split("-")[0]


def teacher_for(scale: str) -> Any:
    from nerfgan.teacher.checkpoint import build_teacher, load_teacher
    from nerfgan.teacher.config import preset

    torch.manual_seed(0)
    return load_teacher("tiny") if scale == "tiny" else build_teacher(preset("ffhq512-128"))


def flops_and_params(config: Any) -> tuple[float, float]:
    """(GFLOP of one image through the student graph, million parameters without the teacher mapping)."""
    from torch.utils.flop_counter import FlopCounterMode

    from nerfgan.student.generator import StudentGenerator

    with torch.device("meta"):
        g = StudentGenerator(config)
        w, c = torch.zeros(1, config.teacher.w_dim), torch.zeros(1, 25)
    counter = FlopCounterMode(display=False)
    with counter:  # not under no_grad: the counter's module hooks need autograd (meta tensors cost nothing)
        g(w, c)
    params = sum(p.numel() for n, p in g.named_parameters() if not n.startswith("teacher_mapping."))
    return counter.get_total_flops() / 1e9, params / 1e6


def make_student(preset: str, teacher: Any, work: Path) -> Path:
    from nerfgan.student.checkpoint import read_student_metadata, save_student
    from nerfgan.student.config import StudentConfig, student_preset
    from nerfgan.student.generator import StudentGenerator

    path = work / f"{preset}-student.safetensors"
    config = student_preset(preset, teacher.config)
    if path.exists():  # made by an earlier run: reused only if it is still this preset's student
        if StudentConfig.from_json(read_student_metadata(path)["config"], str(path)) != config:
            sys.exit(f"{path}: made for another {preset} config than today's preset; move it away to rebuild it")
        return path
    torch.manual_seed(0)
    save_student(StudentGenerator.from_teacher(config, teacher).eval(), path)
    return path


def export_once(preset: str, student: Path, calib: str | None, work: Path) -> Path:
    """work/PRESET-export, made unless a complete export of the same student file (and INT8 when asked) is there."""
    import json

    from nerfgan.export.pipeline import ExportConfig, export
    from nerfgan.io import file_sha256

    out = work / f"{preset}-export"
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        files = {a["file"] for a in m.get("artifacts", [])}
        if m.get("checkpoint", {}).get("sha256") == file_sha256(student) \
                and (calib is None or "student_int8.onnx" in files):
            print(f"[{preset}] reusing {out}", flush=True)
            return out
    cfg = ExportConfig(int8=calib is not None, calib=calib, validate_batches=(1,))
    export(student, out, cfg, log=lambda s: print(f"[{preset}] {s}", flush=True))
    return out


def images_per_s(exports: dict[str, Path], precision: str, warmup: int, repeats: int,
                 threads: int | None) -> dict[str, float]:
    """img/s of each export (by preset) at batch 1. The presets are timed in turn within each repeat, so a change
    in the machine's load hits all of them alike and the ratios hold better than the absolute figures."""
    import contextlib

    import nerfgan.runtime as nr
    from nerfgan.runtime.bench import timed

    with contextlib.ExitStack() as stack:
        gens = {p: stack.enter_context(nr.load(d, precision=precision, device="cpu", threads=threads))
                for p, d in exports.items()}
        calls = {p: (lambda g=g, w=g.style(seed=0): g.generate(w=w, yaw=15.0)) for p, g in gens.items()}
        times: dict[str, list[float]] = {p: [] for p in gens}
        for p, call in calls.items():
            timed(call, 0, warmup)
        for _ in range(repeats):
            for p, call in calls.items():
                times[p] += timed(call, 1, 0)
    return {p: 1.0 / statistics.median(t) for p, t in times.items()}


def parse_pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            sys.exit(f"{option} {item!r}: expected NAME=PATH")
        out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,tiny-fast,ffhq512,ffhq512-fast", help="student presets, comma-separated")
    ap.add_argument("--work", default=None, help="folder for students and exports, kept and reused (default: temporary)")
    ap.add_argument("--student", action="append", default=[], help="PRESET=student.safetensors: time this student")
    ap.add_argument("--calib", action="append", default=[], help="SCALE=calib.npz (tiny or ffhq512): also INT8")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    ap.add_argument("--flops-only", action="store_true", help="only GFLOP and params (no export, no timing)")
    args = ap.parse_args()
    from nerfgan.student.config import PRESETS, student_preset

    presets = [p for p in args.presets.split(",") if p]
    for p in presets:
        if p not in DEFAULT_OF or p not in PRESETS:
            sys.exit(f"--presets: unknown preset {p!r}; choose from {', '.join(DEFAULT_OF)}")
    students = parse_pairs(args.student, "--student")
    calibs = parse_pairs(args.calib, "--calib")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        teachers: dict[str, Any] = {}
        for p in presets:
            scale = scale_of(p)
            if scale not in teachers:
                teachers[scale] = teacher_for(scale)
            gflop, mparams = flops_and_params(student_preset(p, teachers[scale].config))
            row: dict[str, Any] = {"preset": p, "scale": scale, "gflop": gflop, "params": mparams}
            rows.append(row)
            print(f"[{p}] {gflop:.2f} GFLOP, {mparams:.2f} M params", flush=True)
            if args.flops_only:
                continue
            student = Path(students[p]) if p in students else make_student(p, teachers[scale], work)
            row["export"] = export_once(p, student, calibs.get(scale), work)
        if not args.flops_only:
            for scale in teachers:  # time the presets of one scale together (interleaved)
                exports = {r["preset"]: r["export"] for r in rows if r["scale"] == scale}
                precisions = ("fp32", "int8") if scale in calibs else ("fp32",)
                for precision in precisions:
                    for p, ips in images_per_s(exports, precision, args.warmup, args.repeats, args.threads).items():
                        next(r for r in rows if r["preset"] == p)[precision] = ips
                        print(f"[{p}] {precision} {ips:.2f} img/s", flush=True)
    by_name = {r["preset"]: r for r in rows}
    print(f"\nCPU, {torch.get_num_threads()} torch threads, ONNX Runtime CPU provider, batch 1, median of "
          f"{args.repeats}; ratio: to the default preset of the same scale")
    print("| preset | scale | GFLOP | params (M) | FLOP ratio | ORT FP32 img/s | speed ratio | ORT INT8 img/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        base = by_name.get(DEFAULT_OF[r["preset"]])
        flop_ratio = f"{base['gflop'] / r['gflop']:.2f}x" if base else "-"
        fp32 = f"{r['fp32']:.2f}" if "fp32" in r else "-"
        speed = f"{r['fp32'] / base['fp32']:.2f}x" if base and "fp32" in r and "fp32" in base else "-"
        int8 = f"{r['int8']:.2f}" if "int8" in r else "-"
        print(f"| {r['preset']} | {r['scale']} | {r['gflop']:.2f} | {r['params']:.2f} | {flop_ratio} | {fp32} | "
              f"{speed} | {int8} |")


if __name__ == "__main__":
    main()
