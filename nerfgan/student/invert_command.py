"""``nerfgan invert``: find the student's style code w for a photo from a known camera, render it from new poses.

Imports click only at module import (the CLI's --help stays fast); torch loads when the command runs.

OUT (a folder nerfgan owns, kind "inversion"; an earlier inversion folder is overwritten, anything else refused):

* ``w.npy``: float32 (1, w_dim), the optimised code; renders through any engine:
  ``nerfgan.runtime.load(STUDENT).render(w=np.load("OUT/w.npy"), yaw=30)``.
* ``offsets.npy`` (``--per-layer`` only): float32 (1, num_ws, w_dim) per-layer offsets (PyTorch only, see
  nerfgan.student.invert).
* ``views.png``: the photo, the reconstruction at its pose, |photo - reconstruction| x4, then novel yaws.
* ``invert.json``: settings, loss and PSNR curve summary, time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nerfgan.cli_common import DEVICE, SEED, checkpoint_option, dry_run_option, echo_json, out_option, resolve_device
from nerfgan.errors import UsageError

KIND = "inversion"  # nerfgan.io owner-file kind of OUT
FORMAT = "nerfgan-inversion"


def parse_yaws(text: str) -> list[float]:
    """"-30,-15,15,30" -> [-30.0, -15.0, 15.0, 30.0] (degrees); UsageError naming --yaws otherwise."""
    import numpy as np

    from nerfgan import camera
    from nerfgan.errors import PoseError

    try:
        yaws = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--yaws: expected degrees separated by commas, e.g. -30,30, got {text!r}") from None
    if not yaws or len(yaws) > 16:
        raise UsageError(f"--yaws: give 1 to 16 yaws, got {text!r}")
    try:
        camera.check_pose(np.asarray(yaws), 0.0, name="--yaws")
    except PoseError as e:
        raise UsageError(str(e)) from None
    return yaws


def _curve(values: tuple[float, ...], points: int = 11) -> list[list[float]]:
    """[[step, value], ...] at ``points`` evenly spaced steps of a (steps + 1,) history, last step included."""
    n = len(values)
    idx = sorted({round(k * (n - 1) / (points - 1)) for k in range(points)}) if n > 1 else [0]
    return [[int(i), round(float(values[i]), 5)] for i in idx]


@click.command("invert", short_help="Find the student's w for a photo; render it from new poses.")
@click.argument("photo", type=click.Path(dir_okay=False))
@checkpoint_option("student", "student_path", required=True, type=click.Path(dir_okay=False),
                   help="The student: STUDENT.safetensors (a run's student.safetensors). Old name: --ckpt.")
@click.option("--pose", "pose_text", required=True,
              help="YAW,PITCH[,RADIUS] of the photo's camera: degrees from the frontal view (+yaw: camera toward the "
                   "object's left), radius defaults to the student's.")
@click.option("--steps", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Optimisation steps.")
@click.option("--lr", type=click.FloatRange(0, 10, min_open=True), default=0.2, show_default=True,
              help="Adam learning rate, in units of the per-channel std of w.")
@click.option("--seed", type=SEED, default=None,
              help="Start from this seed's w (truncation 0.7) instead of the mean w (w_avg).")
@click.option("--per-layer", is_flag=True,
              help="Also optimise per-layer offsets (w+; offsets.npy): closer fits, rendered by PyTorch only.")
@click.option("--yaws", "yaws_text", default="-30,-15,15,30", show_default=True,
              help="Novel views in views.png: yaws in degrees, at the photo's pitch.")
@out_option("out_dir", "OUT folder: w.npy, views.png, invert.json (made, or an earlier inversion folder).",
            required=True, type=click.Path(file_okay=False))
@DEVICE
@dry_run_option("Print the resolved settings as JSON; read, optimise and write nothing.")
def invert_command(photo: str, student_path: str, pose_text: str, steps: int, lr: float, seed: int | None,
                   per_layer: bool, yaws_text: str, out_dir: str, device: str, dry_run: bool) -> None:
    """Invert PHOTO through the student: optimise the style code w (from the mean w, or a seed's) so the student
    reproduces the photo from its camera (loss: L1 + (1 - SSIM), the trainer's final-image terms), then render
    it from new poses.

    PHOTO must be square; another size than the student's is resized (a note says so). w.npy renders through
    every engine: nerfgan.runtime.load(STUDENT).render(w=np.load("OUT/w.npy"), yaw=30).

    \b
    Examples:
      nerfgan scene render --seed 7 --pose 0,0 -o photo.png
      nerfgan invert photo.png --student qs/run/student.safetensors --pose 0,0 -o inv
      nerfgan invert photo.png --student qs/run/student.safetensors --pose 20,5 --steps 300 --per-layer -o inv
      nerfgan invert photo.png --student qs/run/student.safetensors --pose 0,0 --seed 3 -o inv --dry-run
    """
    from nerfgan import camera

    yaw, pitch, radius = camera.parse_pose(pose_text)
    yaws = parse_yaws(yaws_text)
    settings: dict[str, Any] = {"photo": photo, "student": student_path, "yaw_deg": yaw, "pitch_deg": pitch,
                                "radius": radius, "steps": steps, "lr": lr, "seed": seed, "per_layer": per_layer,
                                "yaws": yaws, "out": out_dir, "device": device}
    if dry_run:
        echo_json(settings)
        return
    from nerfgan.io import check_writable_dir, claim_dir, existing_file
    from nerfgan.student.invert import read_photo

    rgb = read_photo(photo)  # InputFileError (missing, not an image, not square) before anything else
    existing_file(student_path, "student checkpoint")
    claim_dir(out_dir, KIND, "-o/--out")
    check_writable_dir(out_dir, "inversion folder")
    _run(rgb, settings, yaw, pitch, radius, yaws)


def _run(rgb: Any, settings: dict[str, Any], yaw: float, pitch: float, radius: float | None, yaws: list[float]) -> None:
    import time

    import numpy as np
    import torch

    from nerfgan.captions import caption_grid, difference, difference_note
    from nerfgan.io import atomic_path, mark_dir, save_png, to_uint8
    from nerfgan.student.checkpoint import load_student
    from nerfgan.student.invert import InversionSettings, camera_for, invert, photo_to_input, render_code
    from nerfgan.student.losses import psnr, ssim

    dev = resolve_device(settings["device"])
    t_start = time.perf_counter()
    student = load_student(settings["student"], device=dev)
    res = int(student.config.img_resolution)
    image, note = photo_to_input(rgb, res)
    if note:
        click.echo(f"note: {note}", err=True)
    c = camera_for(student, yaw, pitch, radius)
    cfg = InversionSettings(steps=settings["steps"], lr=settings["lr"], per_layer=settings["per_layer"],
                            start_seed=settings["seed"])
    click.echo(f"inverting {settings['photo']} ({res}x{res}) through {settings['student']}: {cfg.steps} steps on "
               f"{dev} ...", err=True)
    result = invert(student, image, c, cfg)

    # views: the reconstruction at the photo's pose, then the novel yaws at its pitch
    cams = np.concatenate([c] + [camera_for(student, y, pitch, radius) for y in yaws])
    with torch.no_grad():
        w = torch.from_numpy(result.w).to(dev)
        offsets = None if result.offsets is None else torch.from_numpy(result.offsets).to(dev)
        views = render_code(student, w.expand(len(cams), -1), torch.from_numpy(cams).to(dev), offsets).cpu()
        target = torch.from_numpy(image)
        fit_psnr = float(psnr(views[:1], target)[0])
        fit_ssim = float(ssim(views[:1], target)[0])
    tiles = [to_uint8(image[0]), to_uint8(views[0].numpy()), difference(views[:1].numpy(), image)[0]]
    tiles += [to_uint8(v.numpy()) for v in views[1:]]
    columns = ["photo", "inverted", "difference"] + [f"yaw {y:+g}" for y in yaws]
    pose_label = f"pose {yaw:g},{pitch:g}"
    grid = caption_grid([tiles], columns=columns, rows=[pose_label],
                        footer=f"{'w+' if cfg.per_layer else 'w'} after {cfg.steps} steps: PSNR {fit_psnr:.2f} dB, "
                               f"SSIM {fit_ssim:.3f} at the photo's pose; novel views at pitch {pitch:g}. "
                               + difference_note("inverted", "photo"))

    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    mark_dir(out, KIND)
    with atomic_path(out / "w.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, result.w)
    if result.offsets is not None:
        with atomic_path(out / "offsets.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, result.offsets)
    else:
        (out / "offsets.npy").unlink(missing_ok=True)  # left by an earlier --per-layer inversion into OUT
    save_png(out / "views.png", grid)
    report = {
        "format": FORMAT,
        "photo": str(settings["photo"]), "photo_size": [int(rgb.shape[1]), int(rgb.shape[0])], "resized": note,
        "student": str(settings["student"]), "device": dev,
        "pose": {"yaw_deg": yaw, "pitch_deg": pitch, "radius": radius if radius is not None
                 else student.config.teacher.rendering.avg_camera_radius},
        "settings": cfg.to_dict(),
        "start": "w_avg" if cfg.start_seed is None else f"seed {cfg.start_seed} (truncation {cfg.truncation:g})",
        "loss": "L1 + (1 - SSIM) on the final image (weights l1_weight, ssim_weight)",
        "w": {"file": "w.npy", "shape": list(result.w.shape), "dtype": "float32"},
        "offsets": None if result.offsets is None else {"file": "offsets.npy", "shape": list(result.offsets.shape),
                                                         "dtype": "float32", "renders_with": "PyTorch only"},
        "loss_curve": {"first": result.loss_history[0], "last": result.loss_history[-1],
                       "min": min(result.loss_history), "at_steps": _curve(result.loss_history)},
        "psnr_curve_db": {"first": result.psnr_history[0], "last": result.psnr_history[-1],
                          "at_steps": _curve(result.psnr_history)},
        "fit": {"psnr_db": fit_psnr, "ssim": fit_ssim},
        "views": {"file": "views.png", "yaws_deg": yaws, "pitch_deg": pitch},
        "seconds": {"inversion": round(result.seconds, 3), "total": round(time.perf_counter() - t_start, 3),
                    "per_step": round(result.seconds / max(1, cfg.steps), 4)},
    }
    with atomic_path(out / "invert.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    click.echo(f"wrote {out}: w.npy {tuple(result.w.shape)}"
               + (f", offsets.npy {tuple(result.offsets.shape)}" if result.offsets is not None else "")
               + f", views.png, invert.json; PSNR at the photo's pose {result.psnr_history[0]:.2f} -> {fit_psnr:.2f} dB "
               f"in {result.seconds:.1f} s")
