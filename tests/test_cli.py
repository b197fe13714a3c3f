"""The ``nerfgan`` command: each subcommand's happy path, and one clear line for each user mistake."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REFERENCE_NPZ, UPSTREAM_PKL, invoke
from nerfgan.cli import main


def run(args, capsys):
    return invoke(main, args, capsys)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "teacher.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["teacher", "import", str(UPSTREAM_PKL), "-o", str(path)])
    assert e.value.code == 0
    return path


def test_import_writes_a_teacher(teacher_file):
    assert teacher_file.stat().st_size > 1_000_000
    assert not list(teacher_file.parent.glob(".*tmp"))


def test_import_dry_run_prints_config_and_writes_nothing(tmp_path, capsys):
    code, out, _ = run(["teacher", "import", UPSTREAM_PKL, "-o", tmp_path / "t.safetensors", "--dry-run"], capsys)
    assert code == 0
    assert json.loads(out)["neural_rendering_resolution"] == 64
    assert not (tmp_path / "t.safetensors").exists()


def test_render_writes_image_and_depth(teacher_file, tmp_path, capsys):
    img, depth = tmp_path / "face.png", tmp_path / "depth.png"
    code, out, err = run(["teacher", "render", "--ckpt", teacher_file, "--seed", 3, "--pose", "20,-10",
                          "-o", img, "--depth", depth, "--device", "cpu"], capsys)
    assert code == 0, err
    a = np.asarray(Image.open(img))
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8 and a.std() > 1
    # the depth picture: the image's size (the 64 px volume render shown at 128 px) on a colour scale, with a bar
    # and a footer under it (nerfgan.depth_picture; it was a bare 64 px grey map)
    d = np.asarray(Image.open(depth).convert("RGB"))
    assert d.shape[1] == 128 and d.shape[0] > 128 + 10 and len(np.unique(d[:128].reshape(-1, 3), axis=0)) > 20


def test_render_is_deterministic_and_pose_dependent(teacher_file, tmp_path, capsys):
    paths = [tmp_path / n for n in ("a.png", "b.png", "c.png")]
    for p, pose in zip(paths, ["0,0", "0,0", "30,0"]):
        assert run(["teacher", "render", "--ckpt", teacher_file, "--seed", 1, "--pose", pose, "-o", p], capsys)[0] == 0
    a, b, c = (np.asarray(Image.open(p)).astype(int) for p in paths)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1


def test_render_dry_run(teacher_file, capsys):
    code, out, _ = run(["teacher", "render", "--ckpt", teacher_file, "--pose", "10,5,3.0", "-o", "x.png", "--dry-run"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["yaw_deg"] == 10 and len(info["render_camera"]) == 25
    assert abs(np.linalg.norm(np.array(info["render_camera"])[[3, 7, 11]]) - 3.0) < 1e-5


def test_verify_passes_on_the_fixture(capsys):
    code, out, _ = run(["teacher", "verify", REFERENCE_NPZ, "--device", "cpu"], capsys)
    assert code == 0
    assert "all 9 outputs within tolerance" in out


@pytest.mark.parametrize("pose", ["abc", "10", "10,x", "nan,0", "0,95", "200,0", "0,0,-1", "1,2,3,4"])
def test_bad_pose_is_a_usage_error(teacher_file, pose, capsys):
    code, _, err = run(["teacher", "render", "--ckpt", teacher_file, "--pose", pose, "-o", "x.png"], capsys)
    assert code == 2
    assert "--pose" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _bad_files(tmp_path):
    text = tmp_path / "notes.pkl"
    text.write_text("not a pickle at all")
    other = tmp_path / "list.pkl"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    no_gema = tmp_path / "dict.pkl"
    no_gema.write_bytes(pickle.dumps({"G": None}))
    return {"missing": tmp_path / "nowhere.pkl", "text": text, "list": other, "no_gema": no_gema}


@pytest.mark.parametrize("kind", ["missing", "text", "list", "no_gema"])
def test_import_bad_file(tmp_path, kind, capsys):
    path = _bad_files(tmp_path)[kind]
    code, _, err = run(["teacher", "import", path, "-o", tmp_path / "out.safetensors"], capsys)
    assert code == 1
    assert path.name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("args", [
    ["teacher", "import", UPSTREAM_PKL, "-o", "x.safetensors", "--which", "D"],
    ["teacher", "render", "--ckpt", "x", "-o", "x.png", "--device", "tpu"],
    ["teacher", "render", "--ckpt", "x", "-o", "x.png", "--truncation", "2"],
    ["teacher", "verify"],
])
def test_unknown_or_missing_option_values_are_usage_errors(args, capsys):
    code, _, err = run(args, capsys)
    assert code == 2 and "Traceback" not in err


def test_render_bad_checkpoint_and_output_name(teacher_file, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = run(["teacher", "render", "--ckpt", bad, "-o", tmp_path / "x.png"], capsys)
    assert code == 1 and "bad.safetensors" in err
    code, _, err = run(["teacher", "render", "--ckpt", teacher_file, "-o", tmp_path / "x.jpg"], capsys)
    assert code == 2 and "x.jpg" in err


def test_verify_bad_reference(tmp_path, capsys):
    bad = tmp_path / "ref.npz"
    np.savez(bad, z=np.zeros((1, 512)))
    code, _, err = run(["teacher", "verify", bad], capsys)
    assert code == 1 and "ref.npz" in err and "init_kwargs_json" in err


def test_console_entry_point_prints_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nerfgan.cli", "teacher", "import", str(tmp_path / "none.pkl"),
                           "-o", str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error:") and "none.pkl" in proc.stderr
    assert "Traceback" not in proc.stderr
