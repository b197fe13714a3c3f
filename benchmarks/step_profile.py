"""Where a CPU training step's time goes: wall, user and system time, page faults and the top operators.

    python benchmarks/step_profile.py [--steps 6] [--what train,fit] [--out step_profile.json]

For each kind of step (``train``: a distillation step of the tiny student on the built-in teacher, with a small
render set; ``fit``: a field step of ``nerfgan scene fit``) and each malloc setting (``default``: glibc as it
comes; ``keep``: ``nerfgan.malloc.keep_freed_memory``), a fresh process runs a warm-up step and then
``--steps`` steps, and reports per step: the median wall time, the mean user and system seconds and minor page faults
(``getrusage``), plus the 8 operators with the most self CPU time (``torch.profiler``, one more step).
Each setting runs in its own process because malloc's settings cannot be undone. Run it on a quiet
machine: the ratios are what matter, and system time grows with contention.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(what: str, steps: int, renders: str) -> dict:
    import resource

    import torch

    from nerfgan.malloc import keep_freed_memory

    kept = keep_freed_memory().__enter__()  # for the whole child process
    if what == "fit":
        from nerfgan.scenes.family import SceneConfig, SceneFamily
        from nerfgan.scenes.fit import FitConfig, field_loss, new_teacher

        cfg, scene = FitConfig(), SceneConfig()
        family = SceneFamily(scene)
        model = new_teacher(cfg, scene).train().requires_grad_(True)
        model.backbone.mapping.requires_grad_(False)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        k = [0]

        def step() -> None:
            loss, _ = field_loss(model, family, cfg, k[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            k[0] += 1
    else:
        from nerfgan.student.train import Trainer, train_preset
        from nerfgan.teacher.checkpoint import load_teacher

        run = Path(tempfile.mkdtemp(prefix="step-profile-run-")) / "run"
        trainer = Trainer(train_preset("tiny", eval_every=0, n_eval=2, stage1_steps=0), load_teacher("tiny"), run,
                          renders=renders, progress=False)

        def step() -> None:
            trainer.train_step()

    def usage() -> tuple[float, float, int]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime, r.ru_stime, r.ru_minflt

    step()  # warm-up
    u0, s0, f0 = usage()
    walls = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t0)
    wall = sorted(walls)[len(walls) // 2] * steps  # the median step
    u1, s1, f1 = usage()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1.0
    return {"what": what, "malloc": "keep" if kept else "default", "steps": steps,
            "wall_s": wall / steps, "user_s": (u1 - u0) / steps, "sys_s": (s1 - s0) / steps,
            "minor_faults": (f1 - f0) / steps, "threads": torch.get_num_threads(),
            "top_ops": [[e.key, round(100 * e.self_cpu_time_total / total, 1)] for e in top]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--what", default="train,fit")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.child[2])))
        return
    tmp = Path(tempfile.mkdtemp(prefix="step-profile-"))
    renders = str(tmp / "renders")
    if "train" in args.what.split(","):
        from nerfgan.teacher.renders import make_render_set

        make_render_set("tiny", 16, renders, progress=False)
    rows = []
    for what in args.what.split(","):
        for setting in ("default", "keep"):
            env = {**os.environ, "NERFGAN_MALLOC": setting}
            proc = subprocess.run([sys.executable, __file__, "--child", what, str(args.steps), renders], env=env,
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()[0]
    print(f"Per step over {args.steps} steps after one warm-up (wall: the median step; user, system, faults: the mean); "
          f"load average {load:.1f} at the end")
    print()
    print("| step | malloc | wall s | user s | system s | minor faults | top operators (self CPU %) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in r["top_ops"][:4])
        print(f"| {r['what']} | {r['malloc']} | {r['wall_s']:.2f} | {r['user_s']:.2f} | {r['sys_s']:.2f} | "
              f"{r['minor_faults']:,.0f} | {ops} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
