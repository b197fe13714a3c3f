"""nerfgan parity: metrics with known answers, the 3D warp, the report, thresholds and clear errors."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke
from nerfgan import camera
from nerfgan.cli import run_standalone
from nerfgan.runtime.parity import (
    PSNR_CAP,
    file_sha256,
    masked_psnr,
    parity_command,
    pixel_rays,
    plan_samples,
    plot_psnr_vs_yaw,
    psnr,
    render_teacher,
    ssim,
    view_pairs,
    warp,
)


@pytest.fixture(scope="module")
def views(builtin_teacher):
    """The built-in teacher's views of seed 0 at yaw 0, -20 and +20 (parity's first three samples)."""
    return render_teacher(builtin_teacher, plan_samples(3, 0), truncation=0.7)


def run(args, capsys):
    return invoke(lambda argv: run_standalone(parity_command, "nerfgan parity", argv), args, capsys)


# --- metrics ----------------------------------------------------------------------------------------
def test_psnr_and_ssim_known_values():
    rng = np.random.RandomState(0)
    a = rng.uniform(-0.5, 0.5, (2, 3, 32, 32))
    assert np.all(np.isinf(psnr(a, a))) and np.allclose(ssim(a, a), 1.0)
    noise = 0.1 * np.where(rng.rand(*a.shape) < 0.5, -1.0, 1.0)  # |noise| = 0.1 everywhere: MSE = 0.01
    assert np.allclose(psnr(a, a + noise), 10 * math.log10(4 / 0.01))  # 26.02 dB, data range 2
    # SSIM of independent noise of variance s2 on a signal of variance v (equal means): about (2v + C2) / (2v + s2 + C2)
    v, c2 = 1 / 12, (0.03 * 2) ** 2  # uniform on [-0.5, 0.5]; K2 L with L = 2
    assert np.allclose(ssim(a, a + noise), (2 * v + c2) / (2 * v + 0.01 + c2), atol=0.01)
    # values are clipped to [-1, 1] first: 2 and 1 are the same pixel
    assert np.isinf(psnr(np.full((1, 3, 8, 8), 2.0), np.ones((1, 3, 8, 8))))[0]


def test_ssim_equals_the_training_ssim():
    from nerfgan.student.losses import ssim as torch_ssim

    rng = np.random.RandomState(1)
    a = np.clip(rng.randn(2, 3, 40, 40) * 0.4, -1, 1)
    b = np.clip(a + rng.randn(*a.shape) * 0.2, -1, 1)
    expect = torch_ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.allclose(ssim(a, b), expect, atol=1e-6)
    small = a[:, :, :6, :6], b[:, :, :6, :6]  # the window shrinks to the image, as in training
    assert np.allclose(ssim(*small), torch_ssim(*map(torch.from_numpy, small)).numpy(), atol=1e-6)


# --- geometry ---------------------------------------------------------------------------------------
def test_pixel_rays_are_the_teachers_rays():
    from nerfgan.teacher.rays import generate_rays

    c = camera.pose(30.0, 10.0, radius=2.7)
    origin, dirs = pixel_rays(c, 16)
    o_t, d_t = generate_rays(torch.from_numpy(c[:16].reshape(1, 4, 4)), torch.from_numpy(c[16:].reshape(1, 3, 3)), 16)
    assert np.allclose(origin, o_t[0, 0].numpy(), atol=1e-6)
    assert np.allclose(dirs.reshape(-1, 3), d_t[0].numpy(), atol=1e-6)


def test_warp_of_a_view_into_itself_is_exact(views):
    rgb, c, depth = views["rgb"][0], views["c"][0], views["depth"][0]
    warped, valid = warp(rgb, c, c, depth, depth)
    # the tiny teacher's volume fills the frame (its depth lies inside the ray bounds everywhere): all foreground
    assert valid.mean() > 0.99
    assert np.abs(warped - rgb)[:, valid].max() < 1e-5
    assert masked_psnr(warped, rgb, valid) == PSNR_CAP


def _plane_view(c: np.ndarray, R: int) -> tuple[np.ndarray, np.ndarray]:
    """An analytic scene: the textured plane z = 0 (facing the frontal camera). -> colour (3, R, R), depth (R, R)."""
    o, d = pixel_rays(c, R)
    t = -o[2] / d[..., 2]  # distance along each unit ray to z = 0
    p = o + t[..., None] * d
    rgb = np.stack([0.8 * np.sin(12 * p[..., 0]) * np.cos(9 * p[..., 1]), 0.6 * np.cos(11 * p[..., 1] + 1),
                    0.5 * np.sin(10 * p[..., 0] + 7 * p[..., 1])])
    return rgb, t


def test_warp_moves_a_textured_plane_between_views():
    R = 64
    c_a, c_b = camera.pose(0.0, 0.0, radius=2.7), camera.pose(20.0, 5.0, radius=2.7)
    (rgb_a, depth_a), (rgb_b, depth_b) = _plane_view(c_a, R), _plane_view(c_b, R)
    warped, valid = warp(rgb_a, c_a, c_b, depth_b, depth_a)
    assert valid.mean() > 0.7  # B's pixels that A sees too
    assert masked_psnr(warped, rgb_b, valid) > 50  # only bilinear interpolation error is left
    assert masked_psnr(rgb_a, rgb_b, valid) < 20  # without the warp the views differ
    _, occluded = warp(rgb_a, c_a, c_b, depth_b, depth_a - 0.3)  # A sees something 0.3 nearer: hidden
    assert not occluded.any()
    assert masked_psnr(rgb_a, rgb_b, occluded) is None


# --- samples ----------------------------------------------------------------------------------------
def test_samples_cycle_yaws_and_pair_views():
    s = plan_samples(12, seed=7)
    assert [x.yaw for x in s[:5]] == [0, -20, 20, -40, 40] and [x.seed for x in s] == [7] * 5 + [8] * 5 + [9] * 2
    assert {x.pitch for x in s[:5]} == {0.0} and {x.pitch for x in s[5:10]} == {8.0}
    assert view_pairs(s) == [(0, 1), (0, 2), (5, 6), (5, 7), (10, 11)]
    assert view_pairs(plan_samples(1)) == []


# --- the command ------------------------------------------------------------------------------------
def test_parity_writes_a_complete_report(export_dir, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir, "--n", 6, "--seed", 3, "--device", "cpu",
                          "-o", out_dir, "--min-psnr", 1, "--min-ssim", 0.0, "--max-consistency-gap", 100], capsys)
    assert code == 0, err
    assert "PSNR image (dB)" in out and "verdict: PASS" in out and "3D consistency PSNR" in out
    assert ("thresholds applied: psnr_image >= 1, ssim_image >= 0, consistency_gap_db <= 100" in out
            and "Blur favours this measure" in out)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["format"] == "nerfgan-parity-report" and report["verdict"] == "pass" and report["missed"] == []
    assert [s["index"] for s in report["samples"]] == list(range(6))
    assert [s["seed"] for s in report["samples"]] == [3] * 5 + [4]
    for s in report["samples"]:
        assert all(math.isfinite(s[k]) for k in ("psnr_image", "psnr_raw")) and 0 < s["psnr_image"] < 40
        assert -1 <= s["ssim_image"] <= 1 and -1 <= s["ssim_raw"] <= 1
    assert [y["yaw"] for y in report["per_yaw"]] == [-40, -20, 0, 20, 40]
    assert sum(y["n"] for y in report["per_yaw"]) == 6
    pairs = report["consistency"]["pairs"]
    assert [(p["yaw_a"], p["yaw_b"]) for p in pairs] == [(0, -20), (0, 20)]
    assert all(0 < p["valid_fraction"] <= 1 and math.isfinite(p["psnr_engine"]) for p in pairs)
    agg = report["aggregates"]
    assert agg["consistency_gap_db"] == pytest.approx(agg["consistency_psnr_teacher"] - agg["consistency_psnr_engine"])
    assert agg["w_max_abs_diff"] < 1e-4 and agg["camera_max_abs_diff"] < 1e-6  # the exported mapping is the teacher's
    assert report["thresholds"] == {"min_psnr": 1.0, "min_ssim": 0.0, "max_consistency_gap": 100.0}
    assert [c["passed"] for c in report["checks"]] == [True, True, True]
    assert report["engine"]["files"]["student"]["sha256"] == file_sha256(export_dir / "student.onnx")
    assert report["teacher"]["builtin"] and report["teacher"]["sha256"] == file_sha256(report["teacher"]["path"])
    assert report["nerfgan_version"] and report["engine"]["backend"] == "onnxruntime-cpu-fp32"
    md = (out_dir / "report.md").read_text()
    assert "| PSNR image (dB) |" in md and "| >= 1 | pass |" in md and "## Per yaw" in md
    assert "max \\|w_teacher - w_engine\\| |" in md  # pipes inside a cell are escaped
    assert "x 4" in md and "difference of 0.5 or more" in md
    grid = np.asarray(Image.open(out_dir / "grid.png").convert("RGB"))
    bare = (6 * 130 - 2, 3 * 130 - 2)  # rows: samples; columns: teacher | engine | difference; 2 px gaps
    assert grid.shape[0] > bare[0] and grid.shape[1] > bare[1]  # plus the caption strips
    assert (grid[:, :20].min(axis=-1) < 128).any() and (grid[-10:].min(axis=-1) < 128).any()  # row labels, footer
    assert Image.open(out_dir / "psnr_vs_yaw.png").size[0] > 100
    assert report["settings"]["plot"] in ("pil", "matplotlib")


def test_missed_threshold_exits_1_after_writing_the_report(export_dir, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir, "--n", 2, "--device", "cpu", "-o", out_dir,
                          "--min-psnr", 60, "--min-ssim", 0.0], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "psnr_image" in errors[0] and "60" in errors[0] and "ssim_image" not in errors[0]
    assert "FAIL" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert report["verdict"] == "fail" and report["missed"] == ["psnr_image"]
    assert len(report["samples"]) == 2 and (out_dir / "grid.png").is_file()


def _fake_report(thresholds: dict[str, float | None], missed: list[str] | None = None) -> dict:
    agg = {"psnr_image": 25.0, "ssim_image": 0.8, "psnr_raw": 24.0, "ssim_raw": 0.7, "consistency_psnr_engine": 26.0,
           "consistency_psnr_teacher": 25.5, "consistency_gap_db": -0.5, "w_max_abs_diff": 1e-7}
    checks = [{"metric": m, "value": agg[m], "threshold": thresholds.get(m), "op": op, "passed": None}
              for m, op in (("psnr_image", ">="), ("ssim_image", ">="), ("consistency_gap_db", "<="))]
    return {"aggregates": agg, "checks": checks, "missed": missed or [], "verdict": "fail" if missed else "pass",
            "per_yaw": [{"yaw": 0.0, "n": 1, "psnr_image": 25.0, "ssim_image": 0.8, "psnr_raw": 24.0, "ssim_raw": 0.7}]}


def test_summary_names_the_thresholds_applied_or_gives_no_verdict():
    from nerfgan.runtime.parity_report import summary_text

    text = summary_text(_fake_report({}))
    assert text.splitlines()[-1] == "verdict: no threshold given, no verdict" and "PASS" not in text
    assert "engine 26.00 dB, teacher 25.50 dB (engine above its teacher)" in text
    assert "Blur favours this measure (a blurrier image is more consistent across views)" in text
    text = summary_text(_fake_report({"psnr_image": 30.0, "consistency_gap_db": 1.0}, missed=["psnr_image"]))
    assert text.splitlines()[-1] == ("verdict: FAIL (thresholds applied: psnr_image >= 30, consistency_gap_db <= 1; "
                                     "missed: psnr_image)")
    text = summary_text(_fake_report({"ssim_image": 0.5}))
    assert text.splitlines()[-1] == "verdict: PASS (thresholds applied: ssim_image >= 0.5)"


def test_grid_image_is_captioned_with_seed_pose_and_difference_scale():
    from nerfgan.captions import caption_grid, difference, difference_note, layout
    from nerfgan.io import to_uint8
    from nerfgan.runtime.parity_report import grid_image

    rng = np.random.default_rng(0)
    t, e = rng.uniform(-1, 1, (2, 2, 3, 32, 32)).astype(np.float32)
    samples = [{"seed": 3, "yaw": 0.0, "pitch": 0.0}, {"seed": 3, "yaw": -20.0, "pitch": 8.0}]
    img = grid_image(t, e, samples=samples)
    tiles = [[to_uint8(t[i]), to_uint8(e[i]), difference(e, t)[i]] for i in range(2)]
    args = dict(columns=["teacher", "engine", "difference"], rows=["seed 3\nyaw 0 pitch 0", "seed 3\nyaw -20 pitch 8"],
                footer=difference_note("engine", "teacher"))
    lay = layout(tiles, **args)
    np.testing.assert_array_equal(img, caption_grid(tiles, **args))
    assert img.shape == lay.shape and lay.left > 0 and lay.top > 0 and lay.bottom > 0
    y, x = lay.origin(1, 2)
    np.testing.assert_array_equal(img[y:y + 32, x:x + 32], difference(e[1:], t[1:])[0])


def test_psnr_plot_with_pil(tmp_path):
    samples = [{"yaw": y, "psnr_image": 20 + y / 10, "psnr_raw": 15.0} for y in (-20.0, 0.0, 20.0, 0.0)]
    per_yaw = [{"yaw": y, "psnr_image": 20 + y / 10, "psnr_raw": 15.0} for y in (-20.0, 0.0, 20.0)]
    assert plot_psnr_vs_yaw(tmp_path / "p.png", {"samples": samples, "per_yaw": per_yaw}, backend="pil") == "pil"
    img = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert img.shape == (400, 640, 3)
    colours = {tuple(p) for p in img.reshape(-1, 3)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # both series drawn


def test_missing_engine_is_one_error_line(tmp_path, capsys):
    code, _, err = run(["--teacher", "tiny", "--engine", tmp_path / "nope.onnx", "-o", tmp_path / "r"], capsys)
    assert code == 1 and err.startswith("Error:") and "nope.onnx" in err and "not found" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_engine_of_another_teacher_is_refused(export_dir, tiny_teacher, tmp_path, capsys):
    from nerfgan.teacher.checkpoint import build_teacher, save_teacher

    cfg = tiny_teacher.config
    other = dataclasses.replace(cfg, rendering=dataclasses.replace(cfg.rendering, ray_end=3.5))
    path = save_teacher(build_teacher(other, tiny_teacher.state_dict()), tmp_path / "other.safetensors")
    code, _, err = run(["--teacher", path, "--engine", export_dir, "--n", 2, "-o", tmp_path / "r"], capsys)
    assert code == 1 and err.startswith("Error:") and "different teacher" in err and "ray_end" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needle", [(["--n", 0], "--n"), (["--n", -3], "--n"),
                                          (["--n", 1, "--max-consistency-gap", 1], "--max-consistency-gap"),
                                          (["--truncation", 1.5], "--truncation")])
def test_bad_options_exit_2(args, needle, export_dir, tmp_path, capsys):
    code, _, err = run(["--teacher", "tiny", "--engine", export_dir, "-o", tmp_path / "r"] + args, capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_importing_parity_and_bench_keeps_torch_out():
    code = ("import sys, nerfgan.runtime.parity, nerfgan.runtime.bench; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0
