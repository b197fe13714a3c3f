"""nerfgan calibrate: contents, byte-for-byte reproducibility, render-set source, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfgan.calibrate.calibset import load_calibration_set, make_calibration_set
from nerfgan.errors import InputFileError, UsageError


def test_contents_match_the_teacher_and_the_student_mapping(tiny_calib_path, tiny_student_path, builtin_teacher):
    from nerfgan.sampling import PoseDistribution, draw
    from nerfgan.student.checkpoint import load_student

    cs = load_calibration_set(tiny_calib_path)
    a = cs.arrays
    assert len(cs) == 8 and cs.meta["seed"] == 0 and cs.meta["source"] == "teacher"
    assert a["image"].shape == (8, 3, 128, 128) and a["image_raw"].shape == (8, 3, 64, 64)
    r = builtin_teacher.config.rendering
    s = draw(0, range(8), PoseDistribution(), r.avg_camera_radius, r.avg_camera_pivot, 512)
    np.testing.assert_array_equal(a["z"], s.z)
    np.testing.assert_array_equal(a["c"], s.c)
    student = load_student(tiny_student_path)
    with torch.no_grad():
        w = student.teacher_mapping(torch.from_numpy(s.z), torch.from_numpy(s.c_cond), torch.from_numpy(s.psi)).numpy()
    np.testing.assert_allclose(a["w"], w, atol=1e-5)  # the student's frozen mapping is the teacher's
    with torch.no_grad():
        ws = builtin_teacher.mapping(torch.from_numpy(s.z[:1]), torch.from_numpy(s.c_cond[:1]), float(s.psi[0]), None)
        out = builtin_teacher.synthesis(ws, torch.from_numpy(s.c[:1]), noise_mode="const")
    np.testing.assert_allclose(a["image"][0], out.image[0].numpy(), atol=2e-3)  # float16 storage


def test_same_seed_same_bytes_other_seed_other_samples(tmp_path, tiny_student_path):
    p1 = make_calibration_set("tiny", tiny_student_path, 2, tmp_path / "a.npz", seed=3)
    p2 = make_calibration_set("tiny", tiny_student_path, 2, tmp_path / "b.npz", seed=3)
    p3 = make_calibration_set("tiny", tiny_student_path, 2, tmp_path / "c.npz", seed=4)
    assert p1.read_bytes() == p2.read_bytes()
    assert not np.array_equal(load_calibration_set(p1).arrays["z"], load_calibration_set(p3).arrays["z"])


def test_from_a_render_set_equals_rendering(tmp_path, tiny_student_path):
    from nerfgan.teacher.renders import make_render_set

    make_render_set("tiny", 3, tmp_path / "renders", seed=5, shard_size=2, batch_size=4)
    from_set = load_calibration_set(make_calibration_set("tiny", tiny_student_path, 3, tmp_path / "s.npz",
                                                         renders=tmp_path / "renders"))
    rendered = load_calibration_set(make_calibration_set("tiny", tiny_student_path, 3, tmp_path / "r.npz", seed=5))
    assert from_set.meta["source"] == "render set" and from_set.meta["seed"] == 5
    for k in ("z", "c", "c_cond", "psi", "w"):
        np.testing.assert_array_equal(from_set.arrays[k], rendered.arrays[k])
    np.testing.assert_allclose(from_set.arrays["image"], rendered.arrays["image"], atol=2e-3)
    with pytest.raises(UsageError, match="only 3 samples"):
        make_calibration_set("tiny", tiny_student_path, 4, tmp_path / "x.npz", renders=tmp_path / "renders")


def test_bad_inputs(tmp_path, tiny_student_path):
    with pytest.raises(UsageError, match=".npz"):
        make_calibration_set("tiny", tiny_student_path, 2, tmp_path / "calib.bin")
    with pytest.raises(InputFileError, match="not found"):
        make_calibration_set("tiny", tmp_path / "missing.safetensors", 2, tmp_path / "c.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match="junk.npz"):
        load_calibration_set(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(InputFileError, match="no calibration metadata"):
        load_calibration_set(tmp_path / "plain.npz")
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "calib.bin").exists()
