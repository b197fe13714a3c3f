"""benchmarks/gpu.py end to end on the CPU: tiny random models, the eager path, its JSON and Markdown table.

The GPU rows (fp16, CUDA graphs, AOTInductor on the card) are only run on a CUDA machine; here the test
checks the script's table, budget and option handling, which are the same there.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
QUICK = ["--device", "cpu", "--scale", "tiny", "--quick", "--paths", "eager", "--batches", "1,2", "--warmup", "0",
         "--runs", "3", "--row-cap-s", "0"]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def student_presets() -> list[str]:
    from nerfgan.student.config import PRESETS

    return [p for p in ("tiny", "tiny-fast") if p in PRESETS]


@pytest.mark.slow
def test_eager_rows_are_timed_and_written_as_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    r = run_script(*QUICK, "--budget-s", "600", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads((out / "gpu_bench.json").read_text())
    assert doc["format"] == "nerfgan-gpu-bench" and doc["scale"] == "tiny"
    got = {(row["model"], row["preset"], row["path"], row["batch"]): row for row in doc["rows"]}
    expected = [("teacher", "tiny", "eager", b) for b in (1, 2)]
    expected += [("student", s, "eager", b) for s in student_presets() for b in (1, 2)]
    assert sorted(got) == sorted(expected)
    for key, row in got.items():
        assert row["status"] == "ok", (key, row["reason"])
        assert row["img_s"] > 0 and row["p90_ms"] >= row["p50_ms"] > 0 and row["runs"] == 3, key
        assert abs(row["img_s"] - row["batch"] * 1000 / row["p50_ms"]) < 1e-6 * row["img_s"], key
        assert row["ratio_to_teacher"] > 0, key
        if row["model"] == "student":  # the eager path is the PSNR's reference: the same forward, bit for bit
            assert row["identical_to_eager"] is True and row["max_abs_vs_eager"] == 0.0, key
    for b in (1, 2):
        assert got[("teacher", "tiny", "eager", b)]["ratio_to_teacher"] == 1.0
    assert doc["env"]["heavy_modules"] == []  # runs on a machine with torch and numpy alone
    assert set(doc["goal"]["students"]) == set(student_presets())
    assert all(g["met"] is None for g in doc["goal"]["students"].values())  # batch 16 was not measured
    md = (out / "gpu_bench.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| teacher") or line.startswith("| student")]
    assert len(table) == len(expected) and all(line.rstrip().endswith("| ok |") for line in table)
    assert "student tiny eager b2:" in (out / "gpu_bench.log").read_text()


def test_a_spent_budget_skips_every_row_and_still_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    r = run_script(*QUICK, "--budget-s", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "gpu_bench.json").read_text())["rows"]
    assert len(rows) == 2 + 2 * len(student_presets())
    for row in rows:
        assert row["status"] == "skipped" and "--budget-s 0 s budget was spent" in row["reason"]
        assert row["img_s"] is None
    assert "budget was spent" in (out / "gpu_bench.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--paths", "eager,turbo"], "--paths: unknown turbo"),
    (["--batches", "1,1"], "--batches: expected distinct positive integers"),
    (["--device", "tpu"], "--device: expected cuda, cuda:N or cpu"),
])
def test_bad_options_are_one_line_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bench"
    r = run_script(*QUICK, *args, "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not out.exists()


def test_existing_results_are_not_replaced_without_force(tmp_path: Path) -> None:
    (tmp_path / "gpu_bench.json").write_text("mine")
    r = run_script(*QUICK, "--out", str(tmp_path))
    assert r.returncode == 2 and "pass --force" in r.stderr
    assert (tmp_path / "gpu_bench.json").read_text() == "mine"


@pytest.mark.slow
def test_sigterm_keeps_the_rows_already_written_and_says_where_it_stopped(tmp_path: Path) -> None:
    """What a device run killed by ``timeout`` leaves behind: every finished row and a note."""
    out = tmp_path / "bench"
    p = subprocess.Popen([sys.executable, str(SCRIPT), *QUICK, "--out", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        def first_row_written() -> bool:
            f = out / "gpu_bench.json"
            return f.exists() and len(json.loads(f.read_text())["rows"]) >= 1

        wait_until(lambda: first_row_written() or p.poll() is not None, "the first row", hang_after_s=300)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1, err[-2000:]
    doc = json.loads((out / "gpu_bench.json").read_text())
    assert doc["rows"][0]["model"] == "teacher" and doc["rows"][0]["status"] == "ok"
    assert len(doc["rows"]) < 2 + 2 * len(student_presets())
    assert any(n.startswith("stopped by signal 15") for n in doc["notes"])
