"""Style mixing (nerfgan-run --mix): coarse layers from seed A, fine from seed B, in the student and the teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke

from nerfgan.errors import UsageError
from nerfgan.sampling import z_from_seed
from nerfgan.student.checkpoint import load_student
from nerfgan.student.invert import _map_frontal, camera_for
from nerfgan.student.mixing import check_mix_from, mix_student, mix_teacher, teacher_layer


@pytest.fixture(scope="module")
def student(tiny_student_path):
    return load_student(tiny_student_path).eval()


def _w(student, seed):
    return _map_frontal(student, torch.from_numpy(z_from_seed(seed)), 0.7)


def test_the_mix_is_a_on_coarse_layers_and_b_on_fine_ones(student):
    c = torch.from_numpy(camera_for(student, 20, 0))
    w3, w5 = _w(student, 3), _w(student, 5)
    n = student.synthesis.num_ws
    a, mixed, b = mix_student(student, w3, w5, c, n // 2)
    # the ends are the student's own renders of A and B
    np.testing.assert_allclose(a.numpy(), student(w3, c).image[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(b.numpy(), student(w5, c).image[0].detach().numpy(), atol=1e-5)
    # the mix is neither end
    assert (mixed - a).abs().mean() > 1e-3 and (mixed - b).abs().mean() > 1e-3
    # mixing a seed with itself changes nothing
    same = mix_student(student, w3, w3, c, n // 2)
    np.testing.assert_allclose(same[1].numpy(), same[0].numpy(), atol=1e-6)
    # taking only the last layer from B is closer to A than taking all but the first
    late, early = mix_student(student, w3, w5, c, n - 1)[1], mix_student(student, w3, w5, c, 1)[1]
    assert (late - a).abs().mean() < (early - a).abs().mean()


def test_the_teacher_mixes_its_backbone_codes(builtin_teacher):
    from nerfgan import camera

    t = builtin_teacher
    r = t.config.rendering
    c = torch.from_numpy(camera.pose(20.0, 0.0, radius=r.avg_camera_radius, pivot=r.avg_camera_pivot)
                         .reshape(1, 25).astype(np.float32))
    c_cond = torch.from_numpy(camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)[None])
    z3, z5 = (torch.from_numpy(z_from_seed(s)) for s in (3, 5))
    a, mixed, b = mix_teacher(t, z3, z5, c, c_cond, t.num_ws // 2, 0.7)
    assert (mixed - a).abs().mean() > 1e-3 and (mixed - b).abs().mean() > 1e-3
    assert teacher_layer(5, 10, 14) == 7 and teacher_layer(1, 10, 14) == 1 and teacher_layer(9, 10, 14) == 13


def test_mix_from_outside_the_layers_is_one_usage_error(student):
    with pytest.raises(UsageError, match="--mix-from"):
        check_mix_from(0, student.synthesis.num_ws)
    with pytest.raises(UsageError, match="--mix-from"):
        check_mix_from(student.synthesis.num_ws, student.synthesis.num_ws)


def test_nerfgan_run_mix_writes_a_captioned_student_and_teacher_grid(tiny_student_path, tmp_path, capsys):
    from nerfgan.cli import run_main

    out = tmp_path / "mix.png"
    code, stdout, err = invoke(run_main, ["--engine", tiny_student_path, "--mix", "3,5", "--mix-from", "4",
                                          "--teacher", "tiny", "--pose", "20,0", "-o", out], capsys)
    assert code == 0, err
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 2 * 128 and img.shape[1] > 3 * 128  # 2 rows (student, teacher) x 3 columns, captioned
    assert "mixed from the student's layer 4" in stdout


@pytest.mark.parametrize("args, message", [
    (["--mix", "3,5"], "needs the student's .safetensors"),
    (["--mix", "3,3"], "two different seeds"),
    (["--mix-from", "4"], "with --mix A,B only"),
    (["--mix", "3,5", "--seed", "1"], "drop --seed"),
])
def test_nerfgan_run_mix_refuses_in_one_line(tiny_export_dir, tiny_student_path, tmp_path, capsys, args, message):
    from nerfgan.cli import run_main

    engine = tiny_export_dir if "needs" in message else tiny_student_path
    code, _, err = invoke(run_main, ["--engine", engine, *args, "-o", tmp_path / "m.png"], capsys)
    assert code in (1, 2) and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
