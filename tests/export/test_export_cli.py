"""nerfgan-export and nerfgan calibrate from the command line: happy path, and one clear line per mistake."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import UNTRAINED_INT8_MIN_PSNR, invoke

from nerfgan.cli import export_main, main


def test_calibrate_then_export_fp32_fp16_int8_and_triton(tmp_path, tiny_student_path, capsys):
    code, out, err = invoke(main, ["calibrate", "--ckpt", tiny_student_path, "--n", 4, "-o", tmp_path / "calib.npz"], capsys)
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "calib.npz").is_file()
    code, out, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "out", "--fp16", "--int8",
                                       "--calib", tmp_path / "calib.npz", "--triton", tmp_path / "repo",
                                       "--batch", "1,2,8", "--int8-min-psnr", UNTRAINED_INT8_MIN_PSNR], capsys)
    assert code == 0, err
    assert "ok   student.onnx:image max_abs_error" in out and "MISS" not in out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["export_config"]["batch"] == [1, 2, 8]
    assert {a["file"] for a in manifest["artifacts"]} == {"mapping.onnx", "student.onnx", "student_fp16.onnx",
                                                        "student_int8.onnx"}
    assert "max_batch_size: 8" in (tmp_path / "repo" / "nerfgan_student" / "config.pbtxt").read_text()


def test_dry_run_prints_the_resolved_config(tmp_path, tiny_student_path, capsys):
    code, out, _ = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "out", "--fp16", "--batch", "8",
                                     "--int8-exclude", "*/torgb/*", "--dry-run"], capsys)
    assert code == 0
    cfg = json.loads(out)["export"]
    assert cfg["fp16"] is True and cfg["batch"] == [1, 8, 8] and cfg["int8_exclude"] == ["*/torgb/*"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--int8"], 2, "--int8 needs --calib"),
    (["--batch", "4,2,1"], 2, "--batch: need 1 <= MIN <= OPT <= MAX"),
    (["--batch", "a,b"], 2, "--batch: expected MIN,OPT,MAX"),
    (["--opset", "5"], 2, "--opset: 5"),
    (["--triton-precision", "int8"], 2, "--triton-precision int8: that precision is not being exported"),
    (["--trt"], 1, "nerfgan[tensorrt]"),
    (["--int8", "--calib", "missing.npz"], 1, "missing.npz: calibration file not found"),
])
def test_mistakes_print_one_line(tmp_path, tiny_student_path, capsys, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    got, out, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "out", *args], capsys)
    assert got == code
    assert message in err and err.startswith("Error") and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_or_wrong_checkpoint(tmp_path, capsys):
    code, _, err = invoke(export_main, ["--ckpt", tmp_path / "nope.safetensors", "-o", tmp_path / "out"], capsys)
    assert code == 1 and "nope.safetensors: student checkpoint not found" in err
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    code, _, err = invoke(export_main, ["--ckpt", tmp_path / "bad.safetensors", "-o", tmp_path / "out"], capsys)
    assert code == 1 and "bad.safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize("script, options", [("nerfgan-export", ("--fp16", "--calib")),
                                             ("nerfgan-run", ("--engine", "--orbit"))])
def test_console_script_is_installed(script, options):
    exe = shutil.which(script)
    if exe is None:
        pytest.skip(f"{script} is not on PATH (package not installed with pip)")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and all(o in r.stdout for o in options)


@pytest.mark.parametrize("args, code, message", [
    (["--ckpt", "{tmp}/missing.safetensors", "-o", "{tmp}/c.npz"], 1, "missing.safetensors: student checkpoint not found"),
    (["--ckpt", "{student}", "-o", "{tmp}/c.bin"], 2, "c.bin: the calibration file must end in .npz"),
    (["--ckpt", "{student}", "-o", "{tmp}/c.npz", "--renders", "{tmp}/nowhere"], 1, "render set directory not found"),
    (["--ckpt", "{student}", "-o", "{tmp}/c.npz", "--n", "0"], 2, "--n"),
    (["--ckpt", "{student}", "-o", "{tmp}/c.npz", "--teacher", "{tmp}/t.safetensors"], 1, "t.safetensors"),
])
def test_calibrate_mistakes_print_one_line(tmp_path, tiny_student_path, capsys, args, code, message):
    args = [a.format(tmp=tmp_path, student=tiny_student_path) for a in args]
    got, _, err = invoke(main, ["calibrate", *args], capsys)
    assert got == code and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("Error")
    assert not list(tmp_path.glob("*.npz")) and not list(tmp_path.glob("*.bin"))
