"""The files of a parity report: report.md, grid.png (teacher | engine | difference), psnr_vs_yaw.png
and report.json, and the summary table printed by ``nerfgan parity`` (see nerfgan.runtime.parity)."""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from nerfgan.captions import DIFF_GAIN, caption_grid, difference, difference_note
from nerfgan.io import atomic_path, mark_dir, save_png, to_uint8

GRID_ROWS = 6
NO_VERDICT = "no threshold given, no verdict"


# --- the report -----------------------------------------------------------------------------------
def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if "ssim" in metric else (f"{v:.2e}" if "diff" in metric else f"{v:.2f}")


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(metric, engine, teacher, threshold, result) rows of the summary table."""
    a = report["aggregates"]
    by = {c["metric"]: c for c in report["checks"]}

    def row(metric: str, label: str, teacher: str = "") -> tuple[str, str, str, str, str]:
        c = by.get(metric)
        thr = "" if c is None or c["threshold"] is None else f"{c['op']} {c['threshold']:g}"
        res = "" if c is None or c["passed"] is None else ("pass" if c["passed"] else "FAIL")
        return label, _fmt(metric, a[metric]), teacher, thr, res

    return [row("psnr_image", "PSNR image (dB)"), row("ssim_image", "SSIM image"),
            row("psnr_raw", "PSNR image_raw (dB)"), row("ssim_raw", "SSIM image_raw"),
            row("consistency_psnr_engine", "3D consistency PSNR (dB)",
                _fmt("consistency_psnr_teacher", a["consistency_psnr_teacher"])),
            row("consistency_gap_db", "consistency gap, teacher - engine (dB)"),
            row("w_max_abs_diff", "mapping max |w_teacher - w_engine|")]


def _verdict(report: dict[str, Any]) -> str:
    """'PASS (thresholds applied: ...)', 'FAIL (...; missed: ...)', or the no-verdict line without thresholds."""
    applied = [c for c in report["checks"] if c["threshold"] is not None]
    if not applied:
        return NO_VERDICT
    missed = report["missed"]
    rules = ", ".join(f"{c['metric']} {c['op']} {c['threshold']:g}" for c in applied)
    return ("FAIL" if missed else "PASS") + f" (thresholds applied: {rules}" + (
        f"; missed: {', '.join(missed)})" if missed else ")")


def _consistency_note(report: dict[str, Any]) -> str | None:
    """The caveat of the 3D-consistency figure: blur raises it, so an engine above its teacher is no quality win."""
    a = report["aggregates"]
    e, t = a.get("consistency_psnr_engine"), a.get("consistency_psnr_teacher")
    if e is None or t is None:
        return None
    which = "above" if e > t else "not above"
    return (f"3D consistency: engine {e:.2f} dB, teacher {t:.2f} dB (engine {which} its teacher). Blur favours this "
            "measure (a blurrier image is more consistent across views): an engine above its teacher here is not a "
            "quality win; read it with the PSNR/SSIM against the teacher.")


def summary_text(report: dict[str, Any]) -> str:
    head = ("metric", "engine", "teacher", "threshold", "result")
    rows = [head] + summary_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", f"{'yaw':>5}  {'n':>3}  {'PSNR image':>10}  {'SSIM image':>10}  {'PSNR raw':>8}  {'SSIM raw':>8}"]
    lines += [f"{y['yaw']:>5g}  {y['n']:>3}  {y['psnr_image']:>10.2f}  {y['ssim_image']:>10.4f}  {y['psnr_raw']:>8.2f}  "
              f"{y['ssim_raw']:>8.4f}" for y in report["per_yaw"]]
    note = _consistency_note(report)
    lines += ["", note] if note else []
    lines.append(f"verdict: {_verdict(report)}")
    return "\n".join(lines)


def _markdown(report: dict[str, Any]) -> str:
    t, e, s = report["teacher"], report["engine"], report["settings"]
    md = ["# nerfgan parity report", "",
          f"- engine: `{e['argument']}` ({e['backend']}, {e['precision']}); "
          + ", ".join(f"{k} sha256 `{v['sha256'][:12]}`" for k, v in e["files"].items()),
          f"- teacher: `{t['argument']}` (sha256 `{t['sha256'][:12]}`, {t['device']})",
          *([f"- **teacher check: {report['teacher_check']['note']}**"]
            if report.get("teacher_check", {}).get("note") else []),
          f"- {s['n']} samples from seed {s['seed']}, truncation {s['truncation']}, nerfgan {report['nerfgan_version']}",
          f"- verdict: {_verdict(report)}",
          "", "| metric | engine | teacher | threshold | result |", "|---|---|---|---|---|"]
    md += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in summary_rows(report)]
    md += ["", "## Per yaw (means)", "", "| yaw | n | PSNR image | SSIM image | PSNR image_raw | SSIM image_raw |",
           "|---|---|---|---|---|---|"]
    md += [f"| {y['yaw']:g} | {y['n']} | {y['psnr_image']:.2f} | {y['ssim_image']:.4f} | {y['psnr_raw']:.2f} | "
           f"{y['ssim_raw']:.4f} |" for y in report["per_yaw"]]
    gain = s["diff_gain"]
    md += ["", ("PSNR: images clipped to [-1, 1], data range 2, capped at 100 dB. image_raw is compared with the "
                "teacher's clean rendered colour feature_image[:, :3]."), "",
           (f"3D consistency: {len(report['consistency']['pairs'])} view pair(s) (yaw 0 -> yaw -20/+20); "
            f"{s['consistency_method']}, relative depth tolerance {s['depth_tol']}."), "",
           *([note, ""] if (note := _consistency_note(report)) else []),
           (f"grid.png: rows = the first samples (seed, yaw, pitch at the left); columns teacher | engine | "
            f"|engine - teacher| x {gain:g} (then x 127.5 to 0..255: white = a difference of {2 / gain:.2g} or more "
            "in [-1, 1] units), as its footer says. "
            "psnr_vs_yaw.png: per-sample PSNR (dots) and per-yaw means (lines)."), ""]
    return "\n".join(md)


def grid_image(teacher: np.ndarray, engine: np.ndarray, rows: int = GRID_ROWS, gain: float = DIFF_GAIN,
               samples: list[dict[str, Any]] | None = None) -> np.ndarray:
    """uint8 captioned grid of the first ``rows`` samples of teacher and engine images (N, 3, H, W) in [-1, 1]:
    columns teacher | engine | difference (nerfgan.captions.difference), a row label per sample from
    ``samples`` (report rows with seed, yaw, pitch) when given, and a footer with the difference scale."""
    k = min(rows, len(teacher))
    t, e, d = to_uint8(teacher[:k]), to_uint8(engine[:k]), difference(engine[:k], teacher[:k], gain)
    labels = [f"seed {r['seed']}\nyaw {r['yaw']:g} pitch {r['pitch']:g}" for r in samples[:k]] if samples else ()
    return caption_grid([[t[i], e[i], d[i]] for i in range(k)], columns=["teacher", "engine", "difference"],
                        rows=labels, footer=difference_note("engine", "teacher", gain))


def plot_psnr_vs_yaw(path: str | os.PathLike[str], report: dict[str, Any], backend: str = "auto") -> str:
    """Write the PSNR-vs-yaw plot (matplotlib when importable and ``backend`` allows, else PIL); returns which drew it."""
    series = [("image", "psnr_image", (31, 119, 180)), ("image_raw", "psnr_raw", (255, 127, 14))]
    if backend in ("auto", "matplotlib"):
        try:
            mpl = importlib.import_module("matplotlib")
            mpl.use("Agg")
            plt: Any = importlib.import_module("matplotlib.pyplot")
        except ImportError:
            if backend == "matplotlib":
                raise
        else:
            fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
            for label, key, rgb in series:
                colour = tuple(v / 255 for v in rgb)
                ax.plot([r["yaw"] for r in report["samples"]], [r[key] for r in report["samples"]], ".",
                        color=colour, alpha=0.4)
                ax.plot([y["yaw"] for y in report["per_yaw"]], [y[key] for y in report["per_yaw"]], "-o",
                        color=colour, label=label)
            ax.set(xlabel="yaw (degrees)", ylabel="PSNR vs teacher (dB)", title="engine vs teacher: PSNR by yaw")
            ax.grid(alpha=0.3)
            ax.legend()
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png")
            plt.close(fig)
            return "matplotlib"
    save_png(path, _pil_plot(report, series))
    return "pil"


def _pil_plot(report: dict[str, Any], series: list[tuple[str, str, tuple[int, int, int]]],
              size: tuple[int, int] = (640, 400)) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    W, H, left, right, top, bottom = size[0], size[1], 60, 20, 30, 45
    xs = [r["yaw"] for r in report["samples"]]
    ys = [r[k] for r in report["samples"] for _, k, _ in series]
    x0, x1 = min(xs) - 5, max(xs) + 5
    y0, y1 = math.floor(min(ys)) - 1, math.ceil(max(ys)) + 1
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right), H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    for yaw in sorted(set(xs)):
        x, _ = px(yaw, y0)
        d.line([x, H - bottom, x, H - bottom + 4], fill="black")
        d.text((x - 8, H - bottom + 6), f"{yaw:g}", fill="black", font=font)
    step = max(1, math.ceil((y1 - y0) / 6))
    for v in range(int(y0), int(y1) + 1, step):
        _, y = px(x0, v)
        d.line([left - 4, y, W - right, y], fill=(225, 225, 225))
        d.text((left - 30, y - 6), f"{v}", fill="black", font=font)
    d.text((W // 2 - 40, H - 16), "yaw (degrees)", fill="black", font=font)
    d.text((4, 8), "PSNR vs teacher (dB)", fill="black", font=font)
    for n, (label, key, rgb) in enumerate(series):
        for r in report["samples"]:
            x, y = px(r["yaw"], r[key])
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=tuple(v // 2 + 127 for v in rgb))
        pts = [px(y["yaw"], y[key]) for y in report["per_yaw"]]
        if len(pts) > 1:
            d.line(pts, fill=rgb, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=rgb)
        d.rectangle([W - right - 110, top + 8 + 16 * n, W - right - 98, top + 18 + 16 * n], fill=rgb)
        d.text((W - right - 92, top + 6 + 16 * n), label, fill="black", font=font)
    return np.asarray(img)


def write_report(out: Path, report: dict[str, Any], teacher: dict[str, np.ndarray], engine: dict[str, np.ndarray]) -> None:
    """grid.png, psnr_vs_yaw.png, report.md, then report.json, each atomically."""
    from nerfgan.runtime.parity import REPORT_KIND

    out.mkdir(parents=True, exist_ok=True)
    mark_dir(out, REPORT_KIND)
    save_png(out / "grid.png", grid_image(teacher["image"], engine["image"], samples=report["samples"]))
    report["settings"]["plot"] = plot_psnr_vs_yaw(out / "psnr_vs_yaw.png", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_markdown(report))
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, allow_nan=False))
