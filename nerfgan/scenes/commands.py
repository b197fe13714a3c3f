"""``nerfgan scene``: render the analytic family, write data sets, fit the built-in teacher, score against it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from nerfgan.cli_common import SEED, dry_run_option, echo_json, out_option
from nerfgan.errors import UsageError
from nerfgan.scenes.fit_config import FitConfig

_FIT_DEFAULTS = FitConfig()


@contextlib.contextmanager
def lazy_bar(total: int, desc: str, unit: str, leave: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress callback whose bar appears at the first tick, after every check: an error stays one line."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    bars: list[Any] = []

    def tick(k: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=leave))
        bars[0].update(k)

    try:
        yield tick
    finally:
        for bar in bars:
            bar.close()


@click.group(short_help="The analytic scene family: ground truth, data sets, scores.")
def scene() -> None:
    """The analytic scene family: exact ground truth for the built-in teacher and every figure made on it.

    \b
    Examples:
      nerfgan scene render --seed 3 --pose 30,0 -o truth.png
      nerfgan scene score --teacher tiny --engine qs/export -o score.json
    """


@scene.command("render", short_help="Render the exact ground truth of one seed from one pose.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Latent seed (numpy RandomState, as `teacher render`).")
@click.option("--pose", "pose_text", default="0,0", show_default=True,
              help="YAW,PITCH[,RADIUS]: degrees from the frontal view (+yaw: camera toward the object's left).")
@click.option("--truncation", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="Truncation psi (the same object as `teacher render` with the same value).")
@click.option("--fov", type=click.FloatRange(1.0, 120.0), default=None,
              help="Diagonal field of view in degrees (default: focal 4.2647, about 18.8 degrees).")
@click.option("--res", "resolution", type=click.IntRange(16, 2048), default=128, show_default=True, help="Image side in pixels.")
@out_option("output", "Image to write (.png).", required=True, type=click.Path(dir_okay=False))
@click.option("--depth", type=click.Path(dir_okay=False), default=None, help="Also write the depth (.png: a colour scale with its range in world units, "
                   "empty pixels as a grey checker).")
@click.option("--mask", type=click.Path(dir_okay=False), default=None, help="Also write the mask (.png, opacity).")
@dry_run_option("Print the resolved settings as JSON; render and write nothing.")
def scene_render(seed: int, pose_text: str, truncation: float, fov: float | None, resolution: int, output: str,
                 depth: str | None, mask: str | None, dry_run: bool) -> None:
    """Render the exact ground truth of one seed from one pose.

    \b
    Examples:
      nerfgan scene render --seed 3 --pose 30,0 -o truth.png
      nerfgan scene render --seed 3 --res 256 -o truth.png --depth depth.png --mask mask.png
    """
    import numpy as np
    import torch

    from nerfgan import camera
    from nerfgan.depth_picture import depth_picture
    from nerfgan.io import save_png, to_uint8
    from nerfgan.sampling import z_from_seed
    from nerfgan.scenes.family import SceneFamily
    from nerfgan.scenes.render import render

    yaw, pitch, radius = camera.parse_pose(pose_text)
    from nerfgan.io import check_writable

    for path in [output, depth, mask]:
        if path and not path.lower().endswith(".png"):
            raise UsageError(f"{path}: output must be a .png file")
        if path and not dry_run:
            check_writable(path, "image")
    if dry_run:
        echo_json({"seed": seed, "yaw_deg": yaw, "pitch_deg": pitch, "radius": radius, "truncation": truncation,
                   "fov": fov, "res": resolution, "out": output, "depth": depth, "mask": mask})
        return
    focal = camera.DEFAULT_FOCAL if fov is None else camera.fov_to_focal(fov)
    c = camera.pose(yaw, pitch, radius=camera.DEFAULT_RADIUS if radius is None else radius,
                    pivot=camera.DEFAULT_PIVOT, focal=focal).reshape(1, 25)
    family = SceneFamily()
    params = family.params(torch.from_numpy(z_from_seed(seed)), truncation)
    gt = render(family, params, torch.from_numpy(c.astype(np.float32)), resolution)
    save_png(output, to_uint8(gt.image[0].numpy()))
    click.echo(f"wrote {output} ({resolution}x{resolution})")
    if depth:
        save_png(depth, depth_picture(gt.depth[0, 0].numpy(), gt.mask[0, 0].numpy()))
        click.echo(f"wrote {depth} (its scale in world units)")
    if mask:
        save_png(mask, np.clip(np.rint(gt.mask[0, 0].numpy() * 255), 0, 255).astype(np.uint8))
        click.echo(f"wrote {mask}")


@scene.command("dataset", short_help="Write N posed images in EG3D's dataset format.")
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), required=True, help="Number of images.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Sample set seed (image i is sample i of the training distribution with this seed).")
@click.option("--res", "resolution", type=click.IntRange(16, 1024), default=128, show_default=True, help="Image side in pixels.")
@out_option("output", "DATA folder, or DATA.zip; must not exist yet.", required=True, type=click.Path())
@dry_run_option("Print the resolved settings as JSON; render and write nothing.")
def scene_dataset(n: int, seed: int, resolution: int, output: str, dry_run: bool) -> None:
    """Write N posed images of the family in EG3D's dataset format (images + dataset.json labels).

    \b
    Examples:
      nerfgan scene dataset --n 1000 -o data.zip
      nerfgan scene dataset --n 1000 --res 256 --seed 1 -o data
    """
    from nerfgan.scenes.dataset import write_dataset

    if dry_run:
        echo_json({"n": n, "seed": seed, "res": resolution, "out": output})
        return
    with lazy_bar(n, "render data set", "img") as tick:
        write_dataset(output, n, seed, resolution, progress=tick)
    click.echo(f"wrote {output}: {n} images, {resolution}x{resolution}, labels in dataset.json")


@scene.command("fit", short_help="Fit the tiny EG3D to the family (the built-in teacher).")
@out_option("output", "FIT_DIR: state, log and the fitted teacher.safetensors (resumed when it holds the same fit).",
            required=True, type=click.Path(file_okay=False))
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the weights and of every step.")
@click.option("--field-steps", type=click.IntRange(1), default=_FIT_DEFAULTS.field_steps, show_default=True,
              help="Steps of the field phase.")
@click.option("--sr-samples", type=click.IntRange(8), default=_FIT_DEFAULTS.sr_samples, show_default=True,
              help="Posed objects rendered once for the super-resolution phase.")
@click.option("--sr-steps", type=click.IntRange(0), default=_FIT_DEFAULTS.sr_steps, show_default=True,
              help="Steps of the super-resolution phase.")
@click.option("--dry-run", is_flag=True, help="Print the resolved settings and fit nothing.")
def scene_fit(output: str, seed: int, field_steps: int, sr_samples: int, sr_steps: int, dry_run: bool) -> None:
    """Fit the tiny EG3D to the family by regression (the built-in `tiny` teacher; about an hour on 2 cores).

    \b
    Examples:
      nerfgan scene fit -o fit
      nerfgan scene fit -o fit --field-steps 500 --sr-steps 200 --dry-run
    """
    from nerfgan.scenes.family import SceneConfig
    from nerfgan.scenes.fit import fit

    cfg = FitConfig(seed=seed, field_steps=field_steps, sr_samples=sr_samples, sr_steps=sr_steps)
    if dry_run:
        click.echo(json.dumps({"fit": json.loads(cfg.to_json()), "scene": json.loads(SceneConfig().to_json())}, indent=1))
        return
    path = fit(Path(output), cfg, echo=click.echo)
    click.echo(f"wrote {path}; held-out curve in {Path(output) / 'fit_log.jsonl'}")


@scene.command("score", short_help="Score a teacher (and an engine) against the ground truth.")
@click.option("--teacher", "teacher_path", default="tiny", show_default=True, help="TEACHER.safetensors or a built-in name.")
@click.option("--engine", default=None, help="Also score an engine (export folder, .onnx or student .safetensors).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="With an export folder: which of its files.")
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=32, show_default=True, help="Held-out samples.")
@click.option("--seed", type=SEED, default=12345, show_default=True,
              help="Sample set seed (fitting and training never use 12345).")
@out_option("json_path", "Write the full report here (.json; old name: --json).", old=("--json",),
            type=click.Path(dir_okay=False), default=None)
@click.option("--min-psnr", type=float, default=None, help="Exit 1 if the teacher's image PSNR is below this.")
@click.option("--min-iou", type=float, default=None, help="Exit 1 if the teacher's mask IoU is below this.")
@click.option("--allow-other-teacher", is_flag=True,
              help="Score an engine that records another teacher's weights (the report says so).")
@dry_run_option("Print the resolved settings as JSON; render, score and write nothing.")
def scene_score(teacher_path: str, engine: str | None, precision: str | None, n: int, seed: int, json_path: str | None,
                min_psnr: float | None, min_iou: float | None, allow_other_teacher: bool, dry_run: bool) -> None:
    """Score a teacher (and an engine) against the exact ground truth: PSNR, SSIM, mask IoU, depth error.

    \b
    Examples:
      nerfgan scene score --teacher tiny --n 32
      nerfgan scene score --teacher tiny --engine qs/export --precision int8 -o score.json --min-psnr 25
    """
    from nerfgan.evaluate.scene_score import score, summary
    from nerfgan.io import atomic_path, check_writable

    if json_path and not json_path.lower().endswith(".json"):
        raise UsageError(f"{json_path}: -o/--out (--json) must name a .json file")
    if dry_run:
        echo_json({"teacher": teacher_path, "engine": engine, "precision": precision, "n": n, "seed": seed,
                   "out": json_path, "min_psnr": min_psnr, "min_iou": min_iou,
                   "allow_other_teacher": allow_other_teacher})
        return
    if json_path:
        check_writable(json_path, "-o/--out report")
    with lazy_bar(n, "score", "sample", leave=False) as tick:
        report = score(teacher_path, n=n, seed=seed, engine=engine, precision=precision, progress=tick,
                       allow_other_teacher=allow_other_teacher)
    click.echo(summary(report))
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        click.echo(f"wrote {json_path}")
    missed = []
    if min_psnr is not None and report["psnr_image"] < min_psnr:
        missed.append(f"image PSNR {report['psnr_image']:.2f} < {min_psnr}")
    if min_iou is not None and report["mask_iou"] < min_iou:
        missed.append(f"mask IoU {report['mask_iou']:.3f} < {min_iou}")
    if missed:
        click.echo(f"{teacher_path}: below threshold: {'; '.join(missed)}", err=True)
        raise click.exceptions.Exit(1)
