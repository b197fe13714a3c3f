"""nerfgan-export --int8 with a bad quantization: one error line, exit 1, and OUT exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import UNTRAINED_INT8_MIN_PSNR, invoke, saturate_int8_scales
from nerfgan.cli import export_main

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"(folder)" for p in sorted(folder.rglob("*"))}


def test_bad_int8_fails_with_one_line_and_leaves_out_as_it_was(tmp_path, tiny_student_path, tiny_calib_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "out"
    args = ["--ckpt", tiny_student_path, "-o", out, "--int8", "--calib", tiny_calib_path]
    code, stdout, err = invoke(export_main, [*args, "--int8-min-psnr", UNTRAINED_INT8_MIN_PSNR], capsys)
    assert code == 0, err
    assert "ok   student_int8.onnx:image psnr_db_vs_fp32" in stdout  # the INT8 vs FP32 figure is printed
    before = _snapshot(out)
    assert "student_int8.onnx" in before and "manifest.json" in before

    saturate_int8_scales(monkeypatch)  # activation scales x0.1: what a wrong calibration range gives
    code, stdout, err = invoke(export_main, args, capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("Error: ") and "Traceback" not in err
    assert "missed their gate" in err and "student_int8.onnx:image psnr_db_vs_fp32" in err
    assert "MISS student_int8.onnx:image psnr_db_vs_fp32" in stdout
    # this untrained student is ~4 dB from its teacher: the drop against the teacher cannot see the damage, the
    # floor against FP32 does
    assert "ok   student_int8.onnx:image psnr_drop_db_vs_teacher" in stdout
    assert "wrote" not in stdout
    assert _snapshot(out) == before  # the earlier export, byte for byte; no staging folder left behind


def test_too_few_calibration_samples_is_one_line(tmp_path, tiny_student_path, tiny_calib_path, capsys):
    from nerfgan.calibrate.calibset import load_calibration_set, write_npz

    cs = load_calibration_set(tiny_calib_path)
    arrays = {k: v[:3] for k, v in cs.arrays.items()}
    arrays["meta"] = np.array(json.dumps(dict(cs.meta, n=3)))
    small = write_npz(tmp_path / "small.npz", arrays)
    code, _, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "out", "--int8", "--calib", small],
                          capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "small.npz: 3 sample(s); --int8 needs at least 4" in err
    assert not (tmp_path / "out" / "manifest.json").exists()
