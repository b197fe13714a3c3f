#!/usr/bin/env bash
# ffhq512 preset on one GPU for a few minutes: training throughput and the held-out PSNR trajectory.
# No official weights can be downloaded here, so the teacher is an ffhq512-128 EG3D with seeded
# random weights (its images are fog-like); the figures measure speed and learning, not faces.
#   bash benchmarks/gpu_train_smoke.sh OUT_DIR MINUTES [STAGE1_STEPS]
set -euo pipefail
out=${1:-gpu_smoke}; minutes=${2:-4}; stage1=${3:-300}
mkdir -p "$out"
python3 - <<PY
import torch
from nerfgan.teacher.checkpoint import build_teacher, save_teacher
from nerfgan.teacher.config import preset
torch.manual_seed(0)
save_teacher(build_teacher(preset("ffhq512-128")), "/tmp/ffhq512-128-random.safetensors")
PY
rm -rf /tmp/gpu_run
python3 -m nerfgan.cli train --teacher /tmp/ffhq512-128-random.safetensors --preset ffhq512 --out /tmp/gpu_run \
  --minutes "$minutes" --stage1-steps "$stage1" --eval-every 100 --n-eval 16 --device cuda 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -40
cp /tmp/gpu_run/metrics.jsonl "$out/"
cp "$(ls /tmp/gpu_run/eval/*.png | tail -1)" "$out/last_eval.png"
python3 - "$out" <<PY
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
print("| step | train min | images | img/s (cumulative) | PSNR HR | SSIM HR | PSNR LR | SSIM LR |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    ips = r["images"] / (r["train_minutes"] * 60) if r["train_minutes"] > 0 else float("nan")
    print(f"| {r['step']} | {r['train_minutes']:.2f} | {r['images']} | {ips:.1f} | {r['psnr_hr']:.2f} | {r['ssim_hr']:.3f} | {r['psnr_lr']:.2f} | {r['ssim_lr']:.3f} |")
PY
