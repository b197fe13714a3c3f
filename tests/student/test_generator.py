"""The student generator: export-friendly ops, the frozen teacher mapping, the teacher-initialised SR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfgan import camera
from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.student.checkpoint import load_student, read_student_metadata, save_student
from nerfgan.student.config import StudentConfig, student_preset
from nerfgan.student.generator import StudentGenerator
from nerfgan.teacher.config import preset


@pytest.fixture(scope="module")
def student(tiny_teacher):
    torch.manual_seed(0)
    return StudentGenerator.from_teacher(student_preset("tiny", tiny_teacher.config), tiny_teacher).eval()


def cams(yaws, pitches):
    return torch.from_numpy(np.stack([camera.pose(y, p) for y, p in zip(yaws, pitches)]))


def test_shapes_and_any_batch(student):
    for B in (1, 3, 5):
        w = torch.randn(B, 512)
        out = student(w, cams([0] * B, [0] * B))
        assert out.image.shape == (B, 3, 128, 128)
        assert out.feature_image.shape == (B, 32, 64, 64)
        assert torch.equal(out.image_raw, out.feature_image[:, :3])


def test_non_fused_equals_fused_reference(student):
    w = torch.randn(3, 512)
    c = cams([-20, 0, 25], [5, 0, -10])
    with torch.no_grad():
        a, b = student(w, c, fused=False), student(w, c, fused=True)
    scale = b.image.abs().max()
    assert (a.image - b.image).abs().max() <= 2e-6 * scale
    assert (a.feature_image - b.feature_image).abs().max() <= 2e-6 * b.feature_image.abs().max()


def test_teacher_mapping_is_the_teachers(student, tiny_teacher):
    z = torch.randn(4, 512)
    cc = torch.from_numpy(np.stack([camera.frontal()] * 4))
    for psi in (0.5, 0.7, 1.0):
        ws = tiny_teacher.mapping(z, cc, psi)
        assert torch.equal(student.teacher_mapping(z, cc, psi), ws[:, 0])
    # per-sample truncation equals the teacher's at each sample's psi (same batch: BLAS results
    # may differ in the last bits between batch sizes)
    per_sample = student.teacher_mapping(z, cc, torch.tensor([0.5, 0.7, 1.0, 0.6]))
    for i, psi in enumerate([0.5, 0.7, 1.0, 0.6]):
        assert torch.equal(per_sample[i], tiny_teacher.mapping(z, cc, psi)[i, 0])
    assert not any(p.requires_grad for p in student.teacher_mapping.parameters())
    assert all(not n.startswith("teacher_mapping") for n, p in student.named_parameters()
               if any(p is q for q in student.trainable_parameters()))


def test_superresolution_starts_as_the_teachers(student, tiny_teacher):
    z = torch.randn(2, 512)
    cc = torch.from_numpy(np.stack([camera.frontal()] * 2))
    c = cams([15, -15], [0, 5])
    with torch.no_grad():
        ws = tiny_teacher.mapping(z, cc, 0.7)
        t = tiny_teacher.synthesis(ws, c)
        img, _ = student.superresolution(t.feature_image[:, :3].clone(), t.feature_image, ws[:, :1])
    assert (img - t.image).abs().max() < 1e-5


def test_pose_changes_the_output_and_no_pose_ablation_ignores_it(tiny_teacher, student):
    w = torch.randn(1, 512)
    with torch.no_grad():
        a, b = student(w, cams([0], [0])), student(w, cams([30], [0]))
    assert (a.image - b.image).abs().max() > 1e-3
    blind = StudentGenerator(student_preset("tiny", tiny_teacher.config).replace(pose_input=False)).eval()
    with torch.no_grad():
        assert torch.equal(blind(w, cams([0], [0])).image, blind(w, cams([30], [0])).image)
    assert not hasattr(blind.mapping, "embed")


def test_gradients_reach_every_trainable_parameter(student):
    s = StudentGenerator(student.config).train()
    out = s(torch.randn(2, 512), cams([0, 10], [0, 0]))
    (out.image.square().mean() + out.feature_image.square().mean()).backward()
    missing = [n for n, p in s.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    # noise strengths start at zero but still receive gradient; nothing is disconnected
    assert missing == []


def test_config_json_round_trip_and_presets(tiny_teacher):
    cfg = student_preset("tiny", tiny_teacher.config)
    assert StudentConfig.from_json(cfg.to_json()) == cfg
    big = student_preset("ffhq512", preset("ffhq512-128"))
    assert big.resolution == 128 and big.img_resolution == 512
    with torch.device("meta"):
        m = StudentGenerator(big)
    assert m.synthesis.b128.torgb.weight.shape == (32, 256, 1, 1)  # 32-channel feature image at R = 128
    with pytest.raises(ConfigError):
        student_preset("huge", tiny_teacher.config)


def test_student_file_round_trip(student, tmp_path):
    path = save_student(student, tmp_path / "student.safetensors")
    loaded = load_student(path)
    meta = read_student_metadata(path)
    assert meta["format"] == "nerfgan-student"
    assert abs(json_camera(meta)["radius"] - 2.7) < 1e-9
    w, c = torch.randn(2, 512), cams([5, -5], [0, 0])
    with torch.no_grad():
        assert torch.equal(loaded(w, c).image, student(w, c).image)


def json_camera(meta):
    import json

    return json.loads(meta["camera"])


def test_student_file_errors(student, tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_student(student, tmp_path / "s.safetensors")
    tensors = load_file(str(path))
    tensors.pop("mapping.layers.0.weight")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match=r"bad.safetensors.*mapping\.layers\.0\.weight"):
        load_student(bad)
    with pytest.raises(CheckpointError, match="not a nerfgan student"):
        from nerfgan.teacher.checkpoint import resolve_teacher_path

        load_student(resolve_teacher_path("tiny"))
