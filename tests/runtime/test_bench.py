"""nerfgan bench: teacher and engines side by side, a JSON file, 'n/a' above max_batch, clear option errors."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import invoke

from nerfgan.cli import run_standalone
from nerfgan.errors import UsageError
from nerfgan.runtime.backends import OnnxBackend
from nerfgan.runtime.bench import PeakMemory, bench_command, figures, parse_batches


def run(args, capsys):
    return invoke(lambda argv: run_standalone(bench_command, "nerfgan bench", argv), args, capsys)


def test_bench_teacher_and_engines(export_dir, tmp_path, capsys, monkeypatch):
    # a second engine whose student accepts batch 1 only, as a TensorRT plan built for --batch 1,1,1 would
    limited = tmp_path / "limited"
    limited.mkdir()
    for name in ("student.onnx", "mapping.onnx"):
        shutil.copy(export_dir / name, limited / name)
    nomap = tmp_path / "nomap"  # a third engine: a student without its mapping (w in, no seeds)
    nomap.mkdir()
    shutil.copy(export_dir / "student.onnx", nomap / "student.onnx")
    original = OnnxBackend.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.path.parent.name == "limited" and self.spec.kind == "student":
            self.max_batch = 1

    monkeypatch.setattr(OnnxBackend, "__init__", init)
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir, "--engine", limited / "student.onnx",
                          "--engine", nomap / "student.onnx", "--batch", "1,2", "--runs", 2, "--warmup", 1, "--device", "cpu",
                          "--json", tmp_path / "bench.json"], capsys)
    assert code == 0, err
    assert "img/s" in out and "x teacher" in out and "teacher" in out and "engine 2" in out
    assert "n/a: batch 2 > max_batch 1 of student.onnx" in out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["settings"]["batches"] == [1, 2] and result["settings"]["runs"] == 2
    rows = {(r["model"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {(m, b) for m in ("teacher", "engine 1", "engine 2", "engine 3") for b in (1, 2)}
    for b in (1, 2):  # no mapping: 'full' (seeds -> images) is n/a, 'from w' is timed
        r = rows.pop(("engine 3", b))
        assert r["status"] == "ok" and r["full"] is None and r["speedup"] is None and "no mapping" in r["reason"]
        assert r["from_w"]["img_s"] > 0 and r["speedup_from_w"] > 0
    assert "engine 3, batch 1: 'full' n/a: no mapping beside the engine" in out
    ok = [rows[k] for k in rows if k != ("engine 2", 2)]
    for r in ok:
        assert r["status"] == "ok"
        for k in ("img_s", "p50_ms", "p90_ms"):
            assert math.isfinite(r["full"][k]) and r["full"][k] > 0
        assert r["full"]["p90_ms"] >= r["full"]["p50_ms"]
        assert r["speedup"] > 0 and r["peak_mib"] > 0 and r["memory"] in ("rss", "rss-monotone")
    for r in ok:
        if r["model"] != "teacher":
            assert r["backend"] == "onnxruntime-cpu-fp32" and r["from_w"]["img_s"] > 0 and r["speedup_from_w"] > 0
            assert r["speedup"] == pytest.approx(r["full"]["img_s"] / rows[("teacher", r["batch"])]["full"]["img_s"])
    assert rows[("teacher", 1)]["speedup"] == 1.0
    na = rows[("engine 2", 2)]
    assert na["status"] == "n/a" and "max_batch 1" in na["reason"] and na["full"] is None and na["speedup"] is None


@pytest.mark.parametrize("args, needle", [
    (["--batch", "1,x"], "--batch"), (["--batch", "0"], "--batch"), (["--batch", "2,2"], "--batch"),
    (["--precision", "fp32", "--precision", "fp16", "--precision", "int8"], "--precision"),
    (["--runs", 0], "--runs")])
def test_bad_options_exit_2_with_one_error_line(args, needle, export_dir, capsys):
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir, "--engine", export_dir] + args, capsys)
    assert code == 2 and out == ""
    assert err.startswith("Error:") and needle in err and len(err.strip().splitlines()) == 1


def test_missing_engine_fails_before_timing(tmp_path, capsys):
    code, _, err = run(["--teacher", "tiny", "--engine", tmp_path / "nope", "--batch", "1"], capsys)
    assert code == 1 and "nope" in err and "not found" in err and "teacher, batch" not in err


def test_parse_batches_and_figures():
    assert parse_batches("1,4,16") == (1, 4, 16)
    with pytest.raises(UsageError, match="--batch"):
        parse_batches("")
    f = figures([0.5, 0.1, 0.2, 0.3], batch=4)  # median 0.25 s for 4 images
    assert f["img_s"] == pytest.approx(16.0) and f["p50_ms"] == pytest.approx(250.0)
    assert f["p90_ms"] == pytest.approx(1000 * (0.3 + 0.7 * 0.2))  # linear percentile between 0.3 and 0.5


def test_peak_memory_sees_an_allocation():
    import mmap

    mem = PeakMemory(torch_cuda=False)
    mem.start()
    # A fresh anonymous mapping, every page written: numpy's allocator could hand back a free chunk that is
    # already resident after a long test session (CI saw exactly that), and then the RSS rightly does not grow.
    size = 64 * 2**20
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    peak = mem.peak_mib()
    block.close()
    assert mem.kind in ("rss", "rss-monotone") and mem.base_mib is not None
    assert peak >= mem.base_mib + 60 or mem.kind == "rss-monotone"


def test_each_engine_row_says_how_far_its_images_are_from_the_fp32_student(export_dir, tmp_path, capsys):
    """FP32 against itself is exact; INT8 is a finite PSNR (the untrained student's ~28 dB), the same whether the
    folder or its file is named; a loose engine file with no export beside it has nothing to compare with."""
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir, "--engine", export_dir,
                          "--precision", "fp32", "--precision", "int8",
                          "--batch", "1", "--runs", 1, "--warmup", 0, "--device", "cpu", "-o", tmp_path / "a.json"], capsys)
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads((tmp_path / "a.json").read_text())["rows"]}
    assert rows["teacher"]["psnr_vs_fp32"] is None
    assert rows["engine 1"]["psnr_vs_fp32"] == 200.0  # EXACT_DB: the FP32 student is its own reference
    int8 = rows["engine 2"]["psnr_vs_fp32"]
    assert 20.0 < int8 < 60.0, int8
    assert "PSNR vs FP32" in out and f"{int8:.1f} dB" in out and "exact" in out

    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(export_dir / "student_int8.onnx", loose / "student_int8.onnx")
    code, out, err = run(["--teacher", "tiny", "--engine", export_dir / "student_int8.onnx",
                          "--engine", loose / "student_int8.onnx",
                          "--batch", "1", "--runs", 1, "--warmup", 0, "--device", "cpu", "-o", tmp_path / "b.json"], capsys)
    assert code == 0, err
    rows = {r["model"]: r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert rows["engine 1"]["psnr_vs_fp32"] == pytest.approx(int8, abs=1e-6)  # the folder's FP32 student again
    assert rows["engine 2"]["psnr_vs_fp32"] is None


def test_o_refuses_to_replace_a_file_that_is_not_a_bench_report(export_dir, tmp_path, capsys):
    """Issue 22: `bench -o run/config.json` replaced a training run's config silently."""
    from nerfgan.runtime.bench import BENCH_FORMAT, check_replaceable_report

    config = tmp_path / "config.json"
    config.write_text('{"train": {"steps": 5}}')
    code, _, err = run(["--teacher", "tiny", "--engine", export_dir, "--batch", "1", "-o", config], capsys)
    assert code == 1 and "not a nerfgan bench report" in err and len(err.strip().splitlines()) == 1
    assert config.read_text() == '{"train": {"steps": 5}}'
    earlier = tmp_path / "bench.json"
    earlier.write_text(json.dumps({"format": BENCH_FORMAT, "rows": []}))
    check_replaceable_report(earlier)  # an earlier report may be replaced
    check_replaceable_report(tmp_path / "new.json")
