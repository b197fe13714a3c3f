"""EG3D, end to end: z -> w -> tri-planes -> volume rendering -> super-resolution.

Follow one tensor (shapes for the official ffhq512-128 config):

    z (B, 512), c_cond (B, 25)
      -> mapping                    ws (B, 14, 512)
      -> backbone.synthesis         planes (B, 96, 256, 256) = 3 planes x 32 features
      -> rays from c (B, 25)        origins, dirs (B, M=R*R, 3), R = neural_rendering_resolution
      -> render_rays (triplane field + OSGDecoder + ray marcher)
                                    feature_image (B, 32, R, R), image_depth (B, 1, R, R)
      -> superresolution(ws[:, -1]) image (B, 3, 512, 512) in about [-1, 1]

``c`` is the camera the image is rendered from; ``c_cond`` (usually the frontal camera) is what
the mapping network is conditioned on. Both are 25-value camera vectors (``nerfgan.camera``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.rays import generate_rays
from nerfgan.teacher.renderer import RENDER_MODES, render_rays
from nerfgan.teacher.stylegan2 import NOISE_MODES, Backbone
from nerfgan.teacher.superresolution import SuperResolution
from nerfgan.teacher.triplane import PLANE_CHANNELS, OSGDecoder, sample_planes


@dataclass
class TeacherOutput:
    """What one synthesis call produces. Images are in about [-1, 1]."""

    image: torch.Tensor  # (B, 3, H, W) final super-resolved image
    image_raw: torch.Tensor  # (B, 3, R, R) low-resolution RGB as upstream returns it (see ``raw_quirk``)
    image_depth: torch.Tensor  # (B, 1, R, R) expected depth along each ray (world units)
    feature_image: torch.Tensor  # (B, 32, R, R) volume-rendered features; [:, :3] is the clean RGB
    planes: torch.Tensor | None = None  # (B, 96, 256, 256) when requested
    image_mask: torch.Tensor | None = None  # (B, 1, R, R) accumulated opacity of each ray (render_planes sets it)


class EG3D(nn.Module):
    """The tri-plane generator with upstream's state-dict layout (``TriPlaneGenerator``)."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        r = config.rendering
        self.register_buffer("dataset_label_std", torch.ones([config.c_dim]))  # unused, present upstream
        self.backbone = Backbone(
            config.z_dim, config.c_dim, config.w_dim, config.channel_base, config.channel_max,
            config.mapping_layers, conv_clamp=config.conv_clamp,
        )
        self.superresolution = SuperResolution(
            r.superresolution, config.w_dim, conv_clamp=config.sr_conv_clamp, antialias=r.sr_antialias,
            noise_mode=r.superresolution_noise_mode,
        )
        self.decoder = OSGDecoder(PLANE_CHANNELS, 64, lr_multiplier=r.decoder_lr_mul)
        self.num_ws = self.backbone.num_ws

    # ------------------------------------------------------------------------------------------
    def mapping(
        self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """z (B, z_dim), conditioning camera c (B, 25) -> ws (B, num_ws, w_dim)."""
        if z.ndim != 2 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"z must be (B, {self.config.z_dim}), got {tuple(z.shape)}")
        if c.shape != (z.shape[0], self.config.c_dim):
            raise ValueError(f"c must be ({z.shape[0]}, {self.config.c_dim}), got {tuple(c.shape)}")
        r = self.config.rendering
        if r.c_gen_conditioning_zero:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * r.c_scale, truncation_psi, truncation_cutoff)

    def planes(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool = False) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> tri-planes (B, 96, 256, 256)."""
        return self.backbone.synthesis(ws, noise_mode=noise_mode, fused=fused)

    def render_planes(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        c: torch.Tensor,
        render_mode: str = "deterministic",
        neural_rendering_resolution: int | None = None,
        fused: bool = False,
    ) -> TeacherOutput:
        """Render precomputed planes (B, 96, 256, 256) from camera c (B, 25); ws feeds the super-resolution."""
        cfg = self.config
        R = neural_rendering_resolution or cfg.neural_rendering_resolution
        B = planes.shape[0]
        if c.shape != (B, 25):
            raise ValueError(f"c must be ({B}, 25), got {tuple(c.shape)}")
        cam2world = c[:, :16].reshape(B, 4, 4)
        intrinsics = c[:, 16:25].reshape(B, 3, 3)
        origins, dirs = generate_rays(cam2world, intrinsics, R)
        planes5 = planes.reshape(B, 3, PLANE_CHANNELS, planes.shape[-2], planes.shape[-1])

        def field(points: torch.Tensor, _dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.decoder(sample_planes(planes5, points, cfg.rendering.box_warp))

        features, depth, opacity = render_rays(field, origins, dirs, cfg.rendering, mode=render_mode)
        feature_image = features.permute(0, 2, 1).reshape(B, PLANE_CHANNELS, R, R).contiguous()
        image_depth = depth.permute(0, 2, 1).reshape(B, 1, R, R)
        rgb = feature_image[:, :3]
        image, rgb0 = self.superresolution(rgb, feature_image, ws, fused=fused)
        image_raw = rgb0 if self.raw_quirk(R) else rgb
        image_mask = opacity.permute(0, 2, 1).reshape(B, 1, R, R)
        return TeacherOutput(image=image, image_raw=image_raw, image_depth=image_depth, feature_image=feature_image,
                             image_mask=image_mask)

    def raw_quirk(self, R: int) -> bool:
        """True when upstream's returned image_raw includes the SR block0 output (in-place add).

        That happens when block0 does not upsample and the feature image is not resized.
        """
        sr = self.superresolution
        return (not sr.block0.upsample) and not sr.needs_resize(R)

    def synthesis(
        self,
        ws: torch.Tensor,
        c: torch.Tensor,
        noise_mode: str = "const",
        render_mode: str = "deterministic",
        neural_rendering_resolution: int | None = None,
        return_planes: bool = False,
        fused: bool = False,
    ) -> TeacherOutput:
        """ws (B, num_ws, w_dim), render camera c (B, 25) -> :class:`TeacherOutput`.

        noise_mode: backbone noise, 'const' | 'random' | 'none'. render_mode: 'deterministic' |
        'stochastic' (upstream's jittered sampling). fused: grouped-conv modulated convolution
        (upstream's eval path) instead of the equivalent non-fused one.
        """
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        planes = self.planes(ws, noise_mode=noise_mode, fused=fused)
        out = self.render_planes(planes, ws, c, render_mode, neural_rendering_resolution, fused=fused)
        if return_planes:
            out.planes = planes
        return out

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        c_cond: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: object,
    ) -> TeacherOutput:
        """z (B, z_dim), render camera c (B, 25); the mapping is conditioned on ``c_cond`` (default: c, as upstream)."""
        ws = self.mapping(z, c if c_cond is None else c_cond, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)  # type: ignore[arg-type]
