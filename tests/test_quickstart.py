"""nerfgan quickstart end to end at a toy size: every stage's output, reuse on a second run, bad options."""

from __future__ import annotations

import json

from PIL import Image

from conftest import invoke

from nerfgan.cli import main


def run(args, capsys):
    return invoke(main, args, capsys)


def test_views_png_is_captioned(tiny_export_dir, tmp_path):
    """The images stage alone on the shared tiny export: views.png is the 4 x 3 renders, unchanged, with
    "seed N" row labels, "yaw Y" column titles and a footer naming the renderer."""
    import shutil

    import numpy as np

    import nerfgan.runtime as nr
    from nerfgan.captions import layout
    from nerfgan.quickstart import Quickstart

    shutil.copytree(tiny_export_dir, tmp_path / "export")
    Quickstart(str(tmp_path), 0.05, 8, False, "cpu", echo=lambda s: None).images()
    views = np.asarray(Image.open(tmp_path / "views.png").convert("RGB"))
    with nr.load(tmp_path / "export", device="cpu") as g:
        want = [list(g.render(w=g.style(seed=s), yaw=[-30.0, 0.0, 30.0])) for s in range(4)]
    footer = "pitch 0, truncation 0.7; rendered by nerfgan.runtime from export/ (ONNX, CPU)"
    lay = layout(want, columns=["yaw -30", "yaw 0", "yaw 30"], rows=[f"seed {s}" for s in range(4)], footer=footer)
    assert views.shape == lay.shape and lay.left > 0 and lay.top > 0 and lay.bottom > 0
    for r in range(4):
        for c in range(3):
            y, x = lay.origin(r, c)
            np.testing.assert_array_equal(views[y:y + 128, x:x + 128], want[r][c])
        assert (views[y:y + 128, :lay.left].min(axis=-1) < 128).sum() > 10  # "seed r"
    assert (views[:lay.top].min(axis=-1) < 128).sum() > 30 and (views[-lay.bottom:].min(axis=-1) < 128).sum() > 100


def test_quickstart_makes_everything_then_reuses_it(tmp_path, capsys):
    out = tmp_path / "qs"
    code, stdout, err = run(["quickstart", "-o", out, "--minutes", "0.05", "--renders", "8", "--device", "cpu"], capsys)
    assert code == 0, err
    for path in ("teacher.safetensors", "renders/index.json", "run/student.safetensors", "calib.npz",
                 "export/manifest.json", "export/student_int8.onnx", "views.png", "orbit.gif",
                 "parity/report.json", "parity/report.md", "parity/grid.png", "score.json", "bench.json"):
        assert (out / path).is_file(), path
    w, h = Image.open(out / "views.png").size
    assert w > 3 * 128 and h > 4 * 128  # 4 seeds x 3 yaws, with their captions (see test_views_png_is_captioned)
    assert Image.open(out / "orbit.gif").n_frames == 36
    report = json.loads((out / "parity" / "report.json").read_text())
    assert len(report["samples"]) == 15
    bench = json.loads((out / "bench.json").read_text())
    assert {r["model"] for r in bench["rows"]} >= {"teacher"} and len(bench["rows"]) >= 8
    assert "nerfgan quickstart: made in" in stdout and "nerfgan-run --engine" in stdout
    # the summary says how many steps ran in which stage, and a --minutes run that ended in stage 1 is warned about
    assert "reconstruction only, no adversarial" in stdout
    assert "before the adversarial stage" in stdout and "leave out --minutes" in stdout
    marks = sorted(p.stem for p in (out / ".quickstart").glob("*.json"))
    assert marks == sorted(["teacher", "renders", "train", "calibrate", "export", "images", "parity", "score", "bench"])
    score = json.loads((out / "score.json").read_text())
    assert score["n"] == 16 and "engine" in score and score["psnr_image"] > score["engine"]["psnr_image"]

    before = (out / "export" / "student.onnx").stat().st_mtime_ns
    code, stdout, _ = run(["quickstart", "-o", out, "--minutes", "0.05", "--renders", "8", "--device", "cpu"], capsys)
    assert code == 0
    assert stdout.count("done before, reused") == 9
    assert (out / "export" / "student.onnx").stat().st_mtime_ns == before


def test_quickstart_bad_options(tmp_path, capsys):
    code, _, err = run(["quickstart", "-o", tmp_path / "q", "--minutes", "0"], capsys)
    assert code == 2 and "--minutes" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run(["quickstart", "-o", tmp_path / "file", "--minutes", "0.05"], capsys)
    assert code == 2 and "file" in err and "Traceback" not in err


def test_quickstart_budget_is_steps_by_default_and_one_budget_at_most(tmp_path, capsys):
    from nerfgan.quickstart import QUICKSTART_STEPS

    code, stdout, _ = run(["quickstart", "-o", tmp_path / "q", "--dry-run"], capsys)
    settings = json.loads(stdout)
    assert code == 0 and settings["steps"] == QUICKSTART_STEPS and settings["minutes"] is None
    code, stdout, _ = run(["quickstart", "-o", tmp_path / "q", "--minutes", "2", "--dry-run"], capsys)
    assert code == 0 and json.loads(stdout)["steps"] is None and json.loads(stdout)["minutes"] == 2
    code, _, err = run(["quickstart", "-o", tmp_path / "q", "--minutes", "2", "--steps", "10"], capsys)
    assert code == 2 and "--steps and --minutes" in err and "Traceback" not in err


def test_a_step_budget_is_never_warned_about_and_a_short_time_budget_is():
    from nerfgan.quickstart import QUICKSTART_STAGE1_STEPS, USUAL_PSNR_DB, Quickstart

    low = {"steps": QUICKSTART_STAGE1_STEPS - 1, "psnr_hr": USUAL_PSNR_DB - 1}
    assert Quickstart("q", None, 8, False, "cpu", steps=50).budget_warnings(low) == []
    warned = Quickstart("q", 1.0, 8, False, "cpu").budget_warnings(low)
    assert len(warned) == 2 and "before the adversarial stage" in warned[0] and "below the usual" in warned[1]
    assert Quickstart("q", 1.0, 8, False, "cpu").budget_warnings(
        {"steps": QUICKSTART_STAGE1_STEPS + 1, "psnr_hr": USUAL_PSNR_DB + 1}) == []
