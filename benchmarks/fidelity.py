"""Distillation fidelity on the tiny preset: held-out PSNR/SSIM against the teacher over training time.

    nerfgan teacher renders --teacher tiny --n 1024 -o renders1024      # once (about 15 min on 2 cores)
    python benchmarks/fidelity.py --renders renders1024 --out fidelity --minutes 20

Trains, one after the other on the same machine, (a) the pose-conditioned student and (b) the same
student without pose input (its mapping sees w only), each for --minutes of training time (held-out
evaluation excluded), evaluating both on the same held-out (z, pose) samples at the --marks minutes.
Baseline (c) predicts the mean teacher image of the render set for every held-out sample.
PSNR on images clipped to [-1, 1] (data range 2), SSIM (Gaussian 11x11, sigma 1.5), both averaged
per sample; high resolution = final image, low resolution = raw RGB (feature image channels 0-2).

With the built-in teacher (fitted to nerfgan.scenes' family) a second table scores the teacher and
both final students against the exact ground truth on the same held-out samples, and measures 3D
consistency for all three and for the ground truth itself: for --n-views objects, the low-resolution
colour of the view at yaw 0 is warped into the views at yaw -20 and +20 with the EXACT depth of the
target view (nerfgan.runtime.parity.warp, occlusion-tested with the exact depth of the source view),
and PSNR is taken over the pixels the object covers. The ground truth's own figure is what bilinear
resampling alone costs the exact, sharp images (its stripes); it is NOT a ceiling: a blurrier model
loses less to resampling and can score above it, so this measure favours blur.
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


def ground_truth_table(teacher, students: dict[str, Path], seed: int, n_eval: int, n_views: int) -> dict[str, dict]:
    """Teacher and students against the scene family's exact renders (see the module docstring)."""
    from nerfgan.metrics import psnr, ssim
    from nerfgan.runtime.parity import masked_psnr, warp
    from nerfgan.sampling import PoseDistribution, draw
    from nerfgan.scenes.family import SceneFamily
    from nerfgan.scenes.fit import styles
    from nerfgan.scenes.render import render
    from nerfgan.student.checkpoint import load_student
    from nerfgan.student.train import EVAL_SEED_OFFSET

    r = teacher.config.rendering
    fam = SceneFamily()
    models = {name: load_student(path) for name, path in students.items()}

    def views(z, psi, c, c_cond):
        """{model: (image, rgb)} plus ground truth (image, rgb, depth, mask) and the teacher's depth."""
        with torch.no_grad():
            ws = styles(teacher, z, psi, c_cond)
            t = teacher.synthesis(ws, c)
            out = {"teacher": (t.image.numpy(), t.feature_image[:, :3].numpy())}
            for name, m in models.items():
                o = m(ws[:, 0], c)
                out[name] = (o.image.numpy(), o.image_raw.numpy())
            p = fam.params(z, psi)
            hi, lo = render(fam, p, c, t.image.shape[-1]), render(fam, p, c, t.feature_image.shape[-1])
        gt = {"image": hi.image.numpy(), "rgb": lo.image.numpy(), "depth": lo.depth[:, 0].numpy(), "mask": lo.mask[:, 0].numpy()}
        return out, gt

    def t_(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    s = draw(seed + EVAL_SEED_OFFSET, range(n_eval), PoseDistribution(), r.avg_camera_radius, r.avg_camera_pivot)
    rows: dict[str, dict] = {}
    outs, gts = [], []
    for i in range(0, n_eval, 4):
        sl = slice(i, i + 4)
        o, g = views(t_(s.z[sl]), t_(s.psi[sl]), t_(s.c[sl]), t_(s.c_cond[sl]))
        outs.append(o)
        gts.append(g)
    gt_img = np.concatenate([g["image"] for g in gts])
    gt_rgb = np.concatenate([g["rgb"] for g in gts])
    for name in outs[0]:
        img = np.concatenate([o[name][0] for o in outs])
        rgb = np.concatenate([o[name][1] for o in outs])
        rows[name] = {"psnr_hr": float(psnr(img, gt_img).mean()), "ssim_hr": float(ssim(img, gt_img).mean()),
                      "psnr_lr": float(psnr(rgb, gt_rgb).mean()), "ssim_lr": float(ssim(rgb, gt_rgb).mean())}
    # 3D consistency: yaw 0 -> yaw -20, +20 (pitch 0), warped with the exact depth
    from nerfgan import camera

    cons: dict[str, list[float]] = {k: [] for k in list(rows) + ["ground truth"]}
    sv = draw(seed + EVAL_SEED_OFFSET + 1, range(n_views), PoseDistribution(), r.avg_camera_radius, r.avg_camera_pivot)
    yaws = np.array([0.0, -20.0, 20.0], np.float32)
    for k in range(n_views):
        c = camera.pose(yaws, np.zeros(3, np.float32), radius=r.avg_camera_radius, pivot=r.avg_camera_pivot).reshape(3, 25)
        z = t_(np.repeat(sv.z[k:k + 1], 3, 0))
        psi = t_(np.repeat(sv.psi[k:k + 1], 3, 0))
        o, g = views(z, psi, t_(c.astype(np.float32)), t_(np.repeat(sv.c_cond[k:k + 1], 3, 0)))
        for b in (1, 2):
            _, valid = warp(g["rgb"][0], c[0], c[b], g["depth"][b], g["depth"][0])
            valid &= g["mask"][b] > 0.5
            for name in cons:
                rgb = g["rgb"] if name == "ground truth" else o[name][1]
                warped, _ = warp(rgb[0], c[0], c[b], g["depth"][b])
                v = masked_psnr(warped, rgb[b], valid)
                if v is not None:
                    cons[name].append(v)
    for name, vals in cons.items():
        rows.setdefault(name, {})["consistency_db"] = float(np.mean(vals)) if vals else None
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--marks", default="0,1,2,5,10,20")
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--teacher", default="tiny")
    ap.add_argument("--runs", default="pose,nopose")
    ap.add_argument("--n-views", type=int, default=12, help="objects for the 3D-consistency figure")
    ap.add_argument("--no-ground-truth", action="store_true", help="skip the table against the scene family")
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
    gt_rows = None
    if not args.no_ground_truth:
        gt_rows = ground_truth_table(teacher, {f"{r} student": out / r / "student.safetensors" for r in results},
                                     seed=0, n_eval=args.n_eval, n_views=args.n_views)
        print(f"\nAgainst the exact ground truth (same {args.n_eval} held-out samples; 3D consistency over "
              f"{args.n_views} objects x 2 view pairs, exact-depth warp)\n")
        print("| model | HR PSNR / SSIM | LR PSNR / SSIM | 3D consistency dB |")
        print("|---|---|---|---|")
        for name, row in gt_rows.items():
            hr = f"{row['psnr_hr']:.2f} / {row['ssim_hr']:.3f}" if "psnr_hr" in row else "-"
            lr = f"{row['psnr_lr']:.2f} / {row['ssim_lr']:.3f}" if "psnr_lr" in row else "-"
            cons = "-" if row.get("consistency_db") is None else f"{row['consistency_db']:.2f}"
            print(f"| {name} | {hr} | {lr} | {cons} |")
    (out / "fidelity.json").write_text(json.dumps({"runs": results, "mean_image": base, "ground_truth": gt_rows}, indent=1))


if __name__ == "__main__":
    main()
