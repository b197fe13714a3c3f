"""The student: a pose-conditioned, fully convolutional generator that renders what EG3D renders.

Follow one tensor (tiny preset: R = 64, 128px output):

    z (B, 512), c_cond (B, 25), psi
      -> teacher_mapping (EG3D's, frozen)        w (B, 512)            the teacher's style code
    w, render camera c (B, 25)
      -> mapping (PoseMapping)                    w' (B, num_ws, 512)   pose-aware style codes
      -> synthesis (StyleGAN2, 4 -> R)            feature_image (B, 32, R, R); [:, :3] = low-res RGB
      -> superresolution (EG3D's, from teacher)   image (B, 3, H, W)

The super-resolution has the teacher's structure, starts from the teacher's weights and is fed the
teacher's w (as EG3D feeds it ws[:, -1], which equals w when the whole code is truncated), so at
initialisation it is exactly the teacher's super-resolution applied to the student's feature image.

With ``config.sr_channels`` set (the '-fast' presets) the super-resolution keeps the teacher's
structure but its blocks are narrower; it starts from a slice of the teacher's weights
(:func:`slice_superresolution`), which is not the teacher's function, so it trains at the full
learning rate (``sr_copied`` is False).

Built for export: the non-fused modulated convolution (scale, plain conv, demodulate), constant
noise, upsampling by transposed convolution + a fixed 4x4 FIR (standard ops), bilinear resizing
without antialiasing (only ever used to upsample), any batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nerfgan.errors import ConfigError
from nerfgan.student.config import StudentConfig
from nerfgan.teacher.stylegan2 import FullyConnectedLayer, MappingNetwork, SynthesisNetwork, normalize_2nd_moment
from nerfgan.teacher.superresolution import SuperResolution
from nerfgan.teacher.triplane import PLANE_CHANNELS


@dataclass
class StudentOutput:
    image: torch.Tensor  # (B, 3, H, W) final image, about [-1, 1]
    image_raw: torch.Tensor  # (B, 3, R, R) low-resolution RGB = feature_image[:, :3]
    feature_image: torch.Tensor  # (B, 32, R, R)


class TeacherMapping(nn.Module):
    """EG3D's mapping network with truncation over the whole code: (z, c_cond, psi) -> w (B, w_dim)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        t = config.teacher
        self.c_scale = 0.0 if t.rendering.c_gen_conditioning_zero else t.rendering.c_scale
        self.net = MappingNetwork(t.z_dim, t.c_dim, t.w_dim, num_ws=1, num_layers=t.mapping_layers)

    def forward(self, z: torch.Tensor, c_cond: torch.Tensor, psi: torch.Tensor | float = 1.0) -> torch.Tensor:
        """z (B, z_dim), c_cond (B, 25), psi scalar or (B,) -> w (B, w_dim)."""
        w = self.net(z, c_cond * self.c_scale)[:, 0]
        psi_t = torch.as_tensor(psi, dtype=w.dtype, device=w.device).reshape(-1, 1).expand_as(w)
        return torch.lerp(self.net.w_avg.expand_as(w), w, psi_t)  # the op upstream truncates with


class PoseMapping(nn.Module):
    """(teacher w, render camera c) -> the student's style codes w' (B, num_ws, w_dim).

    The camera's 25 values are embedded by a linear layer and normalised (as EG3D embeds its
    conditioning camera); w enters as it is, since its norm carries the truncation. An MLP of
    ``layers`` leaky-ReLU layers maps the concatenation to w', broadcast to every synthesis layer.
    """

    def __init__(self, w_dim: int, c_dim: int, num_ws: int, layers: int, lr_multiplier: float, pose_input: bool) -> None:
        super().__init__()
        self.num_ws, self.pose_input = num_ws, pose_input
        embed = w_dim if pose_input else 0
        if pose_input:
            self.embed = FullyConnectedLayer(c_dim, embed)
        widths = [w_dim + embed] + [w_dim] * layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(widths[i], widths[i + 1], lrelu=True, lr_multiplier=lr_multiplier) for i in range(layers)
        )

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = w
        if self.pose_input:
            x = torch.cat([w, normalize_2nd_moment(self.embed(c))], dim=1)
        for layer in self.layers:
            x = layer(x)
        return x.unsqueeze(1).expand(-1, self.num_ws, -1)  # one code for every layer, broadcast

    def extra_repr(self) -> str:
        return f"num_ws={self.num_ws}, pose_input={self.pose_input}"


class StudentGenerator(nn.Module):
    """The distilled generator. ``forward(w, c)`` is what is exported; ``generate`` starts from z."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        t = config.teacher
        self.teacher_mapping = TeacherMapping(config).requires_grad_(False)
        self.synthesis = SynthesisNetwork(
            t.w_dim, config.resolution, PLANE_CHANNELS, config.channel_base, config.channel_max, conv_clamp=config.conv_clamp
        )
        self.mapping = PoseMapping(t.w_dim, t.c_dim, self.synthesis.num_ws, config.mapping_layers,
                                   config.mapping_lr_multiplier, config.pose_input)
        self.superresolution = SuperResolution(
            t.rendering.superresolution, t.w_dim, conv_clamp=t.sr_conv_clamp, antialias=False, noise_mode="none",
            channels=config.sr_channels,
        )
        for name, p in self.superresolution.named_parameters():
            if name.endswith("noise_strength"):  # kept for the teacher's layout; unused without SR noise
                p.requires_grad_(False)

    def forward(self, w: torch.Tensor, c: torch.Tensor, fused: bool = False) -> StudentOutput:
        """w (B, w_dim) teacher style code, c (B, 25) render camera -> :class:`StudentOutput`."""
        if w.ndim != 2 or c.ndim != 2 or c.shape[1] != 25 or w.shape[0] != c.shape[0]:
            raise ValueError(f"expected w (B, {self.config.teacher.w_dim}) and c (B, 25), got {tuple(w.shape)} and {tuple(c.shape)}")
        ws = self.mapping(w, c)
        feature_image = self.synthesis(ws, noise_mode="const", fused=fused)
        rgb = feature_image[:, :3]
        image, _ = self.superresolution(rgb, feature_image, w.unsqueeze(1), fused=fused)
        return StudentOutput(image=image, image_raw=rgb, feature_image=feature_image)

    def generate(self, z: torch.Tensor, c_cond: torch.Tensor, c: torch.Tensor, psi: torch.Tensor | float = 0.7) -> StudentOutput:
        """z (B, z_dim), conditioning camera c_cond (B, 25), render camera c (B, 25), truncation psi."""
        return self(self.teacher_mapping(z, c_cond, psi), c)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything but the frozen teacher mapping (and the unused SR noise strengths)."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def sr_copied(self) -> bool:
        """True when the super-resolution starts as the teacher's own (smaller SR steps make sense); False
        when it is a narrower one started from a slice (it should train at the full learning rate)."""
        return self.config.sr_copied

    @classmethod
    def from_teacher(cls, config: StudentConfig, teacher: nn.Module) -> "StudentGenerator":
        """A fresh student with the teacher's mapping (frozen) and super-resolution weights (copied, or
        sliced when ``config.sr_channels`` narrows it)."""
        student = cls(config)
        student.teacher_mapping.net.load_state_dict(teacher.backbone.mapping.state_dict())  # type: ignore[union-attr]
        teacher_sr = teacher.superresolution.state_dict()  # type: ignore[union-attr]
        if config.sr_copied:
            student.superresolution.load_state_dict(teacher_sr)
            return student
        teacher_module = teacher.superresolution
        assert isinstance(teacher_module, SuperResolution)
        widths = teacher_module.channels
        if any(c > t for c, t in zip(student.superresolution.channels, widths)):
            raise ConfigError(f"student config: sr_channels {config.sr_channels} is wider than the teacher's "
                              f"super-resolution {widths}; a student's super-resolution starts from a slice of it")
        slice_superresolution(teacher_sr, student.superresolution)
        return student


def slice_superresolution(source: dict[str, torch.Tensor], target: nn.Module) -> None:
    """Start a narrower super-resolution ``target`` from the teacher's state dict ``source``.

    Every tensor of the target takes the leading part of the teacher's along each axis (the first c
    channels of each layer: input channels of a weight follow the previous layer's kept outputs, the
    affine rows the kept inputs); shapes that match are copied whole (filters, constant noise, the
    32-channel input of block0). ToRGB divides its style by sqrt(input channels), so its sliced weight
    is scaled by sqrt(c / C) to keep each kept channel's share of the teacher's RGB. Demodulation
    renormalises the sliced convolutions, so the result is a plausible but not exact copy of the
    teacher's function: a starting point for full-rate training, not a replacement.
    """
    with torch.no_grad():
        for name, t in target.state_dict().items():
            s = source[name]
            if s.ndim != t.ndim or any(a > b for a, b in zip(t.shape, s.shape)):
                raise ValueError(f"cannot slice the teacher's {name} {tuple(s.shape)} to {tuple(t.shape)}")
            part = s[tuple(slice(0, n) for n in t.shape)].clone()
            if name.endswith("torgb.weight") and t.shape[1] != s.shape[1]:
                part *= math.sqrt(t.shape[1] / s.shape[1])
            t.copy_(part)
