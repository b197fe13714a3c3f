"""Inversion through the student vs through the teacher, scored against the scene family's exact ground truth.

    python benchmarks/invert.py                                   # quickstart's student + teacher when present
    python benchmarks/invert.py --student qs/run/student.safetensors --teacher qs/teacher.safetensors --steps 100

For each held-out seed (objects of nerfgan's scene family, truncation 0.7): the exact ground truth at the input
pose (yaw 0, pitch 0 by default) at the models' image resolution is inverted through the student and through
the teacher (nerfgan.student.invert: the same w parametrisation, start (w_avg), steps, lr and loss,
L1 + (1 - SSIM) on the final image); each result is rendered at the input pose and at yaw -30, yaw +30 and
pitch +10 and scored (PSNR, dB) against the exact ground truth at those poses. Two reference rows need no
inversion: each model rendering the seed's true w (the best its inversion could find if the model were exact)
and the start code w_avg.

Printed: one row per model, the median over the seeds (each seed is one run) of every PSNR and of the seconds
per inversion. Defaults: the quickstart's student and teacher (/tmp/qs/run/student.safetensors,
/tmp/qs/teacher.safetensors) when present, else the built-in teacher 'tiny' and an untrained student made
from it (numbers then say nothing about quality; nothing is trained here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

QS_STUDENT = Path("/tmp/qs/run/student.safetensors")
QS_TEACHER = Path("/tmp/qs/teacher.safetensors")
VIEWS = [("input", None), ("yaw -30", (-30.0, 0.0)), ("yaw +30", (30.0, 0.0)), ("pitch +10", (0.0, 10.0))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", default=str(QS_STUDENT) if QS_STUDENT.is_file() else None)
    ap.add_argument("--teacher", default=str(QS_TEACHER) if QS_TEACHER.is_file() else "tiny")
    ap.add_argument("--seeds", default="900001,900002,900003", help="held-out objects, one run each")
    ap.add_argument("--pose", default="0,0", help="YAW,PITCH of the inverted view")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the per-seed numbers here")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from nerfgan import camera
    from nerfgan.sampling import z_from_seed
    from nerfgan.scenes.family import SceneFamily
    from nerfgan.scenes.render import render
    from nerfgan.student.checkpoint import load_student
    from nerfgan.student.invert import InversionSettings, camera_for, invert, render_code, start_code
    from nerfgan.student.losses import psnr
    from nerfgan.teacher.checkpoint import load_teacher

    dev = args.device
    teacher = load_teacher(args.teacher, device=dev)
    if args.student:
        student = load_student(args.student, device=dev)
        student_name = args.student
    else:
        from nerfgan.student.config import student_preset
        from nerfgan.student.generator import StudentGenerator

        torch.manual_seed(0)
        student = StudentGenerator.from_teacher(student_preset("tiny", teacher.config), teacher).eval()
        student = student.requires_grad_(False).to(dev)
        student_name = "untrained student of the built-in teacher (no quickstart student found)"
    res = int(student.config.img_resolution)
    assert res == int(teacher.config.img_resolution)
    yaw0, pitch0, _ = camera.parse_pose(args.pose)
    poses = [(yaw0, pitch0)] + [p for _, p in VIEWS[1:] if p is not None]
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = InversionSettings(steps=args.steps, lr=args.lr)
    family = SceneFamily()
    rows: dict[str, dict[str, list[float]]] = {}

    def add(row: str, key: str, value: float) -> None:
        rows.setdefault(row, {}).setdefault(key, []).append(value)

    for seed in seeds:
        cams = torch.from_numpy(np.concatenate([camera_for(student, y, p) for y, p in poses])).to(dev)
        params = family.params(torch.from_numpy(z_from_seed(seed)).expand(len(poses), -1), 0.7)
        gt = render(family, params, cams.cpu(), res).image.to(dev)
        for name, model in (("student", student), ("teacher", teacher)):
            codes = {"true w": start_code(model, seed, 0.7), "w_avg (start)": start_code(model)}
            result = invert(model, gt[:1].cpu().numpy(), cams[:1].cpu().numpy(), settings)
            codes["inverted"] = torch.from_numpy(result.w)
            add(f"{name}, inverted", "seconds", result.seconds)
            add(f"{name}, inverted", "s/step", result.seconds / settings.steps)
            for label, w in codes.items():
                with torch.no_grad():
                    views = torch.cat([render_code(model, w.to(dev), cams[i:i + 1]) for i in range(len(poses))])
                scores = psnr(views, gt).tolist()
                for (view, _), s in zip(VIEWS, scores):
                    add(f"{name}, {label}", view, s)
            print(f"seed {seed} {name}: {result.seconds:.1f} s, fit {result.psnr_history[0]:.2f} -> "
                  f"{result.psnr_history[-1]:.2f} dB", file=sys.stderr, flush=True)

    med = {r: {k: statistics.median(v) for k, v in d.items()} for r, d in rows.items()}
    print(f"student: {student_name}\nteacher: {args.teacher}\n{len(seeds)} held-out seeds ({args.seeds}), "
          f"input pose {args.pose}, {settings.steps} steps, lr {settings.lr}, {res} px, device {dev}; medians over "
          "the seeds; PSNR (dB) against the exact ground truth\n")
    head = "| | " + " | ".join(f"PSNR {v}" for v, _ in VIEWS) + " | s / inversion | s / step |"
    print(head)
    print("|" + "---|" * (len(VIEWS) + 3))
    order = [f"{m}, {lab}" for m in ("student", "teacher") for lab in ("inverted", "true w", "w_avg (start)")]
    for r in order:
        d = med[r]
        t = f"{d['seconds']:.1f} | {d['s/step']:.3f}" if "seconds" in d else "- | -"
        print(f"| {r} | " + " | ".join(f"{d[v]:.2f}" for v, _ in VIEWS) + f" | {t} |")
    if "teacher, inverted" in med:
        speed = med["teacher, inverted"]["seconds"] / med["student, inverted"]["seconds"]
        print(f"\nthe student inverts {speed:.1f}x faster than the teacher (median seconds per inversion)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows, "medians": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
