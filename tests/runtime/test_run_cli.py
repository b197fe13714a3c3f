"""nerfgan-run on a real tiny ONNX export: images, per-seed files, grids, orbit GIFs, interpolation strips,
--dry-run, one clear line per mistake with nothing written, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from nerfgan.captions import GAP, layout
from nerfgan.runtime import run_cli
from nerfgan.runtime.run_cli import main

RES = 128  # the tiny student's image resolution


def run(args, capsys):
    return invoke(main, args, capsys)


def pixels(path):
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def plan_of(**options):
    """run_cli.make_plan with every option at its command-line default but ``options``."""
    defaults = dict(engine="export", precision=None, device="cpu", threads=None, pose_text="0,0", seed=None,
                    seeds_text=None, truncation=0.7, fov=None, output="out.png", grid=False, cols=None, orbit=None,
                    yaw_range=None, pitch_range=None, fps=None, interp=None, steps=None, space=None, batch=4)
    return run_cli.make_plan(**{**defaults, **options})


def files(d):
    return sorted(p.name for p in d.rglob("*"))


def test_single_image_equals_the_runtime(export_dir, gen, tmp_path, capsys):
    code, out, err = run(["--engine", export_dir, "--device", "cpu", "--seed", 5, "--pose", "20,-5",
                          "-o", tmp_path / "face.png"], capsys)
    assert code == 0, err
    img = pixels(tmp_path / "face.png")
    assert img.shape == (RES, RES, 3)
    np.testing.assert_array_equal(img, gen.render(seeds=5, yaw=20, pitch=-5)[0])
    assert out.strip().splitlines() == [f"wrote {tmp_path / 'face.png'} (128x128, "
                                        f"{(tmp_path / 'face.png').stat().st_size / 1e3:.1f} kB)"]
    assert files(tmp_path) == ["face.png"]  # no temporary file left behind


def test_seeds_without_grid_write_one_file_per_seed(export_dir, gen, tmp_path, capsys):
    code, out, err = run(["--engine", export_dir, "--seeds", "2-4", "--batch", 2, "-o", tmp_path / "out.png"], capsys)
    assert code == 0, err
    assert files(tmp_path) == ["out-2.png", "out-3.png", "out-4.png"]
    assert len(out.strip().splitlines()) == 3 and all(line.startswith("wrote ") for line in out.strip().splitlines())
    for s in (2, 3, 4):
        np.testing.assert_array_equal(pixels(tmp_path / f"out-{s}.png"), gen.render(seeds=s)[0])
    assert not np.array_equal(pixels(tmp_path / "out-2.png"), pixels(tmp_path / "out-3.png"))


def test_grid_is_near_square_and_holds_every_seed(export_dir, gen, tmp_path, capsys):
    code, _, err = run(["--engine", export_dir, "--seeds", "0,1,2,3,4", "--grid", "--pose", "10,5",
                        "-o", tmp_path / "grid.png"], capsys)
    assert code == 0, err
    grid = pixels(tmp_path / "grid.png")
    want = gen.render(seeds=[0, 1, 2, 3, 4], yaw=10, pitch=5)
    labels = [["seed 0", "seed 1", "seed 2"], ["seed 3", "seed 4"]]  # 5 seeds: ceil(sqrt(5)) = 3 columns, 2 rows
    lay = layout([list(want[:3]), list(want[3:])], labels=labels)  # tile positions (the footer comes after them)
    assert grid.shape[1] == 3 * RES + 2 * GAP and grid.shape[0] > 2 * (RES + lay.below) + GAP  # + the footer
    for k in range(5):
        y, x = lay.origin(*divmod(k, 3))
        np.testing.assert_array_equal(grid[y:y + RES, x:x + RES], want[k])
        assert (grid[y + RES:y + RES + lay.below, x:x + RES].min(axis=-1) < 128).sum() > 10  # "seed k" under it
    footer = grid[2 * (RES + lay.below + GAP):]
    assert (footer.min(axis=-1) < 128).sum() > 100  # "yaw 10 pitch 5, truncation 0.7; rendered by ..."
    y, x = lay.origin(1, 2)
    assert (grid[y:y + RES, x:x + RES] == 255).all(), "the empty cell is not white"
    assert run_cli.caption_footer(plan_of(pose_text="10,5", seeds_text="0-4", grid=True)).startswith(
        "yaw 10 pitch 5, truncation 0.7; rendered by nerfgan-run from ")

    code, _, err = run(["--engine", export_dir, "--seeds", "0-3", "--grid", "--cols", 4, "-o", tmp_path / "row.png"],
                       capsys)
    assert code == 0, err
    row = pixels(tmp_path / "row.png")
    assert row.shape[1] == 4 * RES + 3 * GAP and row.shape[0] > RES + lay.below  # one row, its labels, a footer


def test_orbit_gif(export_dir, gen, tmp_path, capsys):
    code, out, err = run(["--engine", export_dir, "--seed", 1, "--orbit", 6, "--fps", 10, "-o", tmp_path / "orbit.gif"],
                         capsys)
    assert code == 0, err
    assert "6 frames at 10 fps" in out
    with Image.open(tmp_path / "orbit.gif") as im:
        assert im.format == "GIF" and im.is_animated and im.n_frames == 6 and im.size == (RES, RES)
        assert im.info.get("loop") == 0 and im.info.get("duration") == 100
        im.seek(0)
        first = np.asarray(im.convert("RGB"), np.int16)
    # frame 0 of the orbit: yaw 0, pitch +14 (the default pitch range) around --pose 0,0
    # (GIF palettes quantise colours: frame 0 is nearest its own pose, not frame 3's at pitch -14)
    ref, opposite = gen.render(seeds=1, yaw=0, pitch=[14, -14]).astype(np.int16)
    assert np.abs(first - ref).mean() < 10
    assert np.abs(first - ref).mean() < np.abs(first - opposite).mean()


def test_orbit_with_seeds_makes_grid_frames(export_dir, tmp_path, capsys):
    code, _, err = run(["--engine", export_dir, "--seeds", "0-1", "--orbit", 3, "-o", tmp_path / "o.gif"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "o.gif") as im:  # two tiles side by side, "seed 0" / "seed 1" under them, a footer
        assert im.n_frames == 3 and im.size[0] == 2 * RES + GAP and im.size[1] > RES + 20
        im.seek(2)
        last = np.asarray(im.convert("RGB"))
    assert (last[RES:].min(axis=-1) < 128).sum() > 100  # the captions are on every frame


def test_interp_strip_and_gif(export_dir, gen, tmp_path, capsys):
    code, _, err = run(["--engine", export_dir, "--interp", "3,5", "--steps", 4, "--space", "w",
                        "-o", tmp_path / "strip.png"], capsys)
    assert code == 0, err
    strip = pixels(tmp_path / "strip.png")
    assert strip.shape[1] == 4 * RES + 3 * GAP and strip.shape[0] > RES + 20  # one row, labels and a footer below
    x3 = 3 * (RES + GAP)
    np.testing.assert_array_equal(strip[:RES, :RES], gen.render(seeds=3)[0])
    np.testing.assert_array_equal(strip[:RES, x3:x3 + RES], gen.render(seeds=5)[0])
    assert not np.array_equal(strip[:RES, RES + GAP:2 * RES + GAP], strip[:RES, :RES])
    assert (strip[RES:].min(axis=-1) < 128).sum() > 100  # "seed 3", "t = 0.33", ..., the footer
    plan = plan_of(interp="3,5", steps=4, space="w")
    assert run_cli.tile_labels(plan) == ["seed 3", "t = 0.33", "t = 0.67", "seed 5"]
    assert run_cli.caption_footer(plan).startswith("interpolation in w from seed 3 to seed 5; yaw 0 pitch 0")

    code, _, err = run(["--engine", export_dir, "--interp", "3,5", "--steps", 4, "--space", "z",
                        "-o", tmp_path / "z.png"], capsys)
    assert code == 0, err
    z_strip = pixels(tmp_path / "z.png")  # slerp in z keeps the ends
    np.testing.assert_array_equal(z_strip[:RES, :RES], strip[:RES, :RES])

    code, out, err = run(["--engine", export_dir, "--interp", "3,5", "--steps", 5, "-o", tmp_path / "i.gif"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "i.gif") as im:
        assert im.n_frames == 5 and im.size == (RES, RES)


def test_slerp_keeps_the_ends_and_the_norm():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(512), rng.standard_normal(512)
    b *= np.linalg.norm(a) / np.linalg.norm(b)
    z = run_cli.slerp(a, b, np.linspace(0, 1, 5))
    np.testing.assert_allclose(z[0], a, atol=1e-5)
    np.testing.assert_allclose(z[-1], b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), np.linalg.norm(a), rtol=1e-5)


def test_dry_run_prints_the_plan_and_writes_nothing(export_dir, tmp_path, capsys):
    code, out, err = run(["--engine", export_dir, "--seeds", "0-2", "--orbit", 4, "--pose", "10,0",
                          "-o", tmp_path / "sub" / "o.gif", "--dry-run"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["mode"] == "orbit" and plan["seeds"] == [0, 1, 2] and plan["frames"] == 4
    assert plan["outputs"] == [str(tmp_path / "sub" / "o.gif")] and plan["engine"] == str(export_dir)
    assert len(plan["poses"]) == 4 and plan["poses"][0] == [10.0, 14.0, None] and plan["fps"] == 24.0
    assert plan["cols"] == 2
    code, out, _ = run(["--engine", export_dir, "--seeds", "7,9", "-o", tmp_path / "a.png", "--dry-run"], capsys)
    assert code == 0 and json.loads(out)["outputs"] == [str(tmp_path / "a-7.png"), str(tmp_path / "a-9.png")]
    assert files(tmp_path) == []


@pytest.mark.parametrize("args, code, message", [
    (["--pose", "10"], 2, "--pose: expected YAW,PITCH"),
    (["--pose", "0,95"], 2, "--pose: pitch must be strictly between -90 and 90"),
    (["--seeds", "5-2"], 2, "--seeds: range '5-2' runs backwards"),
    (["--seeds", "a-b"], 2, "--seeds: expected A-B"),
    (["--seeds", "-3,4"], 2, "--seeds:"),
    (["--seeds", "0-5000", "--grid"], 2, "--seeds: '0-5000' is 5001 seeds, at most 1024"),
    (["--seed", 1, "--seeds", "0-2"], 2, "--seed and --seeds"),
    (["--seed", "x"], 2, "--seed: expected an integer"),
    (["--truncation", 1.5], 2, "--truncation: expected a number >= 0 and <= 1"),
    (["--fov", 200], 2, "--fov:"),
    (["-o", "{tmp}/out.jpg"], 2, "out.jpg: a still image is written as .png"),
    (["--orbit", 4, "-o", "{tmp}/out.png"], 2, "--orbit writes a .gif or .mp4"),
    (["--orbit", 4, "--interp", "1,2", "-o", "{tmp}/o.gif"], 2, "--orbit and --interp"),
    (["--interp", "1,2", "--steps", 1], 2, "--steps: expected an integer >= 2"),
    (["--interp", "1,1"], 2, "--interp: expected two different seeds"),
    (["--steps", 4], 2, "--steps works with --interp only"),
    (["--grid", "--cols", 3], 2, "--cols works with"),
    (["--orbit", 4, "--pose", "170,0", "-o", "{tmp}/o.gif"], 2, "--orbit around --pose 170,0 with --yaw-range 20, --pitch-range 14: the yaw reaches 190"),
    (["--orbit", 4, "--pose", "0,80", "-o", "{tmp}/o.gif"], 2, "the pitch reaches 94 degrees"),
    (["--device", "tpu"], 2, "--device: choose one of auto, cpu, cuda"),
    (["--precision", "fp16"], 2, "no fp16 onnx student in this export"),
    (["--engine", "{tmp}/missing"], 1, "missing: not found"),
    (["--engine", "{tmp}"], 1, "no manifest.json (not an export folder"),
])
def test_mistakes_print_one_line_and_write_nothing(export_dir, tmp_path, capsys, args, code, message):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [str(a).replace("{tmp}", str(out_dir)) for a in args]
    base = ["--engine", export_dir] if "--engine" not in args else []
    base += ["-o", out_dir / "x.png"] if "-o" not in args else []
    got, out, err = run(base + args, capsys)
    assert got == code, err
    assert message in err, err
    assert err.startswith("Error") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == "" and files(out_dir) == []


def test_mp4_without_an_encoder_names_the_install(export_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_cli, "mp4_encoder_available", lambda: False)
    code, out, err = run(["--engine", export_dir, "--orbit", 4, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 2 and err.startswith("Error") and "pip install 'nerfgan[video]'" in err
    assert "-o " in err and files(tmp_path) == []


def test_orbit_mp4_when_imageio_ffmpeg_is_installed(export_dir, tmp_path, capsys):
    ffmpeg = pytest.importorskip("imageio_ffmpeg")
    code, out, err = run(["--engine", export_dir, "--seeds", "0-1", "--orbit", 5, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 0, err
    assert "(256x128, 5 frames at 24 fps" in out
    assert (tmp_path / "o.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container, though written to a .tmp name
    reader = ffmpeg.read_frames(str(tmp_path / "o.mp4"))
    meta = next(reader)
    assert meta["size"] == (256, 128) and sum(1 for _ in reader) == 5
    assert files(tmp_path) == ["o.mp4"]


def test_a_student_without_its_mapping_fails_before_writing(export_dir, tmp_path, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "student.onnx").write_bytes((export_dir / "student.onnx").read_bytes())
    code, _, err = run(["--engine", lone / "student.onnx", "--seed", 0, "-o", tmp_path / "o.png"], capsys)
    assert code == 2 and "no mapping model beside it" in err and err.startswith("Error")
    assert files(tmp_path) == ["lone", "student.onnx"]


def test_onnx_run_never_imports_torch(export_dir, tmp_path):
    out = tmp_path / "o.png"
    code = ("import sys\n"
            "from nerfgan.runtime.run_cli import main\n"
            "try:\n"
            f"    main(['--engine', {str(export_dir)!r}, '--device', 'cpu', '--seeds', '0-1', '--grid', "
            f"'-o', {str(out)!r}])\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code)\n"
            "print('torch loaded:', 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-2:] == ["exit 0", "torch loaded: False"]
    assert out.is_file()
