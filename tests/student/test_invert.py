"""Inversion through the student (nerfgan.student.invert, `nerfgan invert`): it fits, writes its folder, refuses bad
input in one line before any work, and its w renders through nerfgan.runtime as through PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nerfgan.cli import main
from nerfgan.student.checkpoint import load_student
from nerfgan.student.invert import (
    InversionSettings, camera_for, code_scale, invert, load_photo, render_code, start_code,
)
from conftest import invoke

SELF_FIT_STEPS = 20
SELF_FIT_MIN_GAIN_DB = 10.0
"""The student's own render of seed 5's w at yaw 20: from w_avg, 20 steps at the default lr raise the PSNR by more
than this (measured: 17.6 -> 35.5 dB on the fixture student, the loss 0.50 -> 0.05)."""


@pytest.fixture(scope="module")
def student(tiny_student_path):
    return load_student(tiny_student_path)


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory, student):
    """A 128 px PNG rendered by the student itself from seed 5's w at pose (20, 0)."""
    c = torch.from_numpy(camera_for(student, 20.0, 0.0))
    with torch.no_grad():
        image = student(start_code(student, seed=5), c).image
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(np.moveaxis(np.clip(np.rint(image[0].numpy() * 127.5 + 128), 0, 255).astype(np.uint8), 0, -1)).save(path)
    return path


def test_inverting_the_students_own_render_reduces_the_loss_and_gets_much_closer(student):
    c = camera_for(student, 20.0, 0.0)
    with torch.no_grad():
        target = student(start_code(student, seed=5), torch.from_numpy(c)).image.numpy()
    r = invert(student, target, c, InversionSettings(steps=SELF_FIT_STEPS))
    assert len(r.loss_history) == len(r.psnr_history) == SELF_FIT_STEPS + 1
    assert r.w.shape == (1, student.config.teacher.w_dim) and r.w.dtype == np.float32 and r.offsets is None
    assert r.loss_history[-1] < 0.5 * r.loss_history[0]
    assert r.psnr_history[-1] > r.psnr_history[0] + SELF_FIT_MIN_GAIN_DB, r.psnr_history
    assert not any(p.requires_grad for p in student.parameters())  # the student's flags are restored


def test_per_layer_codes_have_their_shape_and_render_in_pytorch(student):
    c = camera_for(student, 0.0, 0.0)
    with torch.no_grad():
        target = student(start_code(student, seed=5), torch.from_numpy(c)).image.numpy()
    r = invert(student, target, c, InversionSettings(steps=3, per_layer=True))
    assert r.offsets is not None and r.offsets.shape == (1, student.synthesis.num_ws, student.config.teacher.w_dim)
    assert r.loss_history[-1] < r.loss_history[0]
    with torch.no_grad():
        w, ct = torch.from_numpy(r.w), torch.from_numpy(c)
        assert torch.equal(render_code(student, w, ct), student(w, ct).image)  # no offsets: the forward itself
        zero = render_code(student, w, ct, torch.zeros_like(torch.from_numpy(r.offsets)))
        torch.testing.assert_close(zero, student(w, ct).image, atol=1e-5, rtol=0)


def test_unused_channels_stay_at_their_start(student):
    """The built-in teacher's mapping varies 16 of w's 512 channels; inversion moves only those."""
    scale = code_scale(student)
    c = camera_for(student, 0.0, 0.0)
    target = np.zeros((1, 3, 128, 128), np.float32)
    r = invert(student, target, c, InversionSettings(steps=2))
    frozen = (scale == 0).numpy()
    assert frozen.sum() > 0
    np.testing.assert_array_equal(r.w[0, frozen], start_code(student)[0].numpy()[frozen])


def test_the_w_renders_through_the_runtime_as_through_pytorch(student, tiny_student_path):
    import nerfgan.runtime as nr
    from nerfgan.io import to_uint8

    c = camera_for(student, 20.0, 0.0)
    with torch.no_grad():
        target = student(start_code(student, seed=5), torch.from_numpy(c)).image.numpy()
    w = invert(student, target, c, InversionSettings(steps=2)).w
    with nr.load(tiny_student_path, device="cpu") as g:
        frames = g.render(w=w, yaw=[20.0, -30.0], pitch=[0.0, 10.0])
    cams = np.concatenate([camera_for(student, 20.0, 0.0), camera_for(student, -30.0, 10.0)])
    with torch.no_grad():
        expected = to_uint8(student(torch.from_numpy(w).expand(2, -1), torch.from_numpy(cams)).image.numpy())
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def test_cli_writes_w_views_and_report(photo_path, tiny_student_path, tmp_path, capsys):
    out = tmp_path / "inv"
    code, stdout, err = invoke(main, ["invert", photo_path, "--student", tiny_student_path, "--pose", "20,0",
                                      "--steps", 3, "--yaws", "-30,30", "-o", out], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {".nerfgan-owner.json", "w.npy", "views.png", "invert.json"}
    w = np.load(out / "w.npy")
    assert w.shape == (1, 512) and w.dtype == np.float32
    report = json.loads((out / "invert.json").read_text())
    assert report["format"] == "nerfgan-inversion" and report["w"]["shape"] == [1, 512]
    assert report["settings"]["steps"] == 3 and report["resized"] is None
    assert len(report["loss_curve"]["at_steps"]) == 4 and report["loss_curve"]["last"] <= report["loss_curve"]["first"]
    views = np.asarray(Image.open(out / "views.png"))
    assert views.shape[1] > 5 * 128 and views.shape[0] > 128  # photo, inverted, difference, 2 yaws + captions
    # a second run into the same folder is allowed (nerfgan's own), a folder with the user's files is not
    code, _, err = invoke(main, ["invert", photo_path, "--student", tiny_student_path, "--pose", "20,0",
                                 "--steps", 1, "--per-layer", "-o", out], capsys)
    assert code == 0, err
    assert np.load(out / "offsets.npy").shape[0] == 1
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = invoke(main, ["invert", photo_path, "--student", tiny_student_path, "--pose", "20,0",
                                 "-o", mine], capsys)
    assert code == 1 and err.count("\n") == 1 and "nothing was changed" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_photo_of_another_size_is_resized_with_a_note(tmp_path, tiny_student_path, capsys):
    photo = tmp_path / "small.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(photo)
    image, note = load_photo(photo, 128)
    assert image.shape == (1, 3, 128, 128) and note and "64x64 to 128x128" in note
    out = tmp_path / "inv"
    code, _, err = invoke(main, ["invert", photo, "--student", tiny_student_path, "--pose", "0,0", "--steps", 1,
                                 "-o", out], capsys)
    assert code == 0 and "resized from 64x64" in err
    assert json.loads((out / "invert.json").read_text())["photo_size"] == [64, 64]


@pytest.mark.parametrize("case", ["not an image", "missing", "not square", "pose out of range", "pose malformed",
                                  "bad yaws"])
def test_bad_input_is_one_error_line_and_writes_nothing(case, photo_path, tiny_student_path, tmp_path, capsys):
    photo, pose, extra = str(photo_path), "20,0", []
    if case == "not an image":
        photo = str(tmp_path / "junk.png")
        (tmp_path / "junk.png").write_bytes(b"this is not a png")
    elif case == "missing":
        photo = str(tmp_path / "nowhere.png")
    elif case == "not square":
        photo = str(tmp_path / "wide.png")
        Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(photo)
    elif case == "pose out of range":
        pose = "0,95"
    elif case == "pose malformed":
        pose = "left"
    else:
        extra = ["--yaws", "-30,x"]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "inv"
    code, stdout, err = invoke(main, ["invert", photo, "--student", tiny_student_path, "--pose", pose, *extra,
                                      "-o", out], capsys)
    assert code in (1, 2)
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before
    if case.startswith("pose"):
        assert "--pose" in err
    elif case != "bad yaws":
        assert photo in err


def test_a_16_bit_grey_photo_is_scaled_not_clipped(tmp_path):
    """Issue 22: Pillow's convert('RGB') clips I;16 to 255 (a white photo); nerfgan scales it."""
    from PIL import Image

    from nerfgan.student.invert import read_photo

    grey = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "p.png")
    rgb = read_photo(tmp_path / "p.png")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.rint(grey / 257).astype(np.uint8))
