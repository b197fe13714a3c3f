"""Configs other than the shared fixture's: every super-resolution variant, resize rules, white
background, zeroed conditioning, box sizes, ray ranges, sample counts and channel widths.

Upstream renders exist only for the shared fixture, so these tests pin upstream's documented
behaviour for each option, and check that ``nerfgan teacher verify`` reads and checks
reference files of these configs (a recorded render passes, a perturbed one fails).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nerfgan import camera
from nerfgan.cli import main
from nerfgan.teacher.checkpoint import build_teacher
from nerfgan.teacher.config import TeacherConfig, preset
from nerfgan.teacher.reference import verify_reference, write_reference


def small_config(sr: str, nrr: int, **rendering) -> TeacherConfig:
    kw = preset("tiny").to_upstream()
    res = {"2X": 128, "4X": 256, "8X": 512, "8XDC": 512}[sr]
    kw.update(channel_base=256, channel_max=16, img_resolution=res)
    kw["rendering_kwargs"].update(image_resolution=res, superresolution_module=f"training.superresolution.SuperresolutionHybrid{sr}",
                                  depth_resolution=8, depth_resolution_importance=8)
    kw["rendering_kwargs"].update(rendering)
    return TeacherConfig.from_upstream(kw, nrr)


def seeded(config: TeacherConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = build_teacher(config)
    with torch.no_grad():  # non-trivial noise and a semi-transparent scene, as in the fixture
        for name, p in model.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return model


def inputs(model, B=1, V=2, seed=0):
    rng = np.random.RandomState(seed)
    r = model.config.rendering
    z = rng.randn(B, model.config.z_dim).astype(np.float32)
    yaws = rng.uniform(-30, 30, size=(V, B))
    c = np.stack([[camera.pose(y, 5.0, radius=r.avg_camera_radius, pivot=r.avg_camera_pivot) for y in row] for row in yaws])
    c_cond = np.stack([camera.frontal(r.avg_camera_radius, r.avg_camera_pivot)] * B)
    return z, c.astype(np.float32), c_cond


VARIANTS = {
    # name: (SR, R, rendering overrides); 512px variants render one psi and one view to stay fast
    "2X-resized": ("2X", 32, {}),
    "4X-resized-white-shapenet-box": ("4X", 32, {"white_back": True, "box_warp": 1.6, "ray_start": 0.1, "ray_end": 2.6,
                                                 "c_gen_conditioning_zero": True, "avg_camera_radius": 1.7,
                                                 "avg_camera_pivot": [0, 0, 0]}),
    "8X-coarse-only": ("8X", 32, {"depth_resolution": 6, "depth_resolution_importance": 0}),
    "8XDC-disparity": ("8XDC", 16, {"disparity_space_sampling": True, "depth_resolution": 12}),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_verify_reads_and_checks_other_configs(tmp_path, name, capsys):
    sr, nrr, overrides = VARIANTS[name]
    model = seeded(small_config(sr, nrr, **overrides))
    big = model.config.img_resolution == 512
    P, V = (1, 1) if big else (2, 2)
    z, c, c_cond = inputs(model, V=V)
    ref = write_reference(model, tmp_path / "ref.npz", z, c, c_cond, psi=(0.7, 1.0)[:P], cutoff=None)
    checks = verify_reference(ref)
    assert len(checks) == 9 and all(ch.ok for ch in checks), checks
    with np.load(ref) as d:
        assert d["image"].shape == (P, V, 1, 3, model.config.img_resolution, model.config.img_resolution)
        assert d["image_raw"].shape == (P, V, 1, 3, nrr, nrr)
        arrays = dict(d)
    arrays["image"] = arrays["image"] + np.float32(1e-3) * (np.arange(arrays["image"].size) % 3 == 0).reshape(arrays["image"].shape)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(SystemExit) as e:
        main(["teacher", "verify", str(bad), "--device", "cpu"])
    assert e.value.code == 1
    out = capsys.readouterr()
    assert "image" in out.err and "FAIL" in out.out


def test_resize_rules_and_raw_quirk():
    cases = {("2X", 64): (False, True), ("2X", 128): (True, False), ("2X", 32): (True, False),
             ("4X", 64): (True, False), ("4X", 128): (False, True), ("4X", 256): (False, True),
             ("8X", 128): (False, False), ("8X", 64): (True, False), ("8XDC", 256): (True, False)}
    for (sr, nrr), (resize, quirk) in cases.items():
        with torch.device("meta"):
            from nerfgan.teacher.generator import EG3D

            model = EG3D(small_config(sr, nrr))
        assert model.superresolution.needs_resize(nrr) == resize, (sr, nrr)
        assert model.raw_quirk(nrr) == quirk, (sr, nrr)


def test_quirk_off_returns_the_clean_rendered_rgb():
    model = seeded(small_config("2X", 32))
    z, c, c_cond = inputs(model, B=1, V=1)
    with torch.no_grad():
        ws = model.mapping(torch.from_numpy(z), torch.from_numpy(c_cond), 0.7)
        out = model.synthesis(ws, torch.from_numpy(c[0]))
    assert torch.equal(out.image_raw, out.feature_image[:, :3])


def test_zeroed_conditioning_ignores_the_camera():
    model = seeded(small_config("2X", 16, c_gen_conditioning_zero=True))
    z = torch.randn(2, 512)
    c1 = torch.from_numpy(np.stack([camera.pose(20, 10), camera.pose(-20, 0)]))
    c2 = torch.from_numpy(np.stack([camera.frontal()] * 2))
    assert torch.equal(model.mapping(z, c1), model.mapping(z, c2))
    normal = seeded(small_config("2X", 16))
    assert not torch.allclose(normal.mapping(z, c1), normal.mapping(z, c2))


def test_missing_c_scale_zeroes_conditioning():
    kw = small_config("2X", 16).to_upstream()
    del kw["rendering_kwargs"]["c_scale"]
    cfg = TeacherConfig.from_upstream(kw, 16)
    assert cfg.rendering.c_scale == 0
    model = seeded(cfg)
    z = torch.randn(1, 512)
    a = model.mapping(z, torch.from_numpy(camera.pose(30, 0))[None])
    b = model.mapping(z, torch.zeros(1, 25))
    assert torch.equal(a, b)


def test_white_background_on_empty_scene():
    model = seeded(small_config("2X", 16, white_back=True))
    with torch.no_grad():
        model.decoder.net[2].bias[0] = -1e4  # density row: nothing is there
    z, c, c_cond = inputs(model, V=1)
    with torch.no_grad():
        out = model(torch.from_numpy(z), torch.from_numpy(c[0]), c_cond=torch.from_numpy(c_cond))
    assert torch.allclose(out.feature_image, torch.ones_like(out.feature_image), atol=1e-5)
    black = seeded(small_config("2X", 16))
    with torch.no_grad():
        black.decoder.net[2].bias[0] = -1e4
        out = black(torch.from_numpy(z), torch.from_numpy(c[0]), c_cond=torch.from_numpy(c_cond))
    assert torch.allclose(out.feature_image, -torch.ones_like(out.feature_image), atol=1e-5)


def test_box_warp_scales_the_sampled_region():
    from nerfgan.teacher.triplane import sample_planes

    planes = torch.ones(1, 3, 32, 8, 8)
    pts = torch.tensor([[[0.7, 0.0, 0.0], [0.3, 0.2, -0.1]]])
    inside_big = sample_planes(planes, pts, box_warp=1.6)  # |x| <= 0.8: inside
    outside_small = sample_planes(planes, pts, box_warp=1.0)  # x = 0.7 > 0.5: beyond the planes
    assert torch.allclose(inside_big[:, :, 0], torch.ones(1, 3, 32))
    assert outside_small[:, :, 0].abs().max() == 0
    assert torch.allclose(outside_small[:, :, 1], torch.ones(1, 3, 32))


def test_channel_widths_follow_channel_base(tmp_path):
    cfg = small_config("2X", 16)
    with torch.device("meta"):
        from nerfgan.teacher.generator import EG3D

        m = EG3D(cfg)
    sd = m.state_dict()
    assert sd["backbone.synthesis.b4.const"].shape == (16, 4, 4)  # min(256 // 4, 16)
    assert sd["backbone.synthesis.b64.conv1.weight"].shape == (4, 4, 3, 3)  # 256 // 64
    assert sd["backbone.synthesis.b256.torgb.weight"].shape == (96, 1, 1, 1)
    assert json.loads(cfg.to_json())["upstream_init_kwargs"]["channel_base"] == 256
