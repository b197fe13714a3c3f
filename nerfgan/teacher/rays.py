"""Ray generation: one ray per pixel of an R x R image from a camera vector's matrices.

Axis letters: B batch, R image side, M = R*R rays (row-major: ray m = i*R + j).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generate_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cam2world (B, 4, 4), normalised intrinsics (B, 3, 3) -> origins (B, M, 3), unit directions (B, M, 3).

    Pixel (i, j) is sampled at its centre, u = (j + 0.5)/R, v = (i + 0.5)/R, lifted to camera depth 1
    (OpenCV axes: +x right, +y down, +z forward) and rotated into the world.
    """
    B, R = cam2world.shape[0], resolution
    M = R * R
    origin = cam2world[:, :3, 3]
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy, sk = intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 0, 1]

    idx = torch.arange(R, dtype=torch.float32, device=cam2world.device)
    ii, jj = torch.meshgrid(idx, idx, indexing="ij")
    u = (jj * (1.0 / R) + (0.5 / R)).reshape(1, M).expand(B, M)
    v = (ii * (1.0 / R) + (0.5 / R)).reshape(1, M).expand(B, M)
    z = torch.ones_like(u)

    x_cam = (u - cx[:, None] + cy[:, None] * sk[:, None] / fy[:, None] - sk[:, None] * v / fy[:, None]) / fx[:, None] * z
    y_cam = (v - cy[:, None]) / fy[:, None] * z
    points = torch.stack([x_cam, y_cam, z, torch.ones_like(z)], dim=-1)  # (B, M, 4)
    world = torch.bmm(cam2world, points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    dirs = F.normalize(world - origin[:, None, :], dim=2)
    return origin[:, None, :].expand(B, M, 3), dirs
