"""Exact rendering of the scene family: RGB, depth and mask from any camera at any resolution.

Axis letters: B batch, M rays, S samples per ray, H W image.

A ray is sphere-traced to the density shell of the nearest part (the distance is a bound, so it
never steps through a part), then integrated densely across a window behind that point: 160
samples over 6 cm, i.e. 32 samples across the 2 cm shell (only rays that reached a shell). A ray that comes out of the window
still transparent (it grazed an ear, say) is traced on to the next part, up to three times. The
result is the volume integral of the analytic density to well below a grey level.

Rays are the teacher's (:func:`nerfgan.teacher.rays.generate_rays`): one per pixel centre of
the 25-value camera ``c`` (``nerfgan.camera``). The image is black where nothing is hit, as an
EG3D field without ``white_back``; images are in [-1, 1] like the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nerfgan.scenes.family import ObjectParams, SceneFamily
from nerfgan.teacher.rays import generate_rays

RAY_START = 2.25
"""Near bound (world units from the camera), EG3D FFHQ's; the whole family lies inside."""
RAY_END = 3.3
"""Far bound; the depth of a ray that hits nothing."""

_WINDOW = 0.06  # integration window behind the shell entry (world units)
_WINDOW_SAMPLES = 120
_TRACE_STEPS = 48
_SEGMENTS = 3


@dataclass
class SceneRender:
    """Ground truth for B views. Images are float32 in [-1, 1]."""

    image: torch.Tensor  # (B, 3, H, W)
    depth: torch.Tensor  # (B, 1, H, W) expected depth along the ray (world units); RAY_END where mask == 0
    mask: torch.Tensor  # (B, 1, H, W) accumulated opacity in [0, 1]


def _trace(family: SceneFamily, params: ObjectParams, origins: torch.Tensor, dirs: torch.Tensor,
           t: torch.Tensor, far: float) -> torch.Tensor:
    """Advance t (B, M) along each ray until it reaches some part's density shell (or passes ``far``)."""
    shell = family.config.falloff
    for _ in range(_TRACE_STEPS):
        d = family.field_sdf(params, origins + t[..., None] * dirs)
        step = (d - shell).clamp_min(0) * 0.8
        t = torch.where(t < far, t + step, t)
        if float(step.max()) < 1e-5:
            break
    return t


def render_rays(family: SceneFamily, params: ObjectParams, origins: torch.Tensor, dirs: torch.Tensor,
                near: float = RAY_START, far: float = RAY_END) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """origins, unit dirs (B, M, 3) -> colour (B, M, 3) in [0, 1] on black, depth (B, M), opacity (B, M)."""
    B, M, _ = origins.shape
    dev = origins.device
    rgb = torch.zeros(B, M, 3, device=dev)
    depth_sum = torch.zeros(B, M, device=dev)
    trans = torch.ones(B, M, device=dev)  # transmittance so far
    t = torch.full((B, M), near, device=dev)
    delta = _WINDOW / _WINDOW_SAMPLES
    offsets = (torch.arange(_WINDOW_SAMPLES, device=dev, dtype=torch.float32) + 0.5) * delta  # (S,)
    for _ in range(_SEGMENTS):
        t = _trace(family, params, origins, dirs, t, far)
        live = (t < far) & (trans > 1e-5)
        if not bool(live.any()):
            break
        # Integrate only the live rays: pad each object's live rays to the batch's largest count.
        counts = live.sum(1)
        L = int(counts.max())
        order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)[:, :L]  # live rays first
        valid = torch.arange(L, device=dev)[None] < counts[:, None]  # (B, L)
        o_l = torch.gather(origins, 1, order[..., None].expand(-1, -1, 3))
        d_l = torch.gather(dirs, 1, order[..., None].expand(-1, -1, 3))
        t_l = torch.gather(t, 1, order)
        ts = t_l[..., None] + offsets  # (B, L, S)
        pts = o_l[:, :, None] + ts[..., None] * d_l[:, :, None]  # (B, L, S, 3)
        _, sigma, col = family.field(params, pts.reshape(B, L * _WINDOW_SAMPLES, 3))
        sigma = sigma.reshape(B, L, _WINDOW_SAMPLES) * (ts < far) * valid[..., None]
        col = col.reshape(B, L, _WINDOW_SAMPLES, 3)
        alpha = 1 - torch.exp(-sigma * delta)
        cum = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
        tr_l = torch.gather(trans, 1, order)
        w = tr_l[..., None] * alpha * cum  # (B, L, S)
        rgb = rgb.scatter_add(1, order[..., None].expand(-1, -1, 3), (w[..., None] * col).sum(2))
        depth_sum = depth_sum.scatter_add(1, order, (w * ts).sum(2))
        trans = trans.scatter(1, order, torch.where(valid, tr_l * cum[..., -1] * (1 - alpha[..., -1]), tr_l))
        t = torch.where(live, t + _WINDOW, t)
    opacity = 1 - trans
    depth = torch.where(opacity > 1e-6, depth_sum / opacity.clamp_min(1e-6), torch.full_like(depth_sum, far))
    return rgb, depth, opacity


@torch.no_grad()
def render(family: SceneFamily, params: ObjectParams, c: torch.Tensor, resolution: int,
           near: float = RAY_START, far: float = RAY_END, chunk: int = 4096) -> SceneRender:
    """Render B objects from cameras c (B, 25) at resolution x resolution pixels."""
    B = params.batch
    if c.shape != (B, 25):
        raise ValueError(f"c must be ({B}, 25), got {tuple(c.shape)}")
    c = c.to(torch.float32)
    origins, dirs = generate_rays(c[:, :16].reshape(B, 4, 4), c[:, 16:].reshape(B, 3, 3), resolution)
    parts = []
    for i in range(0, origins.shape[1], chunk):
        parts.append(render_rays(family, params, origins[:, i:i + chunk], dirs[:, i:i + chunk], near, far))
    rgb = torch.cat([p[0] for p in parts], 1)
    depth = torch.cat([p[1] for p in parts], 1)
    mask = torch.cat([p[2] for p in parts], 1)
    R = resolution
    return SceneRender(
        image=(rgb * 2 - 1).permute(0, 2, 1).reshape(B, 3, R, R).contiguous(),
        depth=depth.reshape(B, 1, R, R),
        mask=mask.reshape(B, 1, R, R),
    )
