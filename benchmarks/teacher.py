"""Teacher speed and memory: images/s and peak memory of EG3D per config, batch and device.

    python benchmarks/teacher.py                                  # tiny + ffhq512-128, CPU (+ CUDA if present)
    python benchmarks/teacher.py --configs ffhq512-128 --devices cuda --batches 1,4,16

Each case runs in a fresh subprocess (so CPU peak RSS is that case's own), with random weights
(speed does not depend on the values), float32, deterministic rendering, backbone noise 'const'.
"full" = mapping + backbone + rendering + super-resolution per call; "cached planes" = the
tri-planes of the batch are computed once and only rendering + super-resolution are timed (the
number EG3D users quote for turning one object). Reported: median of --repeats timed calls after
--warmup calls; images/s = batch / median seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys


def _case(config: str, device: str, batch: int, warmup: int, repeats: int, fused: bool, q: "mp.Queue") -> None:
    import resource

    import numpy as np
    import torch

    from nerfgan import camera
    from nerfgan.runtime.bench import timed as bench_timed
    from nerfgan.teacher.checkpoint import build_teacher
    from nerfgan.teacher.config import preset

    torch.manual_seed(0)
    model = build_teacher(preset(config)).to(device)
    cfg = model.config
    z = torch.randn(batch, cfg.z_dim, device=device)
    yaws = torch.linspace(-30, 30, batch).tolist()
    r = cfg.rendering
    c = torch.from_numpy(np.stack([camera.pose(y, 0.0, radius=r.avg_camera_radius, pivot=r.avg_camera_pivot)
                                   for y in yaws])).to(device)
    c_cond = torch.from_numpy(camera.frontal(cfg.rendering.avg_camera_radius, cfg.rendering.avg_camera_pivot)).to(device)
    c_cond = c_cond[None].expand(batch, 25)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        return statistics.median(bench_timed(fn, repeats, warmup, sync))

    with torch.no_grad():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        full = timed(lambda: model.synthesis(model.mapping(z, c_cond, 0.7), c, fused=fused))
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        ws = model.mapping(z, c_cond, 0.7)
        planes = model.planes(ws, fused=fused)
        cached = timed(lambda: model.render_planes(planes, ws, c, fused=fused))
    if peak_gib is None:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    q.put({"config": config, "device": name, "batch": batch, "full_s": full, "cached_s": cached,
           "full_img_s": batch / full, "cached_img_s": batch / cached, "peak_gib": peak_gib,
           "torch": torch.__version__, "threads": torch.get_num_threads()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,ffhq512-128")
    ap.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when present)")
    ap.add_argument("--batches", default=None, help="default: 1,4 on CPU; 1,4,16 on CUDA")
    ap.add_argument("--warmup", type=int, default=None, help="default: 1 on CPU, 2 on CUDA")
    ap.add_argument("--repeats", type=int, default=None, help="default: 3 on CPU, 8 on CUDA")
    ap.add_argument("--fused", action="store_true", help="grouped-conv modulated convolution (upstream's eval path)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" else args.devices.split(",")
    ctx = mp.get_context("spawn")
    rows = []
    for device in devices:
        batches = [int(b) for b in (args.batches or ("1,4,16" if device == "cuda" else "1,4")).split(",")]
        warmup = args.warmup if args.warmup is not None else (2 if device == "cuda" else 1)
        repeats = args.repeats if args.repeats is not None else (8 if device == "cuda" else 3)
        for config in args.configs.split(","):
            for batch in batches:
                q = ctx.Queue()
                p = ctx.Process(target=_case, args=(config, device, batch, warmup, repeats, args.fused, q))
                p.start()
                p.join()
                if p.exitcode != 0:
                    print(f"# {config} {device} batch {batch}: failed (exit {p.exitcode})", file=sys.stderr)
                    continue
                row = q.get()
                rows.append(row)
                print(f"# {row['config']} {row['device']} b{batch}: {row['full_img_s']:.2f} img/s", file=sys.stderr, flush=True)

    print(f"\nEG3D teacher, float32, deterministic rendering, median of timed calls (torch {torch.__version__})\n")
    print("| config | device | batch | full img/s | cached planes img/s | ms/call (full) | peak GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mem = "GPU" if r["device"] != "CPU" else "RSS"
        print(f"| {r['config']} | {r['device']} | {r['batch']} | {r['full_img_s']:.2f} | {r['cached_img_s']:.2f} | "
              f"{1000 * r['full_s']:.1f} | {r['peak_gib']:.2f} ({mem}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
