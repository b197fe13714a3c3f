"""The '-fast' student presets: a narrower super-resolution (sliced from the teacher's) and synthesis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nerfgan import camera
from nerfgan.errors import ConfigError
from nerfgan.student.checkpoint import load_student, save_student
from nerfgan.student.config import StudentConfig, student_preset
from nerfgan.student.generator import StudentGenerator, slice_superresolution
from nerfgan.teacher.config import preset


@pytest.fixture(scope="module")
def fast(builtin_teacher):
    torch.manual_seed(0)
    return StudentGenerator.from_teacher(student_preset("tiny-fast", builtin_teacher.config), builtin_teacher).eval()


def cams(n):
    return torch.from_numpy(np.stack([camera.pose(15.0 * i - 20, 5.0 - 5 * i) for i in range(n)]))


def gflop(config: StudentConfig) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        g = StudentGenerator(config)
        w, c = torch.zeros(1, config.teacher.w_dim), torch.zeros(1, 25)
    counter = FlopCounterMode(display=False)
    with counter:
        g(w, c)
    return counter.get_total_flops() / 1e9


def test_fast_student_has_the_defaults_io_and_narrower_sr(fast, builtin_teacher):
    out = fast(torch.randn(3, 512), cams(3))
    assert out.image.shape == (3, 3, 128, 128) and out.feature_image.shape == (3, 32, 64, 64)
    assert torch.isfinite(out.image).all()
    sr = fast.superresolution
    assert sr.channels == (48, 24) and builtin_teacher.superresolution.channels == (128, 64)
    assert sr.block0.conv0.weight.shape == (48, 32, 3, 3) and sr.block1.conv1.weight.shape == (24, 24, 3, 3)
    assert not fast.sr_copied and StudentGenerator(student_preset("tiny", builtin_teacher.config)).sr_copied


def test_ffhq512_fast_needs_far_fewer_flops():
    t = preset("ffhq512-128")
    default, fast = gflop(student_preset("ffhq512", t)), gflop(student_preset("ffhq512-fast", t))
    assert 250 < default < 270  # the measured 260 GFLOP of the default student at 512 px
    assert default / fast >= 2.5, (default, fast)
    tiny = preset("tiny")
    assert gflop(student_preset("tiny", tiny)) / gflop(student_preset("tiny-fast", tiny)) >= 2.5


def test_sr_starts_from_a_slice_of_the_teachers(fast, builtin_teacher):
    src, dst = builtin_teacher.superresolution.state_dict(), fast.superresolution.state_dict()
    assert src.keys() == dst.keys()  # same layout, narrower tensors
    w = dst["block1.conv0.weight"]  # (24, 48, 3, 3) of the teacher's (64, 128, 3, 3)
    assert torch.equal(w, src["block1.conv0.weight"][:24, :48])
    assert torch.equal(dst["block0.conv0.weight"], src["block0.conv0.weight"][:48])  # all 32 input channels
    assert torch.equal(dst["block0.conv1.affine.weight"], src["block0.conv1.affine.weight"][:48])
    assert torch.equal(dst["block1.conv1.noise_const"], src["block1.conv1.noise_const"])
    # ToRGB's style gain is 1/sqrt(C): the sliced weight is rescaled so each kept channel adds what it added before
    assert torch.allclose(dst["block1.torgb.weight"], src["block1.torgb.weight"][:, :24] * math.sqrt(24 / 64))
    # the default preset still copies the teacher's super-resolution whole: the same function
    full = StudentGenerator.from_teacher(student_preset("tiny", builtin_teacher.config), builtin_teacher).eval()
    x, ws = torch.randn(2, 32, 64, 64), torch.randn(2, 1, 512)
    with torch.no_grad():
        assert torch.equal(full.superresolution(x[:, :3], x, ws)[0], builtin_teacher.superresolution(x[:, :3], x, ws)[0])
    with pytest.raises(ValueError, match="block0.conv0.weight"):  # a target wider than the teacher cannot be sliced
        slice_superresolution(fast.superresolution.state_dict(), full.superresolution)
    wide = student_preset("tiny-fast", builtin_teacher.config).replace(sr_channels=(256, 32))
    with pytest.raises(ConfigError, match=r"sr_channels \(256, 32\) is wider than the teacher's"):
        StudentGenerator.from_teacher(wide, builtin_teacher)


def test_config_round_trips_and_old_configs_load(fast, builtin_teacher, tmp_path):
    cfg = fast.config
    again = StudentConfig.from_json(cfg.to_json())
    assert again == cfg and again.sr_channels == (48, 24)
    old = json.loads(student_preset("tiny", builtin_teacher.config).to_json())
    del old["sr_channels"]  # a config written before the field existed
    loaded = StudentConfig.from_json(json.dumps(old))
    assert loaded.sr_channels is None and loaded.sr_copied and loaded == student_preset("tiny", builtin_teacher.config)
    for bad in ([64], [64, 0], [64, "32"], [64, 1 << 20]):
        with pytest.raises(ConfigError, match="sr_channels"):
            StudentConfig.from_json(json.dumps({**old, "sr_channels": bad}), source="x.json")
    # a student file keeps the widths in its frozen config; loading rebuilds the same model
    path = save_student(fast, tmp_path / "fast.safetensors")
    back = load_student(path)
    assert back.config == cfg
    w, c = torch.randn(2, 512), cams(2)
    with torch.no_grad():
        assert torch.equal(back(w, c).image, fast(w, c).image)


def test_torch_backend_runs_a_fast_student_file(fast, tmp_path):
    import nerfgan.runtime as nr

    path = save_student(fast, tmp_path / "fast.safetensors")
    with nr.load(path, device="cpu") as g:
        out = g.generate(seeds=[0, 1], yaw=10.0)
    assert out["image"].shape == (2, 3, 128, 128) and np.isfinite(out["image"]).all()


def test_onnx_export_matches_pytorch_and_int8_exclusions_still_match(fast, tmp_path):
    import onnx
    import onnxruntime as ort

    from nerfgan.calibrate.int8 import DEFAULT_EXCLUDE, excluded_nodes
    from nerfgan.export.to_onnx import export_onnx

    path = export_onnx(fast, "student", tmp_path / "student.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    w, c = torch.randn(3, 512), cams(3)
    image, image_raw = sess.run(["image", "image_raw"], {"w": w.numpy(), "c": c.numpy()})
    with torch.no_grad():
        ref = fast(w, c)
    assert np.abs(image - ref.image.numpy()).max() <= 1e-4
    assert np.abs(image_raw - ref.image_raw.numpy()).max() <= 1e-4
    excluded = excluded_nodes(onnx.load(str(path)), DEFAULT_EXCLUDE)
    for block in ("block0", "block1"):  # the SR's ToRGB convolutions are kept in float as before
        assert any(f"/superresolution/{block}/torgb/" in n for n in excluded), excluded


def test_a_few_training_steps_reduce_the_loss(fast, builtin_teacher):
    """The trainer's generator step (reconstruction loss, Adam; the sliced SR at the full learning rate) on one
    fixed batch of teacher renders: the loss falls within a few steps."""
    import copy

    from nerfgan.sampling import PoseDistribution
    from nerfgan.student.losses import reconstruction_loss
    from nerfgan.student.train import teacher_batch

    torch.manual_seed(0)
    batch = teacher_batch(builtin_teacher, 0, np.arange(1), PoseDistribution())
    g = copy.deepcopy(fast).train()
    opt = torch.optim.Adam(g.trainable_parameters(), lr=0.002, betas=(0.9, 0.99))
    losses = []
    for _ in range(8):
        out = g(batch["w"], batch["c"])
        loss, _ = reconstruction_loss(out.feature_image, batch["feature_image"], out.image, batch["image"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses
    assert any(not torch.equal(a, b) for a, b in zip(g.superresolution.parameters(), fast.superresolution.parameters()))
