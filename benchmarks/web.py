"""Frames/s of the student in headless Chromium (ONNX Runtime Web, WebAssembly) beside ONNX Runtime in Python.

    python benchmarks/web.py                                  # the tiny and tiny-fast students, FP32 and INT8
    python benchmarks/web.py --engine qs/export --threads 1,2 --frames 30 --runs 5

Without --engine, students of the built-in teacher are made for each --presets entry (the preset's architecture with
the teacher's mapping and super-resolution and a seeded random synthesis: speed depends on the architecture, not on
the weights), calibrated on 8 teacher renders and exported with INT8 (the INT8 floor lowered to 25 dB against FP32,
as for the tests' untrained student, whose INT8 file sits near 28 dB). Each export's site (nerfgan.export.web) is
served cross-origin isolated on loopback; for every student precision and WebAssembly thread count the page is
opened with ?bench=FRAMES&threads=T&precision=P: after one warm-up frame it renders FRAMES frames back to back, yaw
sweeping -30..30 (student inference, the float -> RGBA conversion and a canvas draw), and reports frames / wall
time. Python: nerfgan.runtime.load(export, precision, threads=T), one warm-up, then FRAMES g.render(w=w, yaw=...)
calls (inference and the uint8 conversion). Each figure is the median of --runs runs (a fresh page each run).
Needs selenium, chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

WAIT_S = 300


def make_export(preset: str, root: Path) -> Path:
    import torch

    from nerfgan.calibrate.calibset import make_calibration_set
    from nerfgan.export.pipeline import ExportConfig, export
    from nerfgan.student.checkpoint import save_student
    from nerfgan.student.config import student_preset
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.checkpoint import load_teacher, weights_digest
    from nerfgan.teacher.identity import TEACHER_KEY

    teacher = load_teacher("tiny")
    torch.manual_seed(0)
    student = StudentGenerator.from_teacher(student_preset(preset, teacher.config), teacher).eval()
    folder = root / preset
    folder.mkdir(parents=True)
    ckpt = save_student(student, folder / "student.safetensors", extra={TEACHER_KEY: weights_digest(teacher)})
    calib = make_calibration_set("tiny", ckpt, 8, folder / "calib.npz", seed=0)
    out = folder / "export"
    export(ckpt, out, ExportConfig(int8=True, calib=str(calib), int8_min_psnr_vs_fp32=25.0), log=lambda s: None)
    return out


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                                               shutil.which("google-chrome")) if p)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                              options=options)
    driver.set_page_load_timeout(WAIT_S)
    return driver


def browser_fps(driver, url: str, precision: str, threads: int, frames: int) -> dict:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/index.html?seed=7&precision={precision}&threads={threads}&bench={frames}")
    WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.execute_script("return document.body.dataset.bench || document.body.dataset.state === 'error'"))
    bench = driver.execute_script("return document.body.dataset.bench")
    if not bench:
        raise RuntimeError(driver.find_element("id", "error").text)
    return json.loads(bench)


def python_fps(export: Path, precision: str, threads: int, frames: int) -> float:
    import numpy as np

    import nerfgan.runtime as nr

    with nr.load(export, precision=precision, threads=threads) as g:
        w = g.style(seed=7, truncation=0.7)
        g.render(w=w, yaw=0.0)  # warm-up
        yaws = np.linspace(-30, 30, frames)
        start = time.perf_counter()
        for y in yaws:
            g.render(w=w, yaw=float(y))
        return frames / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", action="append", default=[], help="An export folder (repeat); default: --presets.")
    p.add_argument("--presets", default="tiny,tiny-fast", help="Students to make when no --engine is given.")
    p.add_argument("--threads", default="1,2", help="WebAssembly / ONNX Runtime intra-op threads to measure.")
    p.add_argument("--frames", type=int, default=20, help="Frames per run.")
    p.add_argument("--runs", type=int, default=3, help="Runs per figure (the median is shown).")
    args = p.parse_args(argv)
    from nerfgan.export.web import ORT_WEB_VERSION, serving, write_site

    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory(prefix="nerfgan-web-bench-") as tmp:
        root = Path(tmp)
        engines = [(Path(e).name, Path(e)) for e in args.engine] or [
            (preset, make_export(preset, root)) for preset in args.presets.split(",")]
        rows = []
        driver = browser()
        try:
            for label, export in engines:
                site = root / f"site-{label}"
                meta = write_site(export, site, log=lambda s: None)
                with serving(site, isolated=True) as url:
                    for precision in meta["students"]:
                        for t in threads:
                            web = [browser_fps(driver, url, precision, t, args.frames) for _ in range(args.runs)]
                            py = [python_fps(export, precision, t, args.frames) for _ in range(args.runs)]
                            rows.append((label, precision, t, statistics.median(r["fps"] for r in web),
                                         statistics.median(r["median_ms"] for r in web), statistics.median(py)))
                            print(f"{label} {precision} threads {t}: browser {rows[-1][3]:.2f} fps, "
                                  f"python {rows[-1][5]:.2f} fps", file=sys.stderr)
        finally:
            driver.quit()
    print(f"\n| student | precision | threads | Chromium frames/s (ONNX Runtime Web {ORT_WEB_VERSION}, WASM SIMD) | "
          "Chromium ms per inference (median) | ONNX Runtime in Python frames/s |")
    print("|---|---|---:|---:|---:|---:|")
    for label, precision, t, fps, ms, py in rows:
        print(f"| {label} | {precision} | {t} | {fps:.1f} | {ms:.0f} | {py:.1f} |")


if __name__ == "__main__":
    main()
