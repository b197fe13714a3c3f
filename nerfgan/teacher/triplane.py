"""The tri-plane field: project 3D points onto three feature planes, sample, decode.

Axis letters: B batch, P planes (3), C features per plane (32), H W plane size, N points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nerfgan.teacher.stylegan2 import FullyConnectedLayer

PLANE_CHANNELS = 32

# For each plane, which world axes give its (column, row) sampling coordinates. Upstream projects
# with the inverse of three axis matrices; these are the resulting index pairs. The third plane
# is (z, x), the transpose of the second: world y is only seen by plane 0 (an upstream quirk).
PLANE_AXES = ((0, 1), (0, 2), (2, 0))


def project_onto_planes(points: torch.Tensor) -> torch.Tensor:
    """points (B, N, 3) in [-1, 1]^3 -> grid coordinates (B, P=3, N, 2)."""
    return torch.stack([points[..., list(axes)] for axes in PLANE_AXES], dim=1)


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinearly sample each plane at the projected points.

    planes (B, P, C, H, W), points (B, N, 3) in world units -> features (B, P, N, C).
    The cube [-box_warp/2, box_warp/2]^3 maps onto the planes; outside it features are zero.
    """
    B, P, C, H, W = planes.shape
    N = points.shape[1]
    coords = project_onto_planes((2 / box_warp) * points).reshape(B * P, 1, N, 2)
    feats = F.grid_sample(
        planes.reshape(B * P, C, H, W), coords.float(), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B*P, C, 1, N)
    return feats.permute(0, 3, 2, 1).reshape(B, P, N, C)


class OSGDecoder(nn.Module):
    """Tri-plane features -> (density, 32 colour features).

    The three plane features are averaged, then FC(32 -> 64), Softplus, FC(64 -> 33).
    Output 0 is the raw density; outputs 1..32 go through a widened sigmoid to [-0.001, 1.001].
    """

    def __init__(self, n_features: int = PLANE_CHANNELS, hidden: int = 64, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + n_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, P, N, C) -> rgb (B, N, C), sigma (B, N, 1)."""
        x = features.mean(1)
        B, N, C = x.shape
        x = self.net(x.reshape(B * N, C)).reshape(B, N, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001
        sigma = x[..., 0:1]
        return rgb, sigma
