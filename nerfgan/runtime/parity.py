"""``nerfgan parity``: does an exported engine render what its teacher renders, from every pose, in 3D?

    nerfgan parity --teacher tiny --engine export/ --n 64 -o parity/ --min-psnr 30 --max-consistency-gap 1

Samples: sample i is seed S + i // 5 at yaw YAWS[i % 5] (0, -20, 20, -40, 40 degrees) and pitch
PITCHES[(i // 5) % 3] (0, 8, -8 degrees), so PSNR-vs-yaw has about n / 5 points per yaw. The teacher
(PyTorch) renders each view alone (batch 1) with nerfgan.teacher.renders' settings: deterministic ray
sampling, backbone noise 'const', truncation over all ws, strict float32 on CUDA. The engine (the
runtime Generator) gets the teacher's own style code w = ws[:, 0] and the same pose; the engine's
mapping is checked against it and reported as max |w_teacher - w_engine|.

Figures. Images are clipped to [-1, 1] (data range 2); PSNR is capped at 100 dB (identical images).
* Per sample: PSNR and SSIM (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, as
  nerfgan.student.losses.ssim) of the final image, and of the engine's image_raw against the teacher's
  clean rendered colour feature_image[:, :3] (not the teacher's image_raw: upstream's SR quirk, see
  nerfgan.teacher.renders). Aggregates are means over samples, also per yaw.
* 3D consistency, for each seed's view pairs A = yaw 0 -> B = yaw -20 / +20 (same pitch): a backward warp
  at the neural rendering resolution R of the low-resolution colour. Each pixel of B is unprojected with
  the TEACHER's depth of B (the expected distance along the pixel's unit ray direction, as
  nerfgan.teacher.rays and the renderer define it, not z-depth), projected into A and A's colour sampled
  there bilinearly. A pixel is valid when it lands inside A's image, in front of A's camera, and its
  distance to A's camera agrees with the teacher's depth of A there within DEPTH_TOL (relative; the
  occlusion test). PSNR of warp(A) against B over the valid pixels, for the engine's views and for the
  teacher's (one mask for both). The gap is teacher - engine in dB: positive when the engine is less
  3D-consistent than its teacher. Blur favours this measure (a blurrier image is more consistent across
  views), so an engine above its teacher here is not a quality win.

REPORT_DIR receives report.json (every figure, thresholds, verdict: 'none' when no threshold was given,
identities with sha256), report.md, grid.png (captioned: seed and pose per row, difference scale in the
footer) and psnr_vs_yaw.png, each written atomically, report.json last.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

import nerfgan
from nerfgan import camera
from nerfgan.cli_common import SeedType, dry_run_option, echo_json, out_option
from nerfgan.errors import NerfganError, UsageError
from nerfgan.runtime import DEVICES
from nerfgan.io import file_sha256
from nerfgan.metrics import PSNR_CAP_DB, psnr, ssim
from nerfgan.runtime import spec as S
from nerfgan.runtime.parity_report import (  # noqa: F401  (re-exported)
    DIFF_GAIN,
    GRID_ROWS,
    _fmt,
    grid_image,
    plot_psnr_vs_yaw,
    summary_rows,
    summary_text,
    write_report,
)

YAWS = (0.0, -20.0, 20.0, -40.0, 40.0)  # degrees, cycled per sample
PITCHES = (0.0, 8.0, -8.0)  # degrees, cycled per seed
PAIR_YAWS = (-20.0, 20.0)  # consistency pairs: yaw 0 -> each of these, same seed and pitch
DEPTH_TOL = 0.03  # occlusion test: |distance - depth of A| <= DEPTH_TOL * distance
PSNR_CAP = PSNR_CAP_DB  # dB stored for identical images
REPORT_FORMAT = "nerfgan-parity-report"


class ParityError(NerfganError):
    """An engine missed a parity threshold; the report is written and the message lists every miss."""

    exit_code = 1


def _cap(x: float) -> float:
    return float(min(x, PSNR_CAP))


# --- geometry: the backward warp -----------------------------------------------------------------
def pixel_rays(c: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera (25,) -> origin (3,), unit ray directions (R, R, 3) through pixel centres, float64.

    The same rays as nerfgan.teacher.rays.generate_rays (pixel (i, j) at u = (j + 0.5) / R, v = (i + 0.5) / R).
    """
    m, k = (x.astype(np.float64) for x in camera.unpack(c))
    R = resolution
    t = (np.arange(R) + 0.5) / R
    v, u = np.meshgrid(t, t, indexing="ij")
    fx, fy, cx, cy, sk = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    y_cam = (v - cy) / fy
    x_cam = (u - cx - sk * y_cam) / fx
    d = np.stack([x_cam, y_cam, np.ones_like(u)], -1) @ m[:3, :3].T
    return m[:3, 3], d / np.linalg.norm(d, axis=-1, keepdims=True)


def _bilinear(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """(C, R, R) sampled at fractional (row, col) in [0, R - 1] -> (C, *row.shape)."""
    R = image.shape[-1]
    r0 = np.clip(np.floor(row), 0, max(R - 2, 0)).astype(np.int64)
    c0 = np.clip(np.floor(col), 0, max(R - 2, 0)).astype(np.int64)
    r1, c1 = np.minimum(r0 + 1, R - 1), np.minimum(c0 + 1, R - 1)
    fr, fc = row - r0, col - c0
    return np.asarray(image[:, r0, c0] * (1 - fr) * (1 - fc) + image[:, r0, c1] * (1 - fr) * fc
                      + image[:, r1, c0] * fr * (1 - fc) + image[:, r1, c1] * fr * fc)


def warp(image_a: np.ndarray, c_a: np.ndarray, c_b: np.ndarray, depth_b: np.ndarray,
         depth_a: np.ndarray | None = None, depth_tol: float = DEPTH_TOL) -> tuple[np.ndarray, np.ndarray]:
    """View A's image (C, R, R) seen from camera B: (warped (C, R, R), valid mask (R, R) bool).

    depth_b (R, R): B's depth, distance along each pixel's unit ray. depth_a (R, R), optional: the
    occlusion test (a B pixel whose distance to A's camera differs from A's depth there by more than
    ``depth_tol`` times that distance is invalid).
    """
    R = image_a.shape[-1]
    o_b, d_b = pixel_rays(c_b, R)
    points = o_b + np.asarray(depth_b, np.float64).reshape(R, R, 1) * d_b  # (R, R, 3) world
    m_a, k_a = (x.astype(np.float64) for x in camera.unpack(c_a))
    rel = points - m_a[:3, 3]
    p = rel @ m_a[:3, :3]  # world -> camera A (the rotation's transpose)
    z = p[..., 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    xn, yn = p[..., 0] / zs, p[..., 1] / zs
    col = (k_a[0, 0] * xn + k_a[0, 1] * yn + k_a[0, 2]) * R - 0.5
    row = (k_a[1, 1] * yn + k_a[1, 2]) * R - 0.5
    valid = front & (col >= -0.5) & (col <= R - 0.5) & (row >= -0.5) & (row <= R - 0.5)
    row, col = np.clip(row, 0, R - 1), np.clip(col, 0, R - 1)
    warped = _bilinear(np.asarray(image_a, np.float64), row, col)
    if depth_a is not None:
        dist = np.linalg.norm(rel, axis=-1)
        seen = _bilinear(np.asarray(depth_a, np.float64).reshape(1, R, R), row, col)[0]
        valid &= np.abs(seen - dist) <= depth_tol * dist
    return warped, valid


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR (dB, capped) of (C, R, R) images clipped to [-1, 1] over the pixels where ``mask``; None if empty."""
    if not mask.any():
        return None
    d = np.clip(a, -1, 1)[:, mask] - np.clip(b, -1, 1)[:, mask]
    mse = float(np.mean(d**2))
    return PSNR_CAP if mse == 0 else _cap(10 * math.log10(4.0 / mse))


# --- samples ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    index: int
    seed: int
    yaw: float  # degrees from frontal
    pitch: float


def plan_samples(n: int, seed: int = 0) -> list[Sample]:
    """The n (seed, pose) samples parity renders (see the module docstring)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"--n: expected a positive number of samples, got {n!r}")
    last = seed + (n - 1) // len(YAWS)
    if seed < 0 or last >= 2**32:
        raise UsageError(f"--seed: seeds {seed}..{last} must lie in [0, 2**32)")
    return [Sample(i, seed + i // len(YAWS), YAWS[i % len(YAWS)], PITCHES[(i // len(YAWS)) % len(PITCHES)])
            for i in range(n)]


def view_pairs(samples: Sequence[Sample]) -> list[tuple[int, int]]:
    """(index of view A, index of view B) for the consistency figure: yaw 0 -> PAIR_YAWS, same seed."""
    frontal = {s.seed: s.index for s in samples if s.yaw == 0.0}
    return [(frontal[s.seed], s.index) for s in samples if s.yaw in PAIR_YAWS and s.seed in frontal]


# --- the two renderers --------------------------------------------------------------------------
def render_teacher(model: Any, samples: Sequence[Sample], truncation: float) -> dict[str, np.ndarray]:
    """Teacher views, one per call (batch 1).

    -> w (N, w_dim), c (N, 25), image (N, 3, H, W), rgb = feature_image[:, :3] (N, 3, R, R), depth (N, R, R).
    """
    import torch

    from nerfgan.sampling import z_from_seed
    from nerfgan.teacher.renders import RENDER_SETTINGS, reproducible_cuda
    from nerfgan.teacher.views import cameras_for

    device = next(model.parameters()).device
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("w", "c", "image", "rgb", "depth")}
    seed: int | None = None
    ws: Any = None
    planes: Any = None
    with torch.no_grad(), reproducible_cuda():
        for s in samples:
            c, c_cond = cameras_for(model, s.yaw, s.pitch)
            if s.seed != seed:  # the planes of one seed serve all its views
                z = torch.from_numpy(z_from_seed(s.seed, model.config.z_dim)).to(device)
                ws = model.mapping(z, torch.from_numpy(c_cond[None]).to(device), truncation_psi=truncation)
                planes = model.planes(ws, noise_mode=str(RENDER_SETTINGS["noise_mode"]), fused=False)
                seed = s.seed
            o = model.render_planes(planes, ws, torch.from_numpy(c[None]).to(device),
                                    render_mode=str(RENDER_SETTINGS["render_mode"]), fused=False)
            for k, v in (("w", ws[:, 0]), ("image", o.image), ("rgb", o.feature_image[:, :3]),
                         ("depth", o.image_depth[:, 0])):
                out[k].append(v.float().cpu().numpy())
            out["c"].append(c[None])
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


def render_engine(g: Any, samples: Sequence[Sample], w: np.ndarray, chunk: int = 16) -> dict[str, np.ndarray]:
    """Engine views for the teacher's w: image (N, 3, H, W), rgb = image_raw (N, 3, R, R)."""
    yaw = np.array([s.yaw for s in samples])
    pitch = np.array([s.pitch for s in samples])
    parts = [g.generate(w=w[i:i + chunk], yaw=yaw[i:i + chunk], pitch=pitch[i:i + chunk])
             for i in range(0, len(samples), chunk)]
    return {"image": np.concatenate([p["image"] for p in parts]), "rgb": np.concatenate([p["image_raw"] for p in parts])}


def check_engine_teacher(model: Any, g: Any, engine: str, teacher: str, allow_other: bool = False) -> dict[str, Any]:
    """nerfgan.teacher.identity.check_same_teacher for a loaded teacher ``model`` and a runtime Generator ``g``."""
    from nerfgan.teacher.checkpoint import weights_digest
    from nerfgan.teacher.identity import check_same_teacher

    meta = g.student.metadata
    return check_same_teacher(teacher=teacher, teacher_config_json=model.config.to_json(),
                              teacher_digest=weights_digest(model), engine=engine,
                              engine_config_json=meta.get(S.META_CONFIG), engine_teacher_digest=meta.get(S.META_TEACHER),
                              allow_other=allow_other)


REPORT_KIND = "parity report"  # nerfgan.io owner-file kind of REPORT_DIR


def claim_report_dir(out: Path) -> None:
    """-o REPORT_DIR: missing, empty, or an earlier parity report (owner file, or its report.json); else UsageError."""
    from nerfgan.io import check_writable_dir, claim_dir

    def recognise(p: Path) -> bool:
        try:
            with open(p / "report.json", encoding="utf-8") as f:
                return f'"format": "{REPORT_FORMAT}"' in f.read(4096)
        except OSError:
            return False

    claim_dir(out, REPORT_KIND, "-o", recognise)
    check_writable_dir(out, "report folder")


def torch_device_for(device: str) -> str:
    """The PyTorch device for --device (auto: cuda when PyTorch sees one); UsageError for a bad or absent one."""
    import torch

    if device not in DEVICES:
        raise UsageError(f"--device: choose one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)


def compare(samples: Sequence[Sample], pairs: Sequence[tuple[int, int]], t: dict[str, np.ndarray],
            e: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]],
                                               dict[str, float | None]]:
    """Figures of engine views ``e`` against teacher views ``t``: (per sample, per yaw, per view pair, aggregates)."""
    rows = []
    for s in samples:  # one sample at a time: float64 SSIM maps of a 512px batch would take gigabytes
        i = slice(s.index, s.index + 1)
        rows.append({"index": s.index, "seed": s.seed, "yaw": s.yaw, "pitch": s.pitch,
                     "psnr_image": _cap(psnr(e["image"][i], t["image"][i])[0]),
                     "ssim_image": float(ssim(e["image"][i], t["image"][i])[0]),
                     "psnr_raw": _cap(psnr(e["rgb"][i], t["rgb"][i])[0]),
                     "ssim_raw": float(ssim(e["rgb"][i], t["rgb"][i])[0])})
    keys = ("psnr_image", "ssim_image", "psnr_raw", "ssim_raw")
    per_yaw = [{"yaw": y, "n": len(sel), **{k: float(np.mean([r[k] for r in sel])) for k in keys}}
               for y in sorted({s.yaw for s in samples}) for sel in [[r for r in rows if r["yaw"] == y]]]
    pair_rows = []
    for a, b in pairs:  # one mask (from the teacher's depths) for both warps
        wt, mask = warp(t["rgb"][a], t["c"][a], t["c"][b], t["depth"][b], t["depth"][a])
        we, _ = warp(e["rgb"][a], t["c"][a], t["c"][b], t["depth"][b], t["depth"][a])
        pair_rows.append({"seed": samples[a].seed, "pitch": samples[a].pitch, "yaw_a": samples[a].yaw,
                          "yaw_b": samples[b].yaw, "valid_fraction": float(mask.mean()),
                          "psnr_engine": masked_psnr(we, e["rgb"][b], mask),
                          "psnr_teacher": masked_psnr(wt, t["rgb"][b], mask)})
    ok = [p for p in pair_rows if p["psnr_engine"] is not None]
    engine_psnr = [v for p in ok if (v := p["psnr_engine"]) is not None]
    teacher_psnr = [v for p in ok if (v := p["psnr_teacher"]) is not None]
    cons_e = float(np.mean(engine_psnr)) if ok else None
    cons_t = float(np.mean(teacher_psnr)) if ok else None
    agg: dict[str, float | None] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    agg.update({"consistency_psnr_engine": cons_e, "consistency_psnr_teacher": cons_t,
                "consistency_gap_db": None if cons_e is None or cons_t is None else cons_t - cons_e})
    return rows, per_yaw, pair_rows, agg


# --- the run ------------------------------------------------------------------------------------
def run_parity(teacher: str, engine: str | os.PathLike[str], out_dir: str | os.PathLike[str], n: int = 64,
               seed: int = 0, truncation: float = 0.7, precision: str | None = None, device: str = "auto",
               min_psnr: float | None = None, min_ssim: float | None = None,
               max_consistency_gap: float | None = None, allow_other_teacher: bool = False,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Render, compare and write the report into ``out_dir``; returns the report (see :func:`raise_on_miss`).

    An engine distilled from another teacher is refused unless ``allow_other_teacher`` (nerfgan.teacher.identity);
    the report's ``teacher_check`` says which.
    """
    import nerfgan.runtime as nr
    from nerfgan.teacher.checkpoint import (
        BUILTIN_TEACHERS,
        load_teacher,
        resolve_teacher_path,
    )

    samples = plan_samples(n, seed)
    pairs = view_pairs(samples)
    if not 0.0 <= truncation <= 1.0:
        raise UsageError(f"--truncation: must be in [0, 1], got {truncation}")
    for name, v in (("--min-psnr", min_psnr), ("--min-ssim", min_ssim), ("--max-consistency-gap", max_consistency_gap)):
        if v is not None and not math.isfinite(v):
            raise UsageError(f"{name}: expected a finite number, got {v}")
    if max_consistency_gap is not None and not pairs:
        raise UsageError("--max-consistency-gap: needs a view pair (yaw 0 and yaw -20 of one seed): use --n 2 or more")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory (-o takes a directory)")
    claim_report_dir(out)
    torch_device = torch_device_for(device)
    with nr.load(engine, precision=precision, device=device) as g:
        model = load_teacher(teacher, device=torch_device)
        teacher_check = check_engine_teacher(model, g, str(engine), teacher, allow_other_teacher)
        if teacher_check.get("note"):
            log(f"note: {teacher_check['note']}")
        log(f"rendering {n} teacher views ({torch_device}) and {n} engine views ({g.backend})")
        t = render_teacher(model, samples, truncation)
        e = render_engine(g, samples, t["w"])
        first = sorted({s.seed: s.index for s in reversed(samples)}.items())
        w_diff = None if g.mapping is None else float(np.abs(
            g.style(seed=[sd for sd, _ in first], truncation=truncation) - t["w"][[i for _, i in first]]).max())
        cam_diff = float(np.abs(g.cameras([s.yaw for s in samples], [s.pitch for s in samples]) - t["c"]).max())
        files = {"student": g.student.path, "mapping": g.mapping.path if g.mapping else None}
        engine_id: dict[str, Any] = {
            "argument": str(engine), "backend": g.backend, "precision": g.precision,
            "files": {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in files.items() if p is not None},
            "checkpoint_sha256": g.student.metadata.get(S.META_CHECKPOINT),
            "exported_by": g.student.metadata.get(S.META_VERSION)}
    if Path(engine).is_dir() and (Path(engine) / "manifest.json").is_file():
        engine_id["files"]["manifest"] = {"path": str(Path(engine) / "manifest.json"),
                                          "sha256": file_sha256(Path(engine) / "manifest.json")}
    tpath = resolve_teacher_path(teacher)
    builtin = not Path(teacher).exists() and teacher in BUILTIN_TEACHERS
    teacher_id = {"argument": teacher, "path": str(tpath), "builtin": builtin,
                  "sha256": file_sha256(tpath), "config": json.loads(model.config.to_json()), "device": torch_device}

    rows, per_yaw, pair_rows, agg = compare(samples, pairs, t, e)
    agg.update({"w_max_abs_diff": w_diff, "camera_max_abs_diff": cam_diff})
    checks = []
    for metric, threshold, op in (("psnr_image", min_psnr, ">="), ("ssim_image", min_ssim, ">="),
                                  ("consistency_gap_db", max_consistency_gap, "<=")):
        value = agg[metric]
        passed = None if threshold is None else (
            value is not None and (value >= threshold if op == ">=" else value <= threshold))
        checks.append({"metric": metric, "value": value, "threshold": threshold, "op": op, "passed": passed})
    missed = [c["metric"] for c in checks if c["passed"] is False]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "format_version": "1", "nerfgan_version": nerfgan.__version__,
        "teacher": teacher_id, "engine": engine_id, "teacher_check": teacher_check,
        "settings": {"n": n, "seed": seed, "truncation": truncation, "device": device, "yaws": list(YAWS),
                     "pitches": list(PITCHES), "pair_yaws": list(PAIR_YAWS), "depth_tol": DEPTH_TOL,
                     "psnr_cap_db": PSNR_CAP, "diff_gain": DIFF_GAIN,
                     "consistency_method": "backward warp at the neural resolution of the low-resolution colour, "
                                           "teacher depth of B (distance along unit rays), occlusion test with "
                                           "the teacher depth of A"},
        "samples": rows, "per_yaw": per_yaw, "consistency": {"pairs": pair_rows}, "aggregates": agg,
        "thresholds": {"min_psnr": min_psnr, "min_ssim": min_ssim, "max_consistency_gap": max_consistency_gap},
        "checks": checks, "missed": missed,
        "verdict": "fail" if missed else ("pass" if any(c["threshold"] is not None for c in checks) else "none")}
    write_report(out, report, t, e)
    return report


def raise_on_miss(report: dict[str, Any]) -> None:
    """ParityError listing each missed metric, value and threshold; nothing when every threshold is met."""
    missed = [c for c in report["checks"] if c["passed"] is False]
    if missed:
        parts = [f"{c['metric']} {_fmt(c['metric'], c['value'])} (needs {c['op']} {c['threshold']})" for c in missed]
        raise ParityError(f"parity: {len(missed)} threshold(s) missed: {'; '.join(parts)}")


# --- command line ---------------------------------------------------------------------------------
@click.command("parity", short_help="Compare an exported engine with its teacher, pose by pose.")
@click.option("--teacher", required=True, help="TEACHER.safetensors, or a built-in teacher name ('tiny').")
@click.option("--engine", required=True, help="Export folder, student .onnx / .plan, or student .safetensors.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Which student of an export folder (default fp32).")
@click.option("--device", type=click.Choice(list(DEVICES)), default="auto", show_default=True,
              help="Where to run the teacher (PyTorch) and the engine.")
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=64, show_default=True,
              help="Number of (seed, pose) samples.")
@click.option("--seed", type=SeedType(2**31), default=0, show_default=True,
              help="First seed; sample i uses seed S + i // 5.")
@click.option("--truncation", type=float, default=0.7, show_default=True, help="Truncation psi.")
@out_option("output", "REPORT_DIR to write.", required=True, type=click.Path(file_okay=False))
@click.option("--min-psnr", type=float, default=None, help="Fail unless the mean final-image PSNR (dB) is at least this.")
@click.option("--min-ssim", type=float, default=None, help="Fail unless the mean final-image SSIM is at least this.")
@click.option("--max-consistency-gap", type=float, default=None,
              help="Fail when the teacher's 3D-consistency PSNR exceeds the engine's by more than this (dB).")
@click.option("--allow-other-teacher", is_flag=True,
              help="Compare even when the engine records another teacher's weights (the report says so).")
@dry_run_option("Print the resolved settings as JSON; load, render and write nothing.")
def parity_command(teacher: str, engine: str, precision: str | None, device: str, n: int, seed: int, truncation: float,
                   output: str, min_psnr: float | None, min_ssim: float | None, max_consistency_gap: float | None,
                   allow_other_teacher: bool, dry_run: bool) -> None:
    """Compare an exported engine with its teacher: PSNR/SSIM per pose, 3D consistency; write REPORT_DIR.

    \b
    Examples:
      nerfgan parity --teacher tiny --engine qs/export -o parity
      nerfgan parity --teacher tiny --engine qs/export --precision int8 --n 64 -o parity --min-psnr 30
    """
    if dry_run:
        echo_json({"teacher": teacher, "engine": engine, "precision": precision, "device": device, "n": n,
                   "seed": seed, "truncation": truncation, "out": output, "min_psnr": min_psnr, "min_ssim": min_ssim,
                   "max_consistency_gap": max_consistency_gap, "allow_other_teacher": allow_other_teacher,
                   "samples": [{"seed": s.seed, "yaw": s.yaw, "pitch": s.pitch} for s in plan_samples(n, seed)]})
        return
    report = run_parity(teacher, engine, output, n=n, seed=seed, truncation=truncation, precision=precision,
                        device=device, min_psnr=min_psnr, min_ssim=min_ssim, max_consistency_gap=max_consistency_gap,
                        allow_other_teacher=allow_other_teacher, log=lambda s: click.echo(s, err=True))
    click.echo(summary_text(report))
    click.echo(f"wrote {output}: report.json, report.md, grid.png, psnr_vs_yaw.png")
    raise_on_miss(report)
