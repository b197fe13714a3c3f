"""Tests for the ray sampler, tri-plane field and volume renderer (nerfgan.teacher.rays / renderer / triplane).

Two kinds of test:

* stage-by-stage parity with upstream's debug intermediates stored in the shared fixture
  (the fixture's ``dbg/*``: psi 0.7 = ws[0], view 0, batch 2, pixels ``dbg/pixel_index``).
  Each stage is fed upstream's own inputs, so an error is attributed to exactly one stage;
  one last test chains our stages end to end on the same pixels.
* tiny hand-made cases whose answer is known analytically (constant-density medium, an opaque
  slab, white background, depth clamp, inverse-CDF sampling, camera geometry).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nerfgan import camera
from nerfgan.teacher.config import RenderingConfig
from nerfgan.teacher.rays import generate_rays
from nerfgan.teacher.renderer import coarse_depths, importance_depths, ray_march, render_rays, sample_pdf
from nerfgan.teacher.triplane import PLANE_CHANNELS, sample_planes

NPZ = Path(__file__).parents[1] / "fixtures" / "eg3d_tiny_sr128.npz"


def max_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def ffhq_rendering(**overrides: object) -> RenderingConfig:
    """FFHQ rendering settings with overrides."""
    kw: dict[str, object] = dict(
        image_resolution=128, superresolution="2X", depth_resolution=48, depth_resolution_importance=48,
        ray_start=2.25, ray_end=3.3, box_warp=1.0, avg_camera_radius=2.7, avg_camera_pivot=(0.0, 0.0, 0.2),
    )
    kw.update(overrides)
    return RenderingConfig(**kw)  # type: ignore[arg-type]


# ==============================================================================================
# Stage-by-stage parity with upstream's debug arrays
# ==============================================================================================


@pytest.fixture(scope="module")
def dbg() -> dict[str, np.ndarray]:
    with np.load(NPZ) as z:
        out = {k[4:]: z[k] for k in z.files if k.startswith("dbg/")}
        meta = json.loads(str(z["meta_json"]))
    # The debug arrays are for psi[0] = 0.7, view 0, R = 64, S = N = 48 (meta_json 'arrays'.'dbg').
    assert meta["psi"][0] == pytest.approx(0.7) and meta["neural_rendering_resolution"] == 64
    assert out["depths_coarse"].shape[-1] == 48 and out["depths_fine"].shape[-1] == 48
    return out


@pytest.fixture(scope="module")
def planes5(reference, tiny_teacher) -> torch.Tensor:
    """Our tri-planes for upstream's psi-0.7 ws, as (B, 3, 32, 256, 256)."""
    ws = torch.from_numpy(reference.outputs["ws"][0])
    with torch.no_grad():
        planes = tiny_teacher.planes(ws)
    B = planes.shape[0]
    return planes.reshape(B, 3, PLANE_CHANNELS, 256, 256)


def upstream_rays(dbg: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's origins and directions of the selected pixels, shaped (B, K, 3)."""
    pix = dbg["pixel_index"]
    B, K = dbg["ray_origins"].shape[0], len(pix)
    origins = torch.from_numpy(dbg["ray_origins"])[:, None, :].expand(B, K, 3)
    dirs = torch.from_numpy(dbg["ray_dirs_all"][:, pix])
    return origins, dirs


def points_at(origins: torch.Tensor, dirs: torch.Tensor, depths: np.ndarray) -> torch.Tensor:
    """origins, dirs (B, K, 3), depths (B, K, S) -> points (B, K*S, 3), in float32 like upstream."""
    t = torch.from_numpy(depths)[..., None]
    B, K, S, _ = t.shape
    return (origins.unsqueeze(-2) + t * dirs.unsqueeze(-2)).reshape(B, K * S, 3)


def test_rays_match_upstream(reference, dbg):
    cam2world, intr = camera.unpack(reference.c[0])
    origins, dirs = generate_rays(torch.from_numpy(cam2world), torch.from_numpy(intr), 64)
    assert origins.shape == dirs.shape == (2, 64 * 64, 3)
    # Same float32 formula as upstream (FACTS 7); origins are copies of cam2world[:3, 3], and unit
    # directions may differ by a few ulp (6e-8 each) if the op order differs: 1e-6.
    assert max_err(origins, np.broadcast_to(dbg["ray_origins"][:, None], origins.shape)) <= 1e-6
    assert max_err(dirs, dbg["ray_dirs_all"]) <= 1e-6


def test_coarse_depths_match_upstream(reference, dbg):
    cfg = reference.config.rendering
    K = len(dbg["pixel_index"])
    depths = coarse_depths(2, K, cfg, stochastic=False, device=torch.device("cpu"))
    assert depths.shape == (2, K, cfg.depth_resolution, 1)
    # Both are torch.linspace(ray_start, ray_end, S) in float32; 1e-6 allows ~4 ulp at depth 3.
    assert max_err(depths[..., 0], dbg["depths_coarse"]) <= 1e-6


def test_plane_features_match_upstream(reference, dbg, planes5):
    origins, dirs = upstream_rays(dbg)
    pts = points_at(origins, dirs, dbg["depths_coarse"])
    with torch.no_grad():
        feats = sample_planes(planes5, pts, reference.config.rendering.box_warp)  # (B, 3, K*S, 32)
    B, K, P, S, C = dbg["coarse_plane_features"].shape
    got = feats.reshape(B, P, K, S, C).permute(0, 2, 1, 3, 4)
    # Our planes differ from upstream's by float noise (FACTS 12 suggests 1e-4 for planes); bilinear
    # sampling is a convex combination of 4 texels, so it cannot increase that error: 1e-4.
    assert max_err(got, dbg["coarse_plane_features"]) <= 1e-4


def test_decoder_matches_upstream(dbg, tiny_teacher):
    B, K, P, S, C = dbg["coarse_plane_features"].shape
    feats = torch.from_numpy(dbg["coarse_plane_features"]).permute(0, 2, 1, 3, 4).reshape(B, P, K * S, C)
    with torch.no_grad():
        rgb, sigma = tiny_teacher.decoder(feats)
    # Identical inputs and weights; only float32 summation order (dot products of 32 and 64 terms,
    # |sigma| <= 7.3) can differ: a few 1e-7 at most, checked at 1e-5.
    assert max_err(rgb.reshape(B, K, S, C), dbg["coarse_rgb"]) <= 1e-5
    assert max_err(sigma.reshape(B, K, S), dbg["coarse_sigma"]) <= 1e-5


def test_fine_samples_of_the_field_match_upstream(reference, dbg, planes5, tiny_teacher):
    """Plane sampling + decoder at upstream's importance depths (not stored per plane upstream)."""
    origins, dirs = upstream_rays(dbg)
    pts = points_at(origins, dirs, dbg["depths_fine"])
    with torch.no_grad():
        rgb, sigma = tiny_teacher.decoder(sample_planes(planes5, pts, reference.config.rendering.box_warp))
    B, K, N, C = dbg["fine_rgb"].shape
    # Plane float noise (<= 1e-4, see above) passed through the decoder, whose gain is O(1): 1e-4.
    assert max_err(rgb.reshape(B, K, N, C), dbg["fine_rgb"]) <= 1e-4
    assert max_err(sigma.reshape(B, K, N), dbg["fine_sigma"]) <= 1e-4


def test_coarse_weights_match_upstream(reference, dbg):
    colors = torch.from_numpy(dbg["coarse_rgb"])
    sigma = torch.from_numpy(dbg["coarse_sigma"])[..., None]
    depths = torch.from_numpy(dbg["depths_coarse"])[..., None]
    _, _, weights = ray_march(colors, sigma, depths, reference.config.rendering.white_back)
    assert weights.shape == (*dbg["weights_coarse"].shape, 1)
    # Same inputs; a weight is a float32 product of up to 47 factors (relative error <= 47 ulp
    # ~ 3e-6) and weights are <= 1, so 1e-5 covers any op-order difference.
    assert max_err(weights[..., 0], dbg["weights_coarse"]) <= 1e-5


def test_fine_depths_match_upstream(dbg):
    depths = torch.from_numpy(dbg["depths_coarse"])[..., None]
    weights = torch.from_numpy(dbg["weights_coarse"])[..., None]
    fine = importance_depths(depths, weights, dbg["depths_fine"].shape[-1], deterministic=True)
    # Deterministic inverse-CDF interpolation between midpoints (depth ~3, 1 ulp = 2.4e-7); the
    # CDF denominators are >= ~1e-3 because of the +0.01 floor, so rounding stays << 1e-5.
    assert max_err(fine[..., 0], dbg["depths_fine"]) <= 1e-5


def test_sorted_depths_match_upstream(dbg):
    merged = torch.cat([torch.from_numpy(dbg["depths_coarse"]), torch.from_numpy(dbg["depths_fine"])], dim=-1)
    got, _ = torch.sort(merged, dim=-1)
    # A permutation of upstream's own values: exact (1e-6 only to make the tolerance explicit).
    assert max_err(got, dbg["all_depths"]) <= 1e-6


def test_final_feature_and_depth_match_upstream(reference, dbg):
    depths = torch.cat([torch.from_numpy(dbg["depths_coarse"]), torch.from_numpy(dbg["depths_fine"])], -1)[..., None]
    colors = torch.cat([torch.from_numpy(dbg["coarse_rgb"]), torch.from_numpy(dbg["fine_rgb"])], -2)
    sigma = torch.cat([torch.from_numpy(dbg["coarse_sigma"]), torch.from_numpy(dbg["fine_sigma"])], -1)[..., None]
    depths, order = torch.sort(depths, dim=-2)
    colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
    sigma = torch.gather(sigma, -2, order)
    assert max_err(depths[..., 0], dbg["all_depths"]) <= 1e-6
    features, depth, _ = ray_march(colors, sigma, depths, reference.config.rendering.white_back)
    # Upstream's samples in, so only float32 op order differs: sums of 95 weighted terms <= 1 for the
    # features; depth = sum(w t) / sum(w) with sum(w) >= 0.26 here. Both well inside 1e-5.
    assert max_err(features, dbg["final_feature"]) <= 1e-5
    assert max_err(depth[..., 0], dbg["final_depth"]) <= 1e-5


def test_pipeline_on_selected_pixels_matches_upstream(reference, dbg, planes5, tiny_teacher):
    """Our own chain (rays -> coarse -> field -> march -> importance -> merge -> march) on the dbg pixels."""
    cfg = reference.config.rendering
    cam2world, intr = camera.unpack(reference.c[0])
    origins, dirs = generate_rays(torch.from_numpy(cam2world), torch.from_numpy(intr), 64)
    pix = torch.from_numpy(dbg["pixel_index"])

    def field(points: torch.Tensor, _dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tiny_teacher.decoder(sample_planes(planes5, points, cfg.box_warp))

    with torch.no_grad():
        features, depth, _ = render_rays(field, origins[:, pix], dirs[:, pix], cfg, mode="deterministic")
    # Plane float noise through the whole chain; FACTS 12 tolerances for feature_image / image_depth.
    assert max_err(features, dbg["final_feature"]) <= 1e-4
    assert max_err(depth[..., 0], dbg["final_depth"]) <= 1e-4


# ==============================================================================================
# Analytic cases: the ray marcher
# ==============================================================================================


def constant_medium(sigma: float, rays: int, S: int, dtype: torch.dtype, cfg: RenderingConfig):
    depths = torch.linspace(cfg.ray_start, cfg.ray_end, S, dtype=dtype).reshape(1, 1, S, 1).repeat(1, rays, 1, 1)
    colour = torch.linspace(0.1, 0.9, 4, dtype=dtype)
    colors = colour.expand(1, rays, S, 4).clone()
    densities = torch.full((1, rays, S, 1), sigma, dtype=dtype)
    return colors, densities, depths, colour


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-8), (torch.float32, 1e-5)])
@pytest.mark.parametrize("sigma", [-3.0, 0.0, 1.5, 4.0])
def test_constant_density_medium(sigma, dtype, tol):
    cfg = ffhq_rendering()
    S, L = 48, cfg.ray_end - cfg.ray_start
    colors, densities, depths, colour = constant_medium(sigma, 3, S, dtype, cfg)
    features, depth, weights = ray_march(colors, densities, depths, white_back=False)

    density = math.log1p(math.exp(sigma - 1))  # softplus(sigma - 1)
    delta = L / (S - 1)
    r = math.exp(-density * delta)  # per-interval transmittance
    T_end = math.exp(-density * L)
    # Tolerances: in float64 the only deviation is upstream's +1e-10 per factor, which changes the
    # weight sum by at most (S-1) * 1e-10 < 5e-9 (-> 1e-8). In float32, a product of 47 factors
    # carries <= 47 ulp relative error (~3e-6) (-> 1e-5).
    k = np.arange(S - 1)
    expected_w = (r**k) * (1 - r)  # alpha * transmittance in front
    assert max_err(weights[0, :, :, 0], np.broadcast_to(expected_w, (3, S - 1))) <= tol
    W = weights.sum(dim=2)[..., 0]
    assert max_err(W, np.full((1, 3), 1 - T_end)) <= tol
    # Transmittance left after each interval (1 - the weight accumulated so far) decays as
    # exp(-softplus(s-1) (t - ray_start)); after the last one it is exp(-softplus(s-1) L).
    transmittance = 1 - torch.cumsum(weights[0, :, :, 0], dim=1)
    expected_T = np.exp(-density * (depths[0, 0, 1:, 0].double().numpy() - cfg.ray_start))
    assert max_err(transmittance, np.broadcast_to(expected_T, (3, S - 1))) <= tol
    # Features: every sample has the same colour, so feature = 2 * colour * W - 1.
    assert max_err(features, (2 * colour * (1 - T_end) - 1).expand(1, 3, 4)) <= tol
    # Depth: expectation of the interval midpoints under geometric weights r^k (1 - r), k < n:
    # sum_k r^k k = r (1 - n r^(n-1) + (n-1) r^n) / (1 - r)^2.
    n = S - 1
    mean_k = (1 - r) * r * (1 - n * r ** (n - 1) + (n - 1) * r**n) / (1 - r) ** 2 / (1 - r**n)
    expected_depth = cfg.ray_start + delta * (mean_k + 0.5)
    # Depth ~3 in float32 (ulp 2.4e-7) as a ratio of two sums: 10 * tol is still << delta (0.022).
    assert max_err(depth[0, :, 0], np.full(3, expected_depth)) <= 10 * tol


def test_white_back_adds_missing_opacity_to_every_channel():
    cfg = ffhq_rendering()
    colors, densities, depths, colour = constant_medium(0.5, 2, 48, torch.float64, cfg)
    feat_black, depth_black, weights = ray_march(colors, densities, depths, white_back=False)
    feat_white, depth_white, _ = ray_march(colors, densities, depths, white_back=True)
    W = weights.sum(dim=2)  # (1, 2, 1)
    assert 0.2 < float(W.min()) < 0.8  # semi-transparent, so the background matters
    # (1 - W) is added BEFORE the 2x - 1 rescale, i.e. 2 (1 - W) after it, in all channels.
    assert max_err(feat_white, 2 * (colour * W + 1 - W) - 1) <= 1e-12
    assert max_err(feat_white - feat_black, (2 * (1 - W)).expand_as(feat_white)) <= 1e-12
    assert torch.equal(depth_white, depth_black)


def test_empty_ray_depth_is_clamped_to_the_global_max():
    """Depth = 0/0 for a ray with no density: NaN -> inf -> clamped to max over ALL rays and batches."""
    S = 8
    near = torch.linspace(1.0, 2.0, S, dtype=torch.float64).reshape(1, 1, S, 1)
    far = torch.linspace(3.0, 4.0, S, dtype=torch.float64).reshape(1, 1, S, 1)
    depths = torch.cat([torch.cat([near, near], 1), torch.cat([near, far], 1)], 0)  # (B=2, M=2, S, 1)
    densities = torch.full((2, 2, S, 1), 5.0, dtype=torch.float64)
    densities[0, 0] = -1e4  # softplus(-1e4 - 1) underflows to 0: W = 0 exactly
    colors = torch.full((2, 2, S, 3), 0.5, dtype=torch.float64)
    features, depth, weights = ray_march(colors, densities, depths, white_back=False)
    assert float(weights[0, 0].sum()) == 0.0
    # Ray (0, 0) only spans [1, 2], but its depth becomes the max of the whole tensor (ray (1, 1)).
    assert float(depth[0, 0, 0]) == 4.0
    assert torch.all(depth >= 1.0) and torch.all(depth <= 4.0)
    assert max_err(features[0, 0], np.full(3, -1.0)) == 0.0  # nothing accumulated: 2 * 0 - 1
    # Non-empty rays keep their weighted depth, inside their own range.
    assert 1.0 <= float(depth[0, 1, 0]) <= 2.0 and 3.0 <= float(depth[1, 1, 0]) <= 4.0


# ==============================================================================================
# Analytic cases: a whole render through a hand-made field
# ==============================================================================================

SLAB_Z, SLAB_THICKNESS = 2.7, 0.2
SLAB_COLOUR = torch.linspace(0.0, 1.0, 8)


def slab_rays() -> tuple[torch.Tensor, torch.Tensor]:
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.1, 0.05, 1.0], [-0.2, 0.1, 1.0], [0.3, -0.3, 1.0]])
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return torch.zeros(1, 4, 3), dirs[None]


def slab_field(colour_margin: float):
    """Opaque slab SLAB_Z <= z < SLAB_Z + thickness (world z); empty (softplus(-51) ~ 1e-22) elsewhere.

    The colour is SLAB_COLOUR from ``colour_margin`` in front of the slab onward, 0.05 in front of
    that and 0.95 behind the slab: only the slab's colour may reach the image.
    """

    def field(points: torch.Tensor, _dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = points[..., 2:3]
        inside = (z >= SLAB_Z) & (z < SLAB_Z + SLAB_THICKNESS)
        sigma = torch.where(inside, torch.tensor(1e4), torch.tensor(-50.0))
        colour = torch.where(z >= SLAB_Z - colour_margin, SLAB_COLOUR, torch.full((8,), 0.05))
        colour = torch.where(z >= SLAB_Z + SLAB_THICKNESS, torch.full((8,), 0.95), colour)
        return colour, sigma

    return field


@pytest.mark.parametrize("importance", [48, 0])
def test_opaque_slab_depth_and_colour(importance):
    cfg = ffhq_rendering(depth_resolution_importance=importance)
    spacing = (cfg.ray_end - cfg.ray_start) / (cfg.depth_resolution - 1)
    origins, dirs = slab_rays()
    # The front sample of the interval that crosses the surface is < one coarse spacing in front of it.
    features, depth, opacity = render_rays(slab_field(colour_margin=spacing), origins, dirs, cfg, "deterministic")
    expected_depth = SLAB_Z / dirs[..., 2]  # distance along the unit ray to the plane z = SLAB_Z
    # Opaque (optical depth 1e4 * 0.2), and nothing in front absorbs.
    assert max_err(opacity, torch.ones(1, 4, 1)) <= 1e-6
    # Features are the slab's colour after the 2x - 1 rescale (float32 sums of ~100 terms: 1e-5).
    assert max_err(features, (2 * SLAB_COLOUR - 1).expand(1, 4, 8)) <= 1e-5
    err = (depth[..., 0] - expected_depth).abs().max().item()
    if importance == 0:
        # All weight on the interval crossing the surface; its midpoint is within half a spacing.
        assert err <= spacing / 2
    else:
        # The smoothed pdf puts ~1.01/2.44 of the mass on the midpoint-bin holding the surface and
        # ~0.51/2.44 on the next one, i.e. >= 10 of the 48 fine samples per coarse spacing there:
        # the depth is resolved to about spacing / 10 (coarse sampling alone: spacing / 2).
        assert err <= spacing / 10


# ==============================================================================================
# Analytic cases: inverse-CDF (importance) sampling
# ==============================================================================================


def test_sample_pdf_uniform_weights_gives_even_spacing():
    K, n = 6, 11
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]])  # (R, K+1) edges
    weights = torch.ones(2, K)
    out = sample_pdf(bins, weights, n, deterministic=True)
    expected = bins[:, :1] + torch.linspace(0, 1, n) * (bins[:, -1:] - bins[:, :1])
    assert max_err(out, expected) <= 1e-6  # values <= 6 in float32 (ulp 4.8e-7)


def test_importance_depths_uniform_weights_skip_the_last_midpoint():
    """Upstream's off-by-one (FACTS 8 step 6): evenly spaced over midpoints m_0 .. m_{S-3}; m_{S-2} unused."""
    cfg = ffhq_rendering()
    S, N = cfg.depth_resolution, cfg.depth_resolution_importance
    depths = coarse_depths(1, 2, cfg, stochastic=False, device=torch.device("cpu"))
    weights = torch.full((1, 2, S - 1, 1), 0.3)
    fine = importance_depths(depths, weights, N, deterministic=True)[0, :, :, 0]
    t = torch.linspace(cfg.ray_start, cfg.ray_end, S, dtype=torch.float64)
    mids = (t[:-1] + t[1:]) / 2
    expected = mids[0] + torch.linspace(0, 1, N, dtype=torch.float64) * (mids[S - 3] - mids[0])
    assert max_err(fine, expected.expand(2, N)) <= 2e-6  # depth ~3 in float32: a few ulp
    assert float(fine.max()) < float(mids[S - 2]) - 0.5 * (float(mids[S - 2] - mids[S - 3]))


def test_sample_pdf_concentrates_on_a_single_bin():
    K, n, hot = 8, 20, 5
    bins = torch.arange(K + 1, dtype=torch.float32)[None]
    weights = torch.zeros(1, K)
    weights[0, hot] = 1.0
    out = sample_pdf(bins, weights, n, deterministic=True)[0]
    # Every cold bin holds ~1e-5 of the mass, so all u strictly inside (0, 1) map into the hot bin.
    assert torch.all(out[1:-1] >= hot) and torch.all(out[1:-1] <= hot + 1)
    # And they are evenly spread across it (u maps linearly inside one bin).
    assert max_err(torch.diff(out[1:-1]), torch.full((n - 3,), 1 / (n - 1))) <= 1e-3


def test_stochastic_coarse_depths_jitter_inside_their_interval():
    cfg = ffhq_rendering()
    delta = (cfg.ray_end - cfg.ray_start) / (cfg.depth_resolution - 1)
    cpu = torch.device("cpu")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = coarse_depths(2, 50, cfg, stochastic=True, device=cpu)
        b = coarse_depths(2, 50, cfg, stochastic=True, device=cpu)
    assert not torch.equal(a, b)
    base = torch.linspace(cfg.ray_start, cfg.ray_end, cfg.depth_resolution).reshape(1, 1, -1, 1)
    assert torch.all(a >= base) and torch.all(a <= base + delta + 1e-6)
    assert float(a.min()) >= cfg.ray_start and float(a.max()) <= cfg.ray_end + delta + 1e-6
    d1 = coarse_depths(2, 50, cfg, stochastic=False, device=cpu)
    d2 = coarse_depths(2, 50, cfg, stochastic=False, device=cpu)
    assert torch.equal(d1, d2) and torch.equal(d1, base.expand_as(d1))


def test_stochastic_sample_pdf_differs_and_stays_in_range():
    bins = torch.linspace(2.0, 3.0, 9).expand(4, 9).contiguous()
    weights = torch.rand(4, 8, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = sample_pdf(bins, weights, 16, deterministic=False)
        b = sample_pdf(bins, weights, 16, deterministic=False)
    assert not torch.equal(a, b)
    assert torch.all(a >= 2.0) and torch.all(a <= 3.0)
    assert torch.equal(sample_pdf(bins, weights, 16, True), sample_pdf(bins, weights, 16, True))


def test_render_modes_stochastic_jitters_deterministic_repeats():
    cfg = ffhq_rendering(depth_resolution=16, depth_resolution_importance=16)
    delta = (cfg.ray_end - cfg.ray_start) / (cfg.depth_resolution - 1)
    origins, dirs = slab_rays()
    seen: list[torch.Tensor] = []

    def recording_field(points: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(points.norm(dim=-1))  # origin 0, unit dirs: |p| is the sample depth
        return slab_field(0.0)(points, d)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        s1 = render_rays(recording_field, origins, dirs, cfg, "stochastic")
        s2 = render_rays(recording_field, origins, dirs, cfg, "stochastic")
    assert len(seen) == 4  # coarse + fine pass per render
    assert not torch.equal(s1[1], s2[1]) and not torch.equal(seen[0], seen[2])
    for t in seen:
        assert float(t.min()) >= cfg.ray_start - 1e-6 and float(t.max()) <= cfg.ray_end + delta + 1e-5
    d1 = render_rays(slab_field(0.0), origins, dirs, cfg, "deterministic")
    d2 = render_rays(slab_field(0.0), origins, dirs, cfg, "deterministic")
    for x, y in zip(d1, d2):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="render mode"):
        render_rays(slab_field(0.0), origins, dirs, cfg, "random")


# ==============================================================================================
# Analytic cases: ray generation
# ==============================================================================================


def rays_for(c: np.ndarray, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    cam2world, intr = camera.unpack(np.asarray(c).reshape(-1, 25))
    return generate_rays(torch.from_numpy(cam2world), torch.from_numpy(intr), R)


def test_ray_directions_are_unit_and_origins_are_the_camera_centre():
    c = camera.pose(np.array([0.0, 25.0, -40.0]), np.array([0.0, -10.0, 20.0]), radius=np.array([2.7, 1.7, 3.0]))
    origins, dirs = rays_for(c, 8)
    assert max_err(dirs.norm(dim=-1), torch.ones(3, 64)) <= 1e-6
    centres = torch.from_numpy(c[:, [3, 7, 11]])
    assert torch.equal(origins, centres[:, None, :].expand(3, 64, 3))


@pytest.mark.parametrize("yaw, pitch, lookat", [(0.0, 0.0, (0.0, 0.0, 0.2)), (30.0, -15.0, (0.1, -0.05, 0.3))])
def test_centre_ray_points_at_the_pivot(yaw, pitch, lookat):
    c = camera.pose(yaw, pitch, radius=2.7, pivot=lookat)
    target = np.asarray(lookat, np.float64) - c[[3, 7, 11]].astype(np.float64)
    target /= np.linalg.norm(target)
    # Odd R: pixel (2, 2) of 5 is sampled at u = v = 0.5 exactly, the principal point.
    _, dirs = rays_for(c, 5)
    assert max_err(dirs[0, 2 * 5 + 2], target) <= 1e-6
    # Even R: the four central rays are symmetric about the principal ray.
    R = 64
    _, dirs = rays_for(c, R)
    central = [i * R + j for i in (R // 2 - 1, R // 2) for j in (R // 2 - 1, R // 2)]
    mean = dirs[0, central].double().mean(0)
    assert max_err(mean / mean.norm(), target) <= 1e-6


def test_pixel_grid_orientation_and_exact_directions():
    """Canonical frontal camera (FACTS 2): right = +x, down = -y (world), forward = -z."""
    f, R = 4.2647, 4
    cam2world = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], np.float32)
    c = camera.pack(cam2world, camera.intrinsics(f))
    origins, dirs = rays_for(c, R)
    d = dirs[0].reshape(R, R, 3)  # [row i, column j]
    # Pixel (0, 0) is top-left: left = world -x, top = world +y (camera +y is down).
    assert d[0, 0, 0] < 0 and d[0, 0, 1] > 0
    assert d[0, R - 1, 0] > 0 and d[0, R - 1, 1] > 0  # top-right
    assert d[R - 1, 0, 0] < 0 and d[R - 1, 0, 1] < 0  # bottom-left
    assert torch.all(d[..., 2] < 0)  # all rays look toward -z
    # Exact: camera-space (x, y, 1) with x = (u - 0.5)/f, y = (v - 0.5)/f, u = (j + 0.5)/R, v = (i + 0.5)/R.
    u = (np.arange(R) + 0.5) / R
    x = np.broadcast_to((u[None, :] - 0.5) / f, (R, R))
    y = np.broadcast_to((u[:, None] - 0.5) / f, (R, R))
    expected = np.stack([x, -y, -np.ones((R, R))], -1)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    assert max_err(d, expected) <= 1e-6


def test_skew_and_principal_point_follow_the_pinhole_formula():
    """FACTS 7 with sk != 0 and (cx, cy) != (0.5, 0.5), against float64 numpy."""
    R = 6
    cam2world = camera.look_at(math.pi / 2 + 0.3, math.pi / 2 - 0.2, 2.7, (0.0, 0.0, 0.2))
    K = np.array([[3.0, 0.2, 0.45], [0.0, 3.5, 0.6], [0.0, 0.0, 1.0]], np.float32)
    origins, dirs = generate_rays(torch.from_numpy(cam2world)[None], torch.from_numpy(K)[None], R)
    fx, sk, cx, fy, cy = (float(v) for v in (K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]))
    i, j = np.meshgrid(np.arange(R), np.arange(R), indexing="ij")
    u, v = (j.ravel() + 0.5) / R, (i.ravel() + 0.5) / R
    x = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y = (v - cy) / fy
    m = cam2world.astype(np.float64)
    world = np.stack([x, y, np.ones_like(x), np.ones_like(x)], -1) @ m.T
    expected = world[:, :3] - m[:3, 3]
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    assert max_err(dirs[0], expected) <= 1e-6
