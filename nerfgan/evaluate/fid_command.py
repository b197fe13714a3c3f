"""``nerfgan fid``: FID and KID of an engine's samples against its teacher's samples or a data set's images.

Imports click only at module import; torch, torch-fidelity and the engine load when the command runs.

Samples (``nerfgan.sampling``, the training distribution, truncation psi fixed at --truncation, 1 by default):

* the engine renders samples 0 .. n-1 of the set with --seed;
* a teacher reference renders samples n .. 2n-1 of the same set: the same distribution, independent draws. FID and
  KID compare two distributions from independent samples; rendering the engine's own (z, pose) would pair the two
  sets, so a student copying each teacher view would score 0 where the teacher against fresh draws of itself does
  not (per-view agreement is what ``nerfgan parity`` measures), and the numbers would not compare with the
  teacher's FID against data or with published ones;
* a data set reference: n of its images, drawn without replacement with --seed (each image at its own size;
  torch-fidelity resizes every image to Inception's 299 x 299).

The report (-o): fid, kid_mean, kid_std, n, the same for teacher_vs_data (a teacher reference with --data), and
every setting (seed, truncation, pose distribution, Inception weights file and sha256, torch-fidelity version, KID
subsets and subset size).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from nerfgan.cli_common import DEVICE, SEED, dry_run_option, echo_json, out_option, resolve_device
from nerfgan.errors import InputFileError, UsageError

FORMAT = "nerfgan-fid"
BATCH = 16  # images per render call and per Inception call


def reference_kind(reference: str) -> str:
    """'data' for a folder or .zip (an EG3D-format data set), 'teacher' otherwise (a teacher file or built-in name)."""
    p = Path(reference)
    return "data" if p.is_dir() or p.suffix.lower() == ".zip" else "teacher"


def _engine_images(g: Any, samples: Any, psi: float) -> Iterator[Any]:
    for i in range(0, len(samples.index), BATCH):
        s = samples.subset(slice(i, i + BATCH))
        yield g.render(z=s.z, yaw=s.yaw, pitch=s.pitch, truncation=psi)


def _teacher_images(model: Any, seed: int, indices: range, dist: Any) -> Iterator[Any]:
    from nerfgan.io import to_uint8
    from nerfgan.sampling import draw
    from nerfgan.teacher.renders import render_targets, reproducible_cuda

    r = model.config.rendering
    with reproducible_cuda():
        for i in range(indices.start, indices.stop, BATCH):
            s = draw(seed, range(i, min(i + BATCH, indices.stop)), dist, r.avg_camera_radius, r.avg_camera_pivot,
                     model.config.z_dim)
            yield to_uint8(render_targets(model, s)["image"].float().cpu().numpy())


def _data_images(ds: Any, picks: list[int]) -> Iterator[Any]:
    import numpy as np

    for i in range(0, len(picks), BATCH):
        images = [ds.image(k) for k in picks[i:i + BATCH]]
        if len({im.shape for im in images}) == 1:
            yield np.stack(images)
        else:  # a data set of mixed sizes: one at a time
            yield from (im[None] for im in images)


def _features(extractor: Any, batches: Iterator[Any], sizes: set[tuple[int, int]], tick: Callable[[int], None]) -> Any:
    import torch

    from nerfgan.evaluate.fid import inception_features

    parts = []
    for images in batches:
        sizes.add((int(images.shape[1]), int(images.shape[2])))
        parts.append(inception_features(extractor, images))
        tick(len(images))
    return torch.cat(parts)


def run_fid(engine: str, reference: str, n: int, seed: int = 0, truncation: float = 1.0, data: str | None = None,
            inception_weights: str | None = None, precision: str | None = None, device: str = "auto",
            log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """FID/KID of ``engine``'s n samples against ``reference`` (see the module docstring); the report as a dict.

    Everything a user gives is checked before anything is rendered: the Inception weights (read and checked), the
    engine (loaded), the teacher or data set(s) (loaded / labels read, at least n images).
    """
    import numpy as np

    import nerfgan.runtime as nr
    from nerfgan.evaluate.fid import build_inception, fid_kid, import_torch_fidelity, metric_settings, resolve_weights
    from nerfgan.io import file_sha256
    from nerfgan.sampling import PoseDistribution, draw
    from nerfgan.scenes.dataset import open_dataset

    kind = reference_kind(reference)
    if data is not None and kind == "data":
        raise UsageError("--data: gives the teacher's own FID against a data set; the reference is already one")
    t0 = time.perf_counter()
    import_torch_fidelity()  # the metrics extra, then the weights: both before anything is loaded or rendered
    weights = resolve_weights(inception_weights)
    dev = resolve_device(device)
    extractor = build_inception(weights, device=dev)
    datasets = {}
    for option, path in (("--reference", reference if kind == "data" else None), ("--data", data)):
        if path is not None:
            ds = open_dataset(path)
            if len(ds) < n:
                raise InputFileError(f"{option} {path}: has {len(ds)} images, fewer than --n {n}")
            datasets[option] = ds
    model = None
    if kind == "teacher":
        from nerfgan.teacher.checkpoint import load_teacher

        model = load_teacher(reference, device=dev)
    dist = PoseDistribution(psi_min=truncation, psi_max=truncation)
    done = 0

    def tick(k: int) -> None:
        nonlocal done
        done += k
        log(f"  {done} images through Inception-v3 ...")

    with nr.load(engine, precision=precision, device=device) as g:
        log(f"fid: {n} samples of {engine} ({g.backend}, {g.precision}) against {kind} {reference} on {dev}")
        samples = draw(seed, range(n), dist, g.radius, (g.pivot[0], g.pivot[1], g.pivot[2]), g.z_dim)
        engine_sizes: set[tuple[int, int]] = set()
        f_engine = _features(extractor, _engine_images(g, samples, truncation), engine_sizes, tick)
        backend, engine_precision = g.backend, g.precision
    ref_sizes: set[tuple[int, int]] = set()
    data_picks: dict[str, list[int]] = {}
    for option, ds in datasets.items():
        data_picks[option] = sorted(int(k) for k in np.random.default_rng(seed).choice(len(ds), n, replace=False))
    if model is not None:
        f_ref = _features(extractor, _teacher_images(model, seed, range(n, 2 * n), dist), ref_sizes, tick)
        ref_how = f"samples {n}..{2 * n - 1} of the set with seed {seed} (the engine's: 0..{n - 1})"
    else:
        ds = datasets["--reference"]
        f_ref = _features(extractor, _data_images(ds, data_picks["--reference"]), ref_sizes, tick)
        ref_how = f"{n} of its {len(ds)} images, drawn without replacement with seed {seed}"
    report: dict[str, Any] = {"format": FORMAT, **fid_kid(f_engine, f_ref), "n": n, "engine": str(engine),
                              "backend": backend, "precision": engine_precision,
                              "reference": {"kind": kind, "path": str(reference), "samples": ref_how},
                              "teacher_vs_data": None}
    if data is not None:
        ds = datasets["--data"]
        data_sizes: set[tuple[int, int]] = set()
        f_data = _features(extractor, _data_images(ds, data_picks["--data"]), data_sizes, tick)
        report["teacher_vs_data"] = {"data": str(data), **fid_kid(f_ref, f_data),
                                     "samples": f"{n} of its {len(ds)} images, drawn without replacement with seed "
                                                f"{seed}", "resolutions": sorted(data_sizes)}
    report["settings"] = {"seed": seed, "truncation": truncation, "engine_samples": f"0..{n - 1}",
                          "pose_distribution": asdict(dist), "device": dev,
                          "inception_weights": str(weights), "inception_weights_sha256": file_sha256(weights),
                          **metric_settings(n)}
    report["resolutions"] = {"engine": sorted(engine_sizes), "reference": sorted(ref_sizes)}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [f"FID {report['fid']:.4g}, KID {report['kid_mean']:.4g} +- {report['kid_std']:.3g} "
             f"({report['n']} samples of {report['engine']} against {report['reference']['kind']} "
             f"{report['reference']['path']})"]
    tvd = report.get("teacher_vs_data")
    if tvd:
        lines.append(f"teacher against {tvd['data']}: FID {tvd['fid']:.4g}, KID {tvd['kid_mean']:.4g} +- "
                     f"{tvd['kid_std']:.3g}")
    return "\n".join(lines)


@click.command("fid", short_help="FID and KID of an engine against its teacher or a data set.")
@click.option("--engine", required=True, help="Export folder, .onnx, .plan or student .safetensors.")
@click.option("--reference", required=True,
              help="TEACHER (TEACHER.safetensors or a built-in name: tiny) or DATA (an EG3D-format data set: "
                   "folder or .zip with dataset.json).")
@click.option("--data", default=None,
              help="With a TEACHER reference: also the teacher's FID/KID against this data set (folder or .zip).")
@click.option("--n", "n", type=click.IntRange(2, 100_000), default=1000, show_default=True,
              help="Samples on each side (FID is biased upward at small n: compare numbers at equal n).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Sample set seed.")
@click.option("--truncation", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Truncation psi of every sample (engine and teacher).")
@click.option("--inception-weights", default=None, type=click.Path(dir_okay=False),
              help="torch-fidelity's Inception-v3 weights (weights-inception-2015-12-05-6726825d.pth, or the same "
                   "tensors as .safetensors); default: the file in torch hub's cache. Nothing is downloaded.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="With an export folder: which of its files.")
@DEVICE
@out_option("json_path", "Write the report here (.json; old name: --json).", old=("--json",),
            type=click.Path(dir_okay=False), default=None)
@dry_run_option("Print the resolved settings as JSON; load, render and write nothing.")
def fid_command(engine: str, reference: str, data: str | None, n: int, seed: int, truncation: float,
                inception_weights: str | None, precision: str | None, device: str, json_path: str | None,
                dry_run: bool) -> None:
    """FID and KID (torch-fidelity, Inception-v3 pool features) of ENGINE's samples from the training pose
    distribution against a teacher's samples (independent draws of the same distribution) or a data set's images.

    The Inception weights are read without unpickling (a torch zip-format state dict or .safetensors, keys and
    shapes checked). Get them once from torch-fidelity's release (v0.2.0, weights-inception-2015-12-05-6726825d.pth)
    and pass --inception-weights, or keep them in torch hub's cache.

    \b
    Examples:
      nerfgan fid --engine qs/export --reference tiny --n 1000 --inception-weights incep.pth -o fid.json
      nerfgan fid --engine qs/export --reference tiny --data data.zip --n 500 -o fid.json
      nerfgan fid --engine qs/run/student.safetensors --reference data.zip --n 64 --dry-run
    """
    from nerfgan.io import atomic_path, check_writable

    if json_path and not json_path.lower().endswith(".json"):
        raise UsageError(f"{json_path}: -o/--out (--json) must name a .json file")
    settings = {"engine": engine, "reference": reference, "reference_kind": reference_kind(reference), "data": data,
                "n": n, "seed": seed, "truncation": truncation, "inception_weights": inception_weights,
                "precision": precision, "device": device, "out": json_path}
    if dry_run:
        echo_json(settings)
        return
    if json_path:
        check_writable(json_path, "-o/--out report")
    report = run_fid(engine, reference, n, seed=seed, truncation=truncation, data=data,
                     inception_weights=inception_weights, precision=precision, device=device,
                     log=lambda s: click.echo(s, err=True))
    click.echo(summary(report))
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_path}")
