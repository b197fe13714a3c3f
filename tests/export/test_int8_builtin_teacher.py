"""The INT8 gate on the built-in teacher: a student that really resembles its teacher, real teacher renders.

On the old random-weight teacher a student stayed ~7 dB from its teacher, and no quantization could
lower that further: the gate passed anything. The fitted teacher renders solid objects on black, a
short distillation already reaches it closely, and a bad quantization shows.
"""

from __future__ import annotations

import pytest

from conftest import saturate_int8_scales
from nerfgan.errors import ExportMismatchError
from nerfgan.export.pipeline import ExportConfig, export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """(student, calibration file): 150 steps on 32 renders of the built-in teacher; calibration on 16
    held-out renders (seed 1)."""
    from nerfgan.calibrate.calibset import make_calibration_set
    from nerfgan.student.train import Trainer, train_preset
    from nerfgan.teacher.checkpoint import load_teacher
    from nerfgan.teacher.renders import make_render_set

    d = tmp_path_factory.mktemp("distil")
    make_render_set("tiny", 32, d / "renders", seed=0, progress=False)
    cfg = train_preset("tiny", eval_every=0, n_eval=4, stage1_steps=10**6)
    Trainer(cfg, load_teacher("tiny"), d / "run", renders=str(d / "renders"), progress=False).run(steps=150)
    student = d / "run" / "student.safetensors"
    return student, make_calibration_set("tiny", student, 16, d / "calib.npz", seed=1)


def _fp32_psnr(checks):
    return float(checks[0]["detail"].split("fp32 ")[1].split(" dB")[0])


def test_default_int8_passes_on_the_builtin_teacher(tmp_path, distilled):
    student, calib = distilled
    manifest = export(student, tmp_path / "out", ExportConfig(int8=True, calib=str(calib)), log=lambda s: None)
    checks = manifest["artifacts"][-1]["validation"]
    assert all(c["ok"] and c["value"] < 1.0 for c in checks), checks
    assert _fp32_psnr(checks) > 17.0  # the premise: the student already resembles its teacher


def test_saturating_int8_fails_on_the_builtin_teacher(tmp_path, distilled, monkeypatch):
    student, calib = distilled
    saturate_int8_scales(monkeypatch)
    with pytest.raises(ExportMismatchError) as e:
        export(student, tmp_path / "out", ExportConfig(int8=True, calib=str(calib)), log=lambda s: None)
    assert "student_int8.onnx:image psnr_drop_db_vs_teacher" in str(e.value)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".nerfgan-export.lock"]  # nothing installed
