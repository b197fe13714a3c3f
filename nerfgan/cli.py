"""Command line: ``nerfgan`` (teacher, train, calibrate, export, parity, bench, quickstart) and ``nerfgan-export``.

A user's mistake (NerfganError) is printed on one line without a traceback and exits with the
error's code (1, or 2 for usage errors); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from nerfgan.cli_common import DEVICE, SEED, checkpoint_option, dry_run_option, echo_json, out_option, version_option
from nerfgan.cli_common import resolve_device as _device
from nerfgan.errors import NerfganError, UsageError
from nerfgan.io import check_writable
from nerfgan.student.train_presets import TRAIN_PRESETS  # names only: no torch



@click.group()
@version_option("nerfgan")
def cli() -> None:
    """nerfgan: distil an EG3D teacher into a fast student, export it, run it.

    \b
    start here: nerfgan quickstart -o qs

    \b
    Examples:
      nerfgan quickstart -o qs
      nerfgan teacher render --teacher tiny --seed 3 --pose 30,0 -o view.png
      nerfgan train --teacher tiny -o run --minutes 10
      nerfgan export --student qs/run/student.safetensors -o export
      nerfgan-run --engine qs/export --seed 3 --pose 30,0 -o view.png
    """


def _register_runtime_commands() -> None:
    """`nerfgan parity` and `nerfgan bench` live beside their code; importing them loads no torch."""
    from nerfgan.runtime.bench import bench_command
    from nerfgan.runtime.parity import parity_command

    cli.add_command(parity_command)
    cli.add_command(bench_command)
    from nerfgan.scenes.commands import scene

    cli.add_command(scene)
    from nerfgan.serve.command import serve_command  # imports click only; FastAPI and uvicorn when it serves

    cli.add_command(serve_command)
    from nerfgan.student.invert_command import invert_command  # imports click only; torch when it runs

    cli.add_command(invert_command)
    from nerfgan.evaluate.fid_command import fid_command  # imports click only; torch and torch-fidelity when it runs

    cli.add_command(fid_command)
    from nerfgan.export.web_command import web_command  # imports click only; the site's writer when it runs

    cli.add_command(web_command)


_register_runtime_commands()


@cli.group(short_help="The EG3D teacher: import, render, render sets, verify.")
def teacher() -> None:
    """The EG3D teacher: import upstream checkpoints, render, verify against upstream renders.

    \b
    Examples:
      nerfgan teacher render --teacher tiny --seed 3 --pose 30,0 -o view.png
      nerfgan teacher import ffhq512-128.pkl -o ffhq.safetensors
      nerfgan teacher renders --teacher tiny --n 1024 -o renders
    """


@teacher.command("verify", short_help="Compare the teacher with upstream's recorded outputs.")
@click.argument("reference", type=click.Path(dir_okay=False))
@dry_run_option("Print the resolved settings as JSON; render nothing.")
@DEVICE
def teacher_verify(reference: str, dry_run: bool, device: str) -> None:
    """Render REFERENCE.npz's recorded inputs and compare with its upstream outputs.

    Prints the max absolute error of each output against its tolerance; exits 0 when all are
    within, 1 otherwise.

    \b
    Examples:
      nerfgan teacher verify tests/fixtures/eg3d_tiny_sr128.npz
      nerfgan teacher verify reference.npz --device cuda
    """
    from nerfgan.teacher.reference import verify_reference

    if dry_run:
        echo_json({"reference": reference, "device": _device(device)})
        return
    checks = verify_reference(reference, device=_device(device))
    click.echo(f"{'output':<15} {'max abs error':>14} {'tolerance':>10}  result")
    for c in checks:
        click.echo(f"{c.name:<15} {c.max_abs_error:>14.3e} {c.tolerance:>10.0e}  {'ok' if c.ok else 'FAIL'}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        click.echo(f"{reference}: {len(failed)} output(s) outside tolerance: {', '.join(failed)}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"{reference}: all {len(checks)} outputs within tolerance")


@teacher.command("import", short_help="Convert an upstream EG3D snapshot to a safetensors teacher.")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@out_option("output", "TEACHER.safetensors to write.", required=True, type=click.Path(dir_okay=False))
@click.option("--which", type=click.Choice(["G_ema", "G"]), default="G_ema", show_default=True,
              help="Which generator of the snapshot to convert.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and write nothing.")
def teacher_import(checkpoint: str, output: str, which: str, dry_run: bool) -> None:
    """Convert an upstream EG3D snapshot CHECKPOINT.pkl to a safetensors teacher (nothing in it is executed).

    \b
    Examples:
      nerfgan teacher import ffhq512-128.pkl -o ffhq.safetensors
      nerfgan teacher import ffhq512-128.pkl -o ffhq.safetensors --dry-run
    """
    from nerfgan.errors import CheckpointError, ConfigError
    from nerfgan.teacher.checkpoint import build_teacher, save_teacher
    from nerfgan.teacher.config import TeacherConfig
    from nerfgan.teacher.upstream_pickle import read_upstream_snapshot

    if not dry_run:
        check_writable(output, "teacher file")
    snap = read_upstream_snapshot(checkpoint, which=which)
    try:
        config = TeacherConfig.from_upstream(snap.init_kwargs, snap.neural_rendering_resolution, source=checkpoint)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if dry_run:
        click.echo(config.to_json())
        return
    model = build_teacher(config, snap.state_dict, source=f"{checkpoint} [{which}]")
    save_teacher(model, output, extra_metadata={"source": str(checkpoint), "source_entry": which})
    n = sum(v.numel() for v in model.state_dict().values())
    click.echo(f"wrote {output}: {len(snap.state_dict)} tensors, {n:,} values, "
               f"{config.img_resolution}px SuperresolutionHybrid{config.rendering.superresolution}, "
               f"neural rendering {config.neural_rendering_resolution}px")


@teacher.command("render", short_help="Render one view of one seed with the teacher.")
@checkpoint_option("teacher", "teacher_path", default="tiny", show_default=True,
                   help="The teacher: TEACHER.safetensors, or the name of a built-in teacher ('tiny': EG3D fitted to "
                        "nerfgan's scene family). Old name: --ckpt.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Latent seed (numpy RandomState, as upstream).")
@click.option("--pose", "pose_text", default="0,0", show_default=True,
              help="YAW,PITCH[,RADIUS]: degrees from the frontal view; +yaw moves the camera to the subject's "
                   "left (world +x), +pitch moves it up. Radius defaults to the checkpoint's.")
@click.option("--truncation", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True, help="Truncation psi.")
@click.option("--fov", type=click.FloatRange(1.0, 120.0), default=None,
              help="Diagonal field of view in degrees (default: focal 4.2647, about 18.8 degrees).")
@out_option("output", "Image to write (.png).", required=True, type=click.Path(dir_okay=False))
@click.option("--depth", type=click.Path(dir_okay=False), default=None, help="Also write the depth (.png at the image's size: a colour scale with its range in world units, "
                   "empty pixels as a grey checker).")
@click.option("--dry-run", is_flag=True, help="Print the resolved cameras and config, render nothing.")
@DEVICE
def teacher_render(teacher_path: str, seed: int, pose_text: str, truncation: float, fov: float | None, output: str,
                   depth: str | None, dry_run: bool, device: str) -> None:
    """Render one view of one seed: a newcomer's first picture.

    \b
    Examples:
      nerfgan teacher render --teacher tiny --seed 3 --pose 30,0 -o view.png
      nerfgan teacher render --teacher qs/teacher.safetensors --seed 7 -o view.png --depth depth.png
    """
    from nerfgan import camera
    from nerfgan.depth_picture import depth_picture
    from nerfgan.io import save_png, to_uint8
    from nerfgan.teacher.checkpoint import load_teacher
    from nerfgan.teacher.views import cameras_for, render_view

    yaw, pitch, radius = camera.parse_pose(pose_text)
    for path in [output] + ([depth] if depth else []):
        if not path.lower().endswith(".png"):
            raise UsageError(f"{path}: output must be a .png file")
        if not dry_run:
            check_writable(path, "image")
    model = load_teacher(teacher_path, device=_device(device))
    if dry_run:
        c, c_cond = cameras_for(model, yaw, pitch, radius, fov)
        click.echo(json.dumps({"seed": seed, "yaw_deg": yaw, "pitch_deg": pitch, "truncation": truncation,
                               "render_camera": c.tolist(), "conditioning_camera": c_cond.tolist(),
                               "teacher": json.loads(model.config.to_json())}, indent=1))
        return
    out = render_view(model, seed, yaw, pitch, radius, fov, truncation)
    save_png(output, to_uint8(out.image[0].cpu().numpy()))
    click.echo(f"wrote {output} ({out.image.shape[-1]}x{out.image.shape[-2]})")
    if depth:
        assert out.image_mask is not None  # synthesis always sets it
        res = out.image.shape[-1]
        save_png(depth, depth_picture(out.image_depth[0].cpu().numpy(), out.image_mask[0].cpu().numpy(), size=res))
        click.echo(f"wrote {depth} (depth rendered at {out.image_depth.shape[-1]} px, shown at {res} px, "
                   "with its scale in world units)")


@teacher.command("renders", short_help="Render N teacher samples into a sharded render set.")
@click.option("--teacher", "teacher_path", required=True,
              help="TEACHER.safetensors, or the name of a built-in teacher ('tiny').")
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), required=True,
              help="Number of samples in the set (a larger --n extends a set).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sample set (sample i depends on (seed, i) only).")
@out_option("output", "RENDERS_DIR: the render set directory (created, or resumed when it holds the same set).",
            required=True, type=click.Path(file_okay=False))
@click.option("--batch-size", type=click.IntRange(1, 1024), default=4, show_default=True, help="Samples per teacher call.")
@click.option("--shard-size", type=click.IntRange(1, 4096), default=64, show_default=True, help="Samples per shard file.")
@click.option("--yaw-std", type=click.FloatRange(min=0.0), default=20.0, show_default=True,
              help="Standard deviation of the render yaw, degrees (clipped to +-60).")
@click.option("--pitch-std", type=click.FloatRange(min=0.0), default=10.0, show_default=True,
              help="Standard deviation of the render pitch, degrees (clipped to +-30).")
@click.option("--dry-run", is_flag=True, help="Print the index header and what would be rendered; render nothing.")
@DEVICE
def teacher_renders(teacher_path: str, n: int, seed: int, output: str, batch_size: int, shard_size: int,
                    yaw_std: float, pitch_std: float, dry_run: bool, device: str) -> None:
    """Render the teacher once for N seeded samples into a sharded render set (training, calibration, parity).

    \b
    Examples:
      nerfgan teacher renders --teacher tiny --n 1024 -o renders
      nerfgan teacher renders --teacher tiny --n 2048 -o renders     # extends the set to 2048
    """
    import time

    from nerfgan.sampling import PoseDistribution
    from nerfgan.teacher.renders import RenderSet, make_render_set, plan_render_set

    dist = PoseDistribution(yaw_std_deg=yaw_std, pitch_std_deg=pitch_std)
    args: dict[str, Any] = dict(teacher_path=teacher_path, n=n, out_dir=output, seed=seed, dist=dist, shard_size=shard_size,
                batch_size=batch_size, device=_device(device))
    if dry_run:
        plan = plan_render_set(**args)
        click.echo(json.dumps({**plan.header, "samples_present": plan.samples_kept,
                               "shards_to_render": [{"start": s, "count": c} for s, c in plan.todo]}, indent=1))
        return
    t0 = time.perf_counter()
    make_render_set(**args, progress=True)
    seconds = time.perf_counter() - t0
    rs = RenderSet.open(output, verify=False)
    click.echo(f"wrote {output}: {len(rs)} samples in {len(rs.shard_entries)} shards, "
               f"{rs.disk_bytes() / 1e6:.1f} MB, {seconds:.1f} s")


@cli.command("train", short_help="Distil the teacher into a convolutional student.")
@click.option("--teacher", "teacher_path", default="tiny", show_default=True,
              help="TEACHER.safetensors, or a built-in teacher name.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False), help="RUN_DIR: checkpoints, metrics, grids.")
@click.option("--preset", type=click.Choice(sorted(TRAIN_PRESETS)), default="tiny", show_default=True,
              help="Student widths and training defaults.")
@click.option("--renders", type=click.Path(file_okay=False), default=None,
              help="Teacher render set (nerfgan teacher renders); default: render on the fly.")
@click.option("--refresh", type=click.FloatRange(0, 1), default=None, help="With --renders: fraction of each batch rendered fresh.")
@click.option("--real", type=click.Path(), default=None,
              help="DATA folder or DATA.zip in EG3D's dataset format (dataset.json camera labels; nerfgan scene "
                   "dataset makes one): in stage 2 the discriminator also sees these real images with their cameras. "
                   "Images must be the teacher's output size.")
@click.option("--real-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="With --real: fraction of the discriminator's real samples that are real images (the rest are "
                   "teacher renders).  [default: 0.5]")
@click.option("--steps", type=click.IntRange(1), default=None, help="Train until this many steps in total.")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Train for this many minutes of training time (evaluations and checkpoints not counted); with "
                   "--steps, whichever comes first.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Global batch (split over processes).")
@click.option("--stage1-steps", type=click.IntRange(0), default=None, help="Reconstruction-only steps before the adversarial loss.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, help="Student learning rate.")
@click.option("--no-pose", is_flag=True, help="Ablation: the student's mapping sees w only.")
@click.option("--eval-every", type=click.IntRange(0), default=None, help="Steps between held-out evaluations.")
@click.option("--eval-minutes", default=None, help="Also evaluate at these training minutes, e.g. 0,1,2,5,10,20.")
@click.option("--ckpt-every", type=click.IntRange(1), default=None, help="Steps between checkpoints.")
@click.option("--n-eval", type=click.IntRange(1), default=None, help="Held-out samples for PSNR/SSIM.")
@click.option("--seed", type=SEED, default=None, help="Seed of the sample stream and initialisation.")
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit.")
@DEVICE
def train(teacher_path: str, run_dir: str, preset: str, renders: str | None, refresh: float | None, real: str | None,
          real_fraction: float | None, steps: int | None, minutes: float | None, resume: bool, batch_size: int | None,
          stage1_steps: int | None, lr: float | None, no_pose: bool, eval_every: int | None, eval_minutes: str | None,
          ckpt_every: int | None, n_eval: int | None, seed: int | None, dry_run: bool, device: str) -> None:
    """Distil the teacher into a pose-conditioned convolutional student (torchrun for many processes).

    \b
    Examples:
      nerfgan train --teacher tiny -o run --minutes 10
      nerfgan train --teacher tiny -o run --steps 2000 --renders renders
      nerfgan train --teacher tiny -o run --steps 4000 --resume
      nerfgan train --teacher tiny -o run --steps 4000 --real data.zip --real-fraction 0.5
      torchrun --nproc_per_node=2 -m nerfgan.cli train --teacher tiny -o run --steps 2000
    """
    from nerfgan.student.real_data import RealImages
    from nerfgan.student.train import Trainer, init_distributed, train_preset
    from nerfgan.teacher.checkpoint import load_teacher, read_teacher_metadata, resolve_teacher_path, teacher_config_of

    overrides: dict[str, object] = {k: v for k, v in {
        "batch_size": batch_size, "stage1_steps": stage1_steps, "lr": lr, "eval_every": eval_every,
        "ckpt_every": ckpt_every, "n_eval": n_eval, "seed": seed, "refresh": refresh}.items() if v is not None}
    if no_pose:
        overrides["pose_input"] = False
    if eval_minutes:
        try:
            overrides["eval_minutes"] = tuple(float(m) for m in eval_minutes.split(","))
        except ValueError:
            raise UsageError(f"--eval-minutes: expected numbers separated by commas, got {eval_minutes!r}") from None
    if refresh and not renders:
        raise UsageError("--refresh needs --renders")
    if real_fraction is not None and real is None:
        raise UsageError("--real-fraction needs --real")
    if steps is None and minutes is None and not dry_run:
        raise UsageError("give --steps N or --minutes M")
    real_images = RealImages(real) if real is not None else None  # labels and image headers checked: before the teacher
    if real_images is not None:
        overrides.update(real_images.config_fields(0.5 if real_fraction is None else real_fraction))
    cfg = train_preset(preset, **overrides)
    if real_images is not None:  # image size against the teacher's (from its file's header), enough images a step
        teacher_config = teacher_config_of(resolve_teacher_path(teacher_path), read_teacher_metadata(teacher_path))
        real_images.check(cfg.student_config(teacher_config).img_resolution, cfg.real_fraction, cfg.batch_size)
    dev = init_distributed(_device(device))
    if not dry_run and int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"loading the teacher {teacher_path} ...", err=True)
    teacher = load_teacher(teacher_path, device=dev)
    if dry_run:
        scfg = cfg.student_config(teacher.config)
        click.echo(json.dumps({"train": json.loads(cfg.to_json()), "student": json.loads(scfg.to_json())}, indent=1))
        return
    trainer = Trainer(cfg, teacher, run_dir, renders=renders, resume=resume, device=dev, real=real_images)
    rows = trainer.run(steps=steps, minutes=minutes)
    if trainer.rank == 0:
        last = rows[-1]
        click.echo(f"step {trainer.step}: held-out PSNR {last['psnr_hr']:.2f} dB (high-res), {last['psnr_lr']:.2f} dB "
                   f"(low-res); wrote {trainer.run_dir / 'student.safetensors'}")


@cli.command("quickstart", short_help="Start here: the whole pipeline on the built-in teacher.")
@out_option("out_dir", "DIR for everything the pipeline makes.", default="quickstart", show_default=True,
            type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Distillation steps (default 600: the same student on any machine, however busy).")
@click.option("--minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Distil for this much training time instead of --steps (the student then depends on the "
                   "machine's speed; the summary warns when it ends early).")
@click.option("--renders", "n_renders", type=click.IntRange(8), default=192, show_default=True,
              help="Teacher renders to distil from.")
@click.option("--force", is_flag=True, help="Redo every stage instead of reusing finished ones.")
@dry_run_option("Print the resolved settings and which stages would run as JSON; make nothing.")
@DEVICE
def quickstart(out_dir: str, steps: int | None, minutes: float | None, n_renders: int, force: bool, dry_run: bool,
               device: str) -> None:
    """The whole pipeline on the built-in teacher: distil, export, render, check parity and ground truth, benchmark.

    \b
    Examples:
      nerfgan quickstart -o qs
      nerfgan quickstart -o qs --steps 200 --renders 64
      nerfgan quickstart -o qs --minutes 2      # a time budget instead of steps
      nerfgan quickstart -o qs --force          # redo every stage
    """
    from nerfgan.quickstart import STAGES, Quickstart

    if steps is not None and minutes is not None:
        raise UsageError("--steps and --minutes: give one training budget, not both")
    q = Quickstart(out_dir, minutes, n_renders, force, _device(device), steps=steps)
    if dry_run:
        echo_json({"out": out_dir, "steps": q.steps, "minutes": q.minutes, "renders": n_renders, "force": force,
                   "device": q.device, "stages": {s: "reuse" if q.done(s) else "run" for s in STAGES}})
        return
    q.run()
    q.summary()


def _batch_triple(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) == 1:
        parts = (1, parts[0], parts[0])
    if len(parts) != 3:
        raise UsageError(f"--batch: expected MIN,OPT,MAX (or MAX) as integers, got {text!r}")
    return parts  # type: ignore[return-value]


@cli.command("calibrate", short_help="Store calibration samples for INT8 export and its gate.")
@click.option("--teacher", "teacher_path", default="tiny", show_default=True,
              help="The teacher: TEACHER.safetensors the student was distilled from, or a built-in teacher name.")
@checkpoint_option("student", "student_path", required=True, type=click.Path(dir_okay=False),
                   help="The student: STUDENT.safetensors (a run's student.safetensors). Old name: --ckpt.")
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=256, show_default=True, help="Number of samples.")
@out_option("output", "CALIB.npz to write.", required=True, type=click.Path(dir_okay=False))
@click.option("--seed", type=SEED, default=1, show_default=True,
              help="Seed of the samples (training pose distribution). Training draws seed 0 by default: another "
                   "seed keeps the INT8 gate on samples the student never saw.")
@click.option("--renders", type=click.Path(file_okay=False), default=None,
              help="Take the first N samples of this teacher render set instead of rendering (its seed).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=4, show_default=True, help="Samples per teacher call.")
@click.option("--allow-other-teacher", is_flag=True,
              help="Calibrate even when the student records another teacher's weights (the file says so).")
@dry_run_option("Print the resolved settings as JSON; render and write nothing.")
def calibrate(teacher_path: str, student_path: str, n: int, output: str, seed: int, renders: str | None,
              batch_size: int, allow_other_teacher: bool, dry_run: bool) -> None:
    """Store the student's ONNX inputs and the teacher's renders for N samples (INT8 calibration and its gate).

    \b
    Examples:
      nerfgan calibrate --teacher tiny --student qs/run/student.safetensors --n 32 -o calib.npz
      nerfgan calibrate --teacher qs/teacher.safetensors --student qs/run/student.safetensors \\
          --renders qs/renders --n 64 -o calib.npz
    """
    from nerfgan.calibrate.calibset import load_calibration_set, make_calibration_set

    if dry_run:
        echo_json({"teacher": teacher_path, "student": student_path, "n": n, "out": output, "seed": seed,
                   "renders": renders, "batch_size": batch_size, "allow_other_teacher": allow_other_teacher})
        return
    make_calibration_set(teacher_path, student_path, n, output, seed=seed, renders=renders, batch_size=batch_size, progress=True,
                         allow_other_teacher=allow_other_teacher)
    cs = load_calibration_set(output)
    click.echo(f"wrote {output}: {len(cs)} samples ({cs.meta['source']}, seed {cs.meta['seed']})")


def _export_options(f: Any) -> Any:
    options = [
        checkpoint_option("student", "student_path", required=True, type=click.Path(dir_okay=False),
                          help="The student to export: STUDENT.safetensors (a run's student.safetensors). "
                               "Old name: --ckpt."),
        out_option("out_dir", "OUT_DIR for the ONNX files, plans and manifest.json.", default="export",
                   show_default=True, type=click.Path(file_okay=False)),
        click.option("--fp16", is_flag=True, help="Also write student_fp16.onnx (float16 inside, float32 IO)."),
        click.option("--int8", is_flag=True, help="Also write student_int8.onnx (symmetric per-channel Q/DQ)."),
        click.option("--calib", type=click.Path(dir_okay=False), default=None, help="CALIB.npz for --int8 (nerfgan calibrate)."),
        click.option("--int8-exclude", default=None,
                     help="Comma-separated node-name patterns kept in float (fnmatch; 'depthwise' = the FIR "
                          "convolutions). Default: '*/torgb/*,depthwise'."),
        click.option("--int8-backend", type=click.Choice(["auto", "ort", "modelopt"]), default="auto", show_default=True,
                     help="Who inserts the Q/DQ nodes (auto: ModelOpt when installed, else ONNX Runtime)."),
        click.option("--int8-min-psnr", type=float, default=None,
                     help="dB: the INT8 gate's floor for every output against the FP32 student, on the calibration "
                          "file's held-out samples. Default: 30."),
        click.option("--trt", is_flag=True, help="Also build TensorRT plans (needs nerfgan[tensorrt] and a GPU)."),
        click.option("--workspace", type=click.FloatRange(0.1), default=4.0, show_default=True,
                     help="TensorRT builder workspace, GiB."),
        click.option("--triton", type=click.Path(file_okay=False), default=None,
                     help="REPO_DIR: also write a Triton model repository (mapping, student, ensemble)."),
        click.option("--triton-precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
                     help="Student precision Triton serves (default: the lowest exported)."),
        click.option("--triton-backend", type=click.Choice(["onnxruntime", "tensorrt", "python"]), default=None,
                     help="Who runs the composing models: Triton's ONNX Runtime backend, TensorRT (the student as a "
                          "plan; needs --trt), or its Python backend running nerfgan.runtime (CPU-only servers, "
                          "tests). Default: tensorrt with --trt, else onnxruntime."),
        click.option("--batch", "batch_text", default=None,
                     help="MIN,OPT,MAX batch of the TensorRT profile and Triton's max_batch_size (MAX alone: 1,MAX,MAX). "
                          "Default 1,16,16 with --triton (plans tuned for the batches Triton forms), else 1,1,16."),
        click.option("--aoti", is_flag=True,
                     help="Also compile student.pt2, an AOTInductor package (PyTorch, no TensorRT) for --device, "
                          "held to the FP32 gate; run it with nerfgan-run --backend pt2. About a minute of C++ "
                          "compilation for the tiny student on 2 cores."),
        click.option("--device", "aoti_device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                     help="Where the --aoti package is compiled and runs (a cuda package needs that GPU)."),
        click.option("--web", type=click.Path(file_okay=False), default=None,
                     help="SITE_DIR: also write a static web page that renders the export in the browser "
                          "(ONNX Runtime Web; as `nerfgan web`)."),
        click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset."),
        click.option("--dry-run", is_flag=True, help="Print the resolved export config and exit."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_export(student_path: str, out_dir: str, fp16: bool, int8: bool, calib: str | None, int8_exclude: str | None,
                int8_min_psnr: float | None,
                int8_backend: str, trt: bool, workspace: float, triton: str | None, triton_precision: str | None,
                triton_backend: str | None, batch_text: str | None, opset: int, dry_run: bool, aoti: bool = False,
                aoti_device: str = "cpu", web: str | None = None) -> None:
    from nerfgan.export.pipeline import ExportConfig, export

    extra: dict[str, Any] = {}
    if int8_exclude is not None:
        extra["int8_exclude"] = tuple(p.strip() for p in int8_exclude.split(",") if p.strip())
    if int8_min_psnr is not None:
        extra["int8_min_psnr_vs_fp32"] = int8_min_psnr
    batch = _batch_triple(batch_text) if batch_text else None
    config = ExportConfig(batch=batch, opset=opset, fp16=fp16, int8=int8, calib=calib,
                          int8_backend=int8_backend, trt=trt, workspace_gib=workspace, triton=triton,
                          triton_precision=triton_precision, triton_backend=triton_backend, aoti=aoti,
                          aoti_device=aoti_device, **extra)
    if web is not None:  # before any work: the site's folder may be written
        from nerfgan.export.web import check_destination

        check_destination(web, "--web", out_dir)
    if dry_run:
        click.echo(json.dumps({"student": student_path, "out": out_dir, "export": json.loads(config.to_json()),
                               "web": web}, indent=1))
        return
    manifest = export(student_path, out_dir, config, log=click.echo)
    click.echo(f"wrote {out_dir}: " + ", ".join(a["file"] for a in manifest["artifacts"]) + ", manifest.json")
    if web is not None:
        from nerfgan.export.web import write_site

        write_site(out_dir, web, "--web", log=click.echo)


_EXPORT_HELP = """Export a student to validated ONNX (FP32, FP16, INT8), TensorRT plans and a Triton repository.

    \b
    Examples:
      {prog} --student qs/run/student.safetensors -o export
      {prog} --student qs/run/student.safetensors -o export --fp16 --int8 --calib qs/calib.npz
      {prog} --student qs/run/student.safetensors -o export --trt --triton repo
      {prog} --student qs/run/student.safetensors -o export --aoti --device cpu
      {prog} --student qs/run/student.safetensors -o export --int8 --calib qs/calib.npz --web site
      {prog} --student qs/run/student.safetensors -o export --dry-run
    """


@cli.command("export", help=_EXPORT_HELP.format(prog="nerfgan export"),
             short_help="Export a student to ONNX, TensorRT and Triton.")
@_export_options
def export_command(**kwargs: Any) -> None:
    _run_export(**kwargs)


@click.command("nerfgan-export", help=_EXPORT_HELP.format(prog="nerfgan-export"))
@version_option("nerfgan-export")
@_export_options
def export_cli(**kwargs: Any) -> None:
    _run_export(**kwargs)


def run_standalone(command: click.Command, name: str, argv: Sequence[str] | None) -> None:
    """Run a click command as a program: a NerfganError is one `Error: ...` line and its exit code, no traceback."""
    try:
        rv = command.main(args=list(argv) if argv is not None else None, prog_name=name, standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.UsageError as e:  # click's own option checks: one line too, with where to look
        where = f"{e.ctx.command_path} --help" if e.ctx is not None else f"{name} --help"
        click.echo(f"Error: {e.format_message()} (see {where})", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except NerfganError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


def export_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``nerfgan-export``."""
    run_standalone(export_cli, "nerfgan-export", argv)


def run_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``nerfgan-run`` (nerfgan.runtime.run_cli; loads no torch for ONNX files and plans)."""
    from nerfgan.runtime.run_cli import run

    run_standalone(run, "nerfgan-run", argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``nerfgan`` command."""
    run_standalone(cli, "nerfgan", argv)


if __name__ == "__main__":
    main()
