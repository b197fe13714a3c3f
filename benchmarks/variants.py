"""Training variants side by side: with and without real images in stage 2, default and fast presets.

    nerfgan scene dataset --n 1000 --seed 3 -o data.zip                   # the scene family's "real images"
    nerfgan teacher renders --teacher tiny --n 1024 -o renders1024        # once
    python benchmarks/variants.py --renders renders1024 --real data.zip --out variants --minutes 20 \\
        --variants tiny,tiny+real --parallel 2
    python benchmarks/variants.py --renders renders1024 --out variants --minutes 20 \\
        --variants tiny,tiny-fast --parallel 2 [--inception-weights pt_inception-2015-12-05-6726825d.pth]

A variant is a student preset (``nerfgan train --preset``), with ``+real`` for ``--real DATA``. Every
variant trains with ``nerfgan train`` in its own process from the same seed, render set and held-out
samples for --minutes of training time, then is scored on the same held-out samples against the
teacher (the run's metrics.jsonl) and against the scene family's exact ground truth
(benchmarks/fidelity.py's table), and, given Inception weights, by FID/KID against the data set
(``nerfgan fid``). A run folder that exists is continued, not retrained (``--resume``).

--parallel K trains K variants at once with ``--threads`` torch threads each (default 1): on a 2-core
machine, two one-thread runs share it evenly, so the variants of one batch see the same conditions;
compare variants within a batch. The table says how many steps each run reached.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def train_command(args: argparse.Namespace, name: str, run_dir: Path) -> list[str]:
    preset, _, extra = name.partition("+")
    cmd = [sys.executable, "-m", "nerfgan.cli", "train", "--teacher", args.teacher, "--renders", args.renders,
           "--preset", preset, "-o", str(run_dir), "--minutes", str(args.minutes), "--stage1-steps", str(args.stage1_steps),
           "--eval-every", "0", "--n-eval", str(args.n_eval), "--seed", str(args.seed)]
    if extra == "real":
        if not args.real:
            raise SystemExit(f"variant {name}: needs --real DATA")
        cmd += ["--real", args.real]
    elif extra:
        raise SystemExit(f"variant {name}: the only suffix is +real")
    if (run_dir / "train_state.safetensors").exists():
        cmd.append("--resume")
    return cmd


def train_all(args: argparse.Namespace, names: list[str], out: Path) -> dict[str, float]:
    """Train the variants, --parallel at a time; returns the wall seconds of each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    walls: dict[str, float] = {}
    for i in range(0, len(names), args.parallel):
        batch = names[i:i + args.parallel]
        procs = {}
        for name in batch:
            run_dir = out / name
            if (run_dir / "student.safetensors").exists() and not (run_dir / "train_state.safetensors").exists():
                continue
            log = open(out / f"{name}.log", "a")
            procs[name] = (subprocess.Popen(train_command(args, name, run_dir), env=env, stdout=log, stderr=subprocess.STDOUT),
                           time.time(), log)
            print(f"# {time.strftime('%H:%M:%S')} training {name} ({args.threads} thread(s))", flush=True)
        for name, (p, t0, log) in procs.items():
            rc = p.wait()
            log.close()
            walls[name] = time.time() - t0
            if rc != 0:
                raise SystemExit(f"variant {name}: nerfgan train exited {rc}; see {out / (name + '.log')}")
    return walls


def fid_row(args: argparse.Namespace, engine: str, out_json: Path) -> dict[str, float] | None:
    if not args.inception_weights or not args.real:
        return None
    if not out_json.exists():
        subprocess.run([sys.executable, "-m", "nerfgan.cli", "fid", "--engine", engine, "--reference", args.real,
                        "--n", str(args.fid_n), "--inception-weights", args.inception_weights, "--json", str(out_json)],
                       check=True)
    return json.loads(out_json.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="tiny,tiny+real")
    ap.add_argument("--real", default=None, help="EG3D-format data set for +real variants and FID/KID")
    ap.add_argument("--teacher", default="tiny")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--stage1-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--n-views", type=int, default=12, help="objects for the 3D-consistency figure")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--fid-n", type=int, default=256)
    args = ap.parse_args()

    import torch

    from fidelity import ground_truth_table
    from nerfgan.teacher.checkpoint import load_teacher

    names = args.variants.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    walls = train_all(args, names, out)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    teacher = load_teacher(args.teacher)
    gt = ground_truth_table(teacher, {n: out / n / "student.safetensors" for n in names}, seed=args.seed,
                            n_eval=args.n_eval, n_views=args.n_views)
    rows = []
    for name in names:
        metrics = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        last = metrics[-1]
        fid = fid_row(args, str(out / name / "student.safetensors"), out / name / "fid.json")
        rows.append({"variant": name, "steps": int(last["step"]), "wall_s": walls.get(name), "vs_teacher": last,
                     "vs_ground_truth": gt[name], "fid": fid})
    teacher_fid = fid_row(args, args.teacher, out / "teacher_fid.json") if args.inception_weights else None

    print(f"\nVariants after {args.minutes:g} minutes of training ({args.parallel} at a time, {args.threads} thread(s) each; "
          f"held-out {args.n_eval} samples; stage 1 {args.stage1_steps} steps)\n")
    print("| variant | steps | vs teacher HR / LR PSNR | vs ground truth HR / LR PSNR | HR SSIM vs GT | 3D consistency dB | FID | KID x1000 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, g, f = r["vs_teacher"], r["vs_ground_truth"], r["fid"]
        fid = f"{f['fid']:.2f} | {1000 * f['kid_mean']:.2f}" if f else "- | -"
        print(f"| {r['variant']} | {r['steps']} | {t['psnr_hr']:.2f} / {t['psnr_lr']:.2f} | {g['psnr_hr']:.2f} / "
              f"{g['psnr_lr']:.2f} | {g['ssim_hr']:.3f} | {g['consistency_db']:.2f} | {fid} |")
    g = gt["teacher"]
    fid = f"{teacher_fid['fid']:.2f} | {1000 * teacher_fid['kid_mean']:.2f}" if teacher_fid else "- | -"
    print(f"| teacher | - | - | {g['psnr_hr']:.2f} / {g['psnr_lr']:.2f} | {g['ssim_hr']:.3f} | {g['consistency_db']:.2f} | {fid} |")
    (out / "variants.json").write_text(json.dumps({"settings": vars(args), "rows": rows, "teacher": {"vs_ground_truth": g,
                                                   "fid": teacher_fid}}, indent=1))


if __name__ == "__main__":
    main()
