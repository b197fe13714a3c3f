"""``nerfgan scene score``: a teacher (and an engine) against the scene family's exact ground truth.

    nerfgan scene score --teacher tiny --n 32 --seed 12345 -o score.json [--engine export/]

Samples: sample i of ``nerfgan.sampling.draw(seed, range(n))``, the training distribution (z,
truncation psi ~ U[0.5, 1], yaw/pitch around the frontal view), so a seed never used in fitting or
training is a held-out set. The ground truth of a sample is the family's object for (z, psi)
rendered exactly from the same camera (``nerfgan.scenes``); the teacher runs with EG3D's
truncation at the same psi, which the fitted teacher's mapping makes the family's own
(``nerfgan.scenes.fit``). The engine gets the teacher's w, as in ``nerfgan parity``.

Figures (means over samples; images clipped to [-1, 1], data range 2):
* ``psnr_image``, ``ssim_image``: the final image against the exact image at its resolution.
* ``psnr_image_raw``: the low-resolution colour (the teacher's rendered colour feature_image[:, :3],
  the engine's image_raw) against the exact image at the neural rendering resolution.
* ``mask_iou``: IoU of opacity > 0.5 between the teacher's rays and the exact ones (teacher only).
* ``depth_abs_rel``: mean |depth - exact| / exact over the pixels the exact object covers (teacher only).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from nerfgan.errors import UsageError
from nerfgan.metrics import PSNR_CAP_DB, psnr, ssim

TARGETS = {"psnr_image": 24.0, "mask_iou": 0.92}
"""What the shipped teacher is meant to reach on 32 held-out samples (README)."""


def _image_scores(image: np.ndarray, raw: np.ndarray, gt_image: np.ndarray, gt_raw: np.ndarray) -> dict[str, np.ndarray]:
    return {"psnr_image": np.minimum(psnr(image, gt_image), PSNR_CAP_DB),
            "psnr_image_raw": np.minimum(psnr(raw, gt_raw), PSNR_CAP_DB),
            "ssim_image": ssim(image, gt_image)}


def _geometry_scores(mask: np.ndarray, depth: np.ndarray, gt_mask: np.ndarray, gt_depth: np.ndarray) -> dict[str, np.ndarray]:
    a, b = mask[:, 0] > 0.5, gt_mask[:, 0] > 0.5  # (N, R, R)
    inter = (a & b).sum(axis=(1, 2))
    union = (a | b).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    rel = np.abs(depth[:, 0] - gt_depth[:, 0]) / gt_depth[:, 0]
    covered = b.sum(axis=(1, 2))
    abs_rel = np.where(covered > 0, (rel * b).sum(axis=(1, 2)) / np.maximum(covered, 1), 0.0)
    return {"mask_iou": iou, "depth_abs_rel": abs_rel}


def score(teacher: str, n: int = 32, seed: int = 12345, engine: str | os.PathLike[str] | None = None,
          precision: str | None = None, device: str = "cpu", batch: int = 4,
          progress: Callable[[int], None] | None = None, allow_other_teacher: bool = False) -> dict[str, Any]:
    """Render n held-out samples through the family, the teacher (and the engine); returns the report.

    An engine distilled from another teacher is refused unless ``allow_other_teacher`` (nerfgan.teacher.identity).
    """
    import torch

    from nerfgan.sampling import PoseDistribution, draw
    from nerfgan.scenes.family import SceneFamily, check_fitted_to
    from nerfgan.scenes.fit import styles
    from nerfgan.scenes.render import render
    from nerfgan.teacher.checkpoint import load_teacher, read_teacher_metadata

    if n < 1:
        raise UsageError(f"--n: expected a positive number of samples, got {n}")
    if seed < 0:
        raise UsageError(f"--seed: expected a seed >= 0, got {seed}")
    meta = read_teacher_metadata(teacher)
    check_fitted_to(meta.get("scene_family"), f"--teacher {teacher}")
    model = load_teacher(teacher, device=device)
    family = SceneFamily()
    g = None
    if engine is not None:
        import nerfgan.runtime as nr
        from nerfgan.runtime.parity import check_engine_teacher

        g = nr.load(engine, precision=precision)
        try:
            teacher_check = check_engine_teacher(model, g, str(engine), str(teacher), allow_other_teacher)
        except BaseException:
            g.close()
            raise
    r = model.config.rendering
    s = draw(seed, range(n), PoseDistribution(), r.avg_camera_radius, r.avg_camera_pivot, model.config.z_dim)
    keys = ("image", "raw", "mask", "depth", "gt_image", "gt_raw", "gt_mask", "gt_depth", "e_image", "e_raw")
    acc: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    with torch.no_grad():
        for i in range(0, n, batch):
            sl = slice(i, min(n, i + batch))
            z = torch.from_numpy(s.z[sl]).to(device)
            psi = torch.from_numpy(s.psi[sl]).to(device)
            c = torch.from_numpy(s.c[sl]).to(device)
            ws = styles(model, z, psi, torch.from_numpy(s.c_cond[sl]).to(device))
            out = model.synthesis(ws, c)
            params = family.params(z.cpu(), psi.cpu())
            hi = render(family, params, c.cpu(), out.image.shape[-1], r.ray_start, r.ray_end)
            lo = render(family, params, c.cpu(), out.feature_image.shape[-1], r.ray_start, r.ray_end)
            assert out.image_mask is not None
            for k, v in (("image", out.image), ("raw", out.feature_image[:, :3]), ("mask", out.image_mask),
                         ("depth", out.image_depth), ("gt_image", hi.image), ("gt_raw", lo.image),
                         ("gt_mask", lo.mask), ("gt_depth", lo.depth)):
                acc[k].append(v.float().cpu().numpy())
            if g is not None:
                e = g.generate(w=ws[:, 0].cpu().numpy(), yaw=s.yaw[sl], pitch=s.pitch[sl])
                acc["e_image"].append(e["image"])
                acc["e_raw"].append(e["image_raw"])
            if progress:
                progress(sl.stop - sl.start)
    a = {k: np.concatenate(v) for k, v in acc.items() if v}
    per = {**_image_scores(a["image"], a["raw"], a["gt_image"], a["gt_raw"]),
           **_geometry_scores(a["mask"], a["depth"], a["gt_mask"], a["gt_depth"])}
    report: dict[str, Any] = {"format": "nerfgan-scene-score", "teacher": str(teacher), "n": n, "seed": seed,
                              "teacher_fit": json.loads(meta.get("fit_config", "null")),
                              **{k: float(np.mean(v)) for k, v in per.items()},
                              "targets": TARGETS}
    samples = [{"index": int(s.index[j]), "yaw": float(s.yaw[j]), "pitch": float(s.pitch[j]), "psi": float(s.psi[j]),
                **{k: float(v[j]) for k, v in per.items()}} for j in range(n)]
    if g is not None:
        ep = _image_scores(a["e_image"], a["e_raw"], a["gt_image"], a["gt_raw"])
        vs = {"psnr_image_vs_teacher": np.minimum(psnr(a["e_image"], a["image"]), PSNR_CAP_DB),
              "psnr_image_raw_vs_teacher": np.minimum(psnr(a["e_raw"], a["raw"]), PSNR_CAP_DB)}
        report["engine"] = {"path": str(engine), "backend": g.backend, "precision": g.precision,
                            "teacher_check": teacher_check,
                            **{k: float(np.mean(v)) for k, v in {**ep, **vs}.items()},
                            "mask_iou": None, "depth_abs_rel": None}
        for j, row in enumerate(samples):
            row["engine"] = {k: float(v[j]) for k, v in {**ep, **vs}.items()}  # type: ignore[assignment]
        g.close()
    report["samples"] = samples
    return report


def summary(report: dict[str, Any]) -> str:
    """A small table of the report's means, with the targets."""
    rows = [("teacher", report)] + ([("engine", report["engine"])] if "engine" in report else [])
    lines = [f"{'model':<8} {'PSNR image':>11} {'PSNR raw':>9} {'SSIM':>6} {'mask IoU':>9} {'depth rel':>10}"]
    for name, r in rows:
        iou = "-" if r["mask_iou"] is None else f"{r['mask_iou']:.3f}"
        dep = "-" if r["depth_abs_rel"] is None else f"{r['depth_abs_rel']:.4f}"
        lines.append(f"{name:<8} {r['psnr_image']:>11.2f} {r['psnr_image_raw']:>9.2f} {r['ssim_image']:>6.3f} "
                     f"{iou:>9} {dep:>10}")
    note = report.get("engine", {}).get("teacher_check", {}).get("note")
    if note:
        lines.append(f"note: {note}")
    lines.append(f"(n={report['n']}, seed={report['seed']}; targets for the teacher: image PSNR >= "
                 f"{TARGETS['psnr_image']:.0f} dB, mask IoU >= {TARGETS['mask_iou']})")
    return "\n".join(lines)
