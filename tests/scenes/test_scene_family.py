"""The analytic scene family: determinism from z, truncation, and an exact sphere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfgan import camera
from nerfgan.sampling import z_from_seed
from nerfgan.scenes.family import ObjectParams, SceneConfig, SceneFamily, latent
from nerfgan.scenes.render import render


def _z(*seeds: int) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([z_from_seed(s) for s in seeds]))


def test_params_are_a_deterministic_smooth_function_of_z():
    fam = SceneFamily()
    a, b = fam.params(_z(1, 2)), SceneFamily().params(_z(1, 2))
    for name in ("origin", "rotation", "centres", "radii", "colours", "stripe_freq"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.allclose(a.radii[0], a.radii[1])  # two seeds, two objects
    # smooth: a small step in z moves the parts a little
    z = _z(3)
    near = fam.params(z + 1e-3 * torch.from_numpy(z_from_seed(4)))
    assert (near.centres - fam.params(z).centres).abs().max() < 1e-3


def test_latent_is_standard_normal_and_truncation_shrinks_it_to_the_mean_object():
    cfg = SceneConfig()
    u = latent(torch.from_numpy(np.random.default_rng(0).standard_normal((4000, 512)).astype(np.float32)), cfg)
    assert u.shape == (4000, cfg.latent_dim)
    assert abs(float(u.mean())) < 0.05 and abs(float(u.std()) - 1) < 0.05
    fam = SceneFamily(cfg)
    zero = fam.params(_z(5, 6), psi=0.0)
    assert torch.equal(zero.centres[0], zero.centres[1]) and torch.equal(zero.colours[0], zero.colours[1])
    half = latent(_z(5), cfg, 0.5)
    assert torch.allclose(half, 0.5 * latent(_z(5), cfg))


def test_left_and_right_differ():
    """The left ear (world +x) wears the pattern colour: a mirrored view is not the same picture."""
    fam = SceneFamily()
    p = fam.params(_z(7), psi=0.0)
    c = torch.from_numpy(camera.pose(0.0, 0.0, radius=2.7, pivot=(0, 0, 0.2)).reshape(1, 25).astype(np.float32))
    img = render(fam, p, c, 64).image[0]
    assert (img - img.flip(-1)).abs().mean() > 0.02


def _sphere(radius: float) -> ObjectParams:
    one = lambda *v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
    return ObjectParams(origin=one(0.0, 0.0, 0.0), rotation=torch.eye(3)[None], centres=one(0.0, 0.0, 0.0)[:, None],
                        radii=one(radius, radius, radius)[:, None], colours=one(0.2, 0.6, 0.9)[:, None],
                        stripe_colour=one(0.2, 0.6, 0.9), stripe_freq=torch.tensor([10.0]),
                        stripe_angle=torch.tensor([0.0]), stripe_phase=torch.tensor([0.0]), spots=torch.tensor([0.0]))


def test_a_sphere_renders_its_closed_form_depth_and_mask():
    r, R, dist = 0.2, 48, 2.7
    fam = SceneFamily()
    c = camera.pose(20.0, -10.0, radius=dist, pivot=(0.0, 0.0, 0.0)).reshape(1, 25).astype(np.float32)
    out = render(fam, _sphere(r), torch.from_numpy(c), R)
    # closed form: each pixel's ray against the sphere |x| = r
    from nerfgan.teacher.rays import generate_rays

    ct = torch.from_numpy(c)
    o, d = generate_rays(ct[:, :16].reshape(1, 4, 4), ct[:, 16:].reshape(1, 3, 3), R)
    b = (o * d).sum(-1)[0]
    miss = (o * o).sum(-1)[0] - b * b  # squared distance of the ray from the centre
    t_hit = -b - torch.sqrt((r * r - miss).clamp_min(0))
    inside, outside = miss < (r - 0.012) ** 2, miss > (r + 0.011) ** 2
    mask, depth = out.mask.reshape(-1), out.depth.reshape(-1)
    assert inside.sum() > 100 and outside.sum() > 100
    assert mask[inside].min() > 0.999 and mask[outside].max() == 0.0
    # the density shell is +-falloff around the surface: the expected depth lies within it
    err = (depth[inside] - t_hit[inside]).abs()
    assert err.max() < fam.config.falloff, float(err.max())
    assert float(depth[outside].min()) == pytest.approx(3.3)
    # colour: the sphere's own, on black
    img = (out.image.reshape(3, -1) + 1) / 2
    assert torch.allclose(img[:, inside].mean(1), torch.tensor([0.2, 0.6, 0.9]), atol=2e-3)
    assert img[:, outside].abs().max() == 0
    # the covered area lies between the discs of the shell's inner and outer radius
    w = fam.config.falloff
    assert float((miss < (r - w) ** 2).sum()) < float(mask.sum()) < float((miss < (r + w) ** 2).sum())


def test_rendering_is_resolution_independent():
    """Exact at any resolution: a 2x render box-downsampled agrees with the 1x render."""
    fam = SceneFamily()
    p = fam.params(_z(11))
    c = torch.from_numpy(camera.pose(15.0, 5.0, radius=2.7, pivot=(0, 0, 0.2)).reshape(1, 25).astype(np.float32))
    lo, hi = render(fam, p, c, 32), render(fam, p, c, 64)
    down = torch.nn.functional.avg_pool2d(hi.mask, 2)
    assert (down - lo.mask).abs().mean() < 0.03
