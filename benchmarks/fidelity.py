"""Distillation fidelity on the tiny preset: held-out PSNR/SSIM against the teacher over training time.

    nerfgan teacher renders --teacher tiny --n 1024 -o renders1024      # once (about 15 min on 2 cores)
    python benchmarks/fidelity.py --renders renders1024 --out fidelity --minutes 20

Trains, one after the other on the same machine, (a) the pose-conditioned student and (b) the same
student without pose input (its mapping sees w only), each for --minutes of training time (held-out
evaluation excluded), evaluating both on the same held-out (z, pose) samples at the --marks minutes.
Baseline (c) predicts the mean teacher image of the render set for every held-out sample.
PSNR on images clipped to [-1, 1] (data range 2), SSIM (Gaussian 11x11, sigma 1.5), both averaged
per sample; high resolution = final image, low resolution = raw RGB (feature image channels 0-2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def mean_image_baseline(renders: str, held_out: dict[str, torch.Tensor]) -> dict[str, float]:
    from nerfgan.student.losses import psnr, ssim
    from nerfgan.teacher.renders import RenderSet

    rs = RenderSet.open(renders)
    total_img = total_raw = None
    n = 0
    for shard in rs.shards():
        img = shard["image"].astype(np.float64).sum(0)
        raw = shard["feature_image"][:, :3].astype(np.float64).sum(0)
        total_img = img if total_img is None else total_img + img
        total_raw = raw if total_raw is None else total_raw + raw
        n += len(shard["image"])
    assert total_img is not None and total_raw is not None
    mean_img = torch.from_numpy((total_img / n).astype(np.float32))[None].expand_as(held_out["image"])
    mean_raw = torch.from_numpy((total_raw / n).astype(np.float32))[None].expand_as(held_out["feature_image"][:, :3])
    t_img, t_raw = held_out["image"], held_out["feature_image"][:, :3]
    return {"psnr_hr": float(psnr(mean_img, t_img).mean()), "ssim_hr": float(ssim(mean_img, t_img.clamp(-1, 1)).mean()),
            "psnr_lr": float(psnr(mean_raw, t_raw).mean()), "ssim_lr": float(ssim(mean_raw, t_raw.clamp(-1, 1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--marks", default="0,1,2,5,10,20")
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--teacher", default="tiny")
    ap.add_argument("--runs", default="pose,nopose")
    args = ap.parse_args()

    from nerfgan.student.train import Trainer, train_preset
    from nerfgan.teacher.checkpoint import load_teacher

    marks = tuple(float(m) for m in args.marks.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_teacher(args.teacher)
    results: dict[str, list[dict[str, float]]] = {}
    held_out_file = None
    for run in args.runs.split(","):
        cfg = train_preset("tiny", pose_input=(run == "pose"), eval_every=0, eval_minutes=marks, n_eval=args.n_eval)
        run_dir = out / run
        resume = (run_dir / "train_state.safetensors").exists()
        if held_out_file is not None and not (run_dir / "held_out.safetensors").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(held_out_file, run_dir / "held_out.safetensors")  # the same held-out samples for every run
        t0 = time.time()
        trainer = Trainer(cfg, teacher, run_dir, renders=args.renders, resume=resume)
        held_out_file = run_dir / "held_out.safetensors"
        trainer.run(minutes=args.minutes)
        print(f"# {run}: {trainer.step} steps in {time.time() - t0:.0f} s wall", flush=True)
        results[run] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        held_out = trainer.held_out
    base = mean_image_baseline(args.renders, held_out)

    def at(rows: list[dict[str, float]], m: float) -> dict[str, float] | None:
        cands = [r for r in rows if r["train_minutes"] >= m - 1e-9]
        return min(cands, key=lambda r: r["train_minutes"]) if cands else None

    print(f"\nHeld-out fidelity vs the teacher ({args.n_eval} samples, held-out seeds and poses), tiny preset, "
          f"render set {args.renders}\n")
    cols = " | ".join(f"{r} HR PSNR / SSIM | {r} LR PSNR / SSIM" for r in results)
    print(f"| train min | steps ({', '.join(results)}) | {cols} |")
    print("|---|---|" + "---|" * (2 * len(results)))
    for m in marks:
        rows = [at(results[r], m) for r in results]
        steps = ", ".join(str(int(r["step"])) if r else "-" for r in rows)
        cells = " | ".join(f"{r['psnr_hr']:.2f} / {r['ssim_hr']:.3f} | {r['psnr_lr']:.2f} / {r['ssim_lr']:.3f}" if r else "- | -"
                           for r in rows)
        print(f"| {m:g} | {steps} | {cells} |")
    print(f"| mean teacher image | - | {base['psnr_hr']:.2f} / {base['ssim_hr']:.3f} | {base['psnr_lr']:.2f} / "
          f"{base['ssim_lr']:.3f} | |")
    (out / "fidelity.json").write_text(json.dumps({"runs": results, "mean_image": base}, indent=1))


if __name__ == "__main__":
    main()
