"""Volume rendering of the tri-plane field: depth sampling, the ray marcher, importance sampling.

Axis letters: B batch, M rays per image, S samples per ray, C features (32).
Two modes: ``stochastic`` (upstream's training/inference default: jittered coarse depths and
random importance samples) and ``deterministic`` (no jitter, evenly spaced importance samples,
as upstream's deterministic option), which gives the same image for the same inputs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from nerfgan.teacher.config import RenderingConfig

RENDER_MODES = ("deterministic", "stochastic")

# field(points (B, N, 3), directions (B, N, 3)) -> rgb (B, N, C), sigma (B, N, 1)
Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def coarse_depths(B: int, M: int, cfg: RenderingConfig, stochastic: bool, device: torch.device) -> torch.Tensor:
    """Depths along each ray (B, M, S, 1), linear in depth (or in disparity) between ray_start and ray_end."""
    S = cfg.depth_resolution
    if cfg.disparity_space_sampling:
        s = torch.linspace(0, 1, S, device=device).reshape(1, 1, S, 1).repeat(B, M, 1, 1)
        if stochastic:
            s = s + torch.rand_like(s) * (1 / (S - 1))
        return 1.0 / (1.0 / cfg.ray_start * (1.0 - s) + 1.0 / cfg.ray_end * s)
    t = torch.linspace(cfg.ray_start, cfg.ray_end, S, device=device).reshape(1, 1, S, 1).repeat(B, M, 1, 1)
    if stochastic:
        t = t + torch.rand_like(t) * ((cfg.ray_end - cfg.ray_start) / (S - 1))
    return t


def ray_march(
    colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite samples along each ray (midpoint rule, softplus(sigma - 1) density).

    colors (B, M, S, C), densities (B, M, S, 1), depths (B, M, S, 1) sorted ascending ->
    features (B, M, C) rescaled to 2*f - 1, depth (B, M, 1), weights (B, M, S-1, 1).
    Depth is clamped to the min/max of ALL depths in the batch (upstream behaviour).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-F.softplus(densities_mid - 1) * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    weights = alpha * torch.cumprod(alpha_shifted, dim=-2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, dim=-2)
    total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, dim=-2) / total
    depth = torch.nan_to_num(depth, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling: bins (R, K+1) edges, weights (R, K) -> (R, n) depths.

    As upstream, the CDF is built over len(weights) bins but indexes ``bins`` directly, so the
    last bin edge is never reached.
    """
    Rn, K = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, K+1)
    if deterministic:
        u = torch.linspace(0, 1, n, device=bins.device).expand(Rn, n).contiguous()
    else:
        u = torch.rand(Rn, n, device=bins.device)
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, K)
    idx = torch.stack([below, above], -1).view(Rn, 2 * n)
    cdf_g = torch.gather(cdf, 1, idx).view(Rn, n, 2)
    bins_g = torch.gather(bins, 1, idx).view(Rn, n, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


@torch.no_grad()
def importance_depths(depths: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool) -> torch.Tensor:
    """depths (B, M, S, 1), coarse weights (B, M, S-1, 1) -> n new depths per ray (B, M, n, 1)."""
    B, M, S, _ = depths.shape
    z = depths.reshape(B * M, S)
    w = weights.reshape(B * M, 1, S - 1).float()
    w = F.max_pool1d(w, 2, 1, padding=1)  # (BM, 1, S)
    w = F.avg_pool1d(w, 2, 1)[:, 0] + 0.01  # (BM, S-1)
    mids = 0.5 * (z[:, :-1] + z[:, 1:])  # (BM, S-1)
    return sample_pdf(mids, w[:, 1:-1], n, deterministic).reshape(B, M, n, 1)


def _gather_samples(field: Field, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, S, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(B, M * S, 3)
    sample_dirs = dirs.unsqueeze(-2).expand(-1, -1, S, -1).reshape(B, M * S, 3)
    rgb, sigma = field(points, sample_dirs)
    return rgb.reshape(B, M, S, rgb.shape[-1]), sigma.reshape(B, M, S, 1)


def render_rays(
    field: Field, origins: torch.Tensor, dirs: torch.Tensor, cfg: RenderingConfig, mode: str = "deterministic"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render rays through ``field``: origins, dirs (B, M, 3) -> features (B, M, C), depth (B, M, 1), opacity (B, M, 1)."""
    if mode not in RENDER_MODES:
        raise ValueError(f"render mode must be one of {RENDER_MODES}, got {mode!r}")
    stochastic = mode == "stochastic"
    B, M, _ = origins.shape

    def run(depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, sigma = _gather_samples(field, origins, dirs, depths)
        if stochastic and cfg.density_noise > 0:
            sigma = sigma + torch.randn_like(sigma) * cfg.density_noise
        return rgb, sigma

    depths = coarse_depths(B, M, cfg, stochastic, origins.device)
    colors, densities = run(depths)
    N = cfg.depth_resolution_importance
    if N > 0:
        _, _, weights = ray_march(colors, densities, depths, cfg.white_back)
        fine = importance_depths(depths, weights, N, deterministic=not stochastic)
        colors_f, densities_f = run(fine)
        depths = torch.cat([depths, fine], dim=-2)
        colors = torch.cat([colors, colors_f], dim=-2)
        densities = torch.cat([densities, densities_f], dim=-2)
        _, order = torch.sort(depths, dim=-2)
        depths = torch.gather(depths, -2, order)
        colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.gather(densities, -2, order)
    features, depth, weights = ray_march(colors, densities, depths, cfg.white_back)
    return features, depth, weights.sum(2)
