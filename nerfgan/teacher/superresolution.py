"""EG3D's super-resolution: two StyleGAN2 blocks from the R x R feature image to the final image.

Axis letters: B batch, C channels, H W size. The modules see only the LAST style vector
(ws[:, -1], repeated for the three layers of each block). Their noise mode comes from the
rendering config (``superresolution_noise_mode``), not from the caller.

| variant | output | input res | resize when | block0 | block1 |
|---|---|---|---|---|---|
| 2X   | 128 | 64  | R != 64  | NoUp 32->128 @64   | Up 128->64 @128 |
| 4X   | 256 | 128 | R < 128  | NoUp 32->128 @128  | Up 128->64 @256 |
| 8X   | 512 | 128 | R != 128 | Up 32->128 @256    | Up 128->64 @512 |
| 8XDC | 512 | 128 | R != 128 | Up 32->256 @256    | Up 256->128 @512 |

``channels`` (c0, c1) replaces the two blocks' output widths (128 and 64 for 2X, ...) for a lighter
super-resolution of the same structure (the student's fast presets); None keeps the variant's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nerfgan.teacher.stylegan2 import SynthesisBlock, fir_filter

# variant -> (input resolution, block0 (I, O, res, upsample), block1 (I, O, res), resize only when R < input)
VARIANTS = {
    "2X": (64, (32, 128, 64, False), (128, 64, 128), False),
    "4X": (128, (32, 128, 128, False), (128, 64, 256), True),
    "8X": (128, (32, 128, 256, True), (128, 64, 512), False),
    "8XDC": (128, (32, 256, 256, True), (256, 128, 512), False),
}


class SuperResolution(nn.Module):
    """feature image (B, 32, R, R) + its RGB (B, 3, R, R) + ws -> image (B, 3, res, res)."""

    def __init__(
        self,
        variant: str,  # "2X" | "4X" | "8X" | "8XDC"
        w_dim: int = 512,
        conv_clamp: float | None = 256.0,  # upstream clamps when sr_num_fp16_res > 0
        antialias: bool = True,  # antialiased bilinear resize of the input when needed
        noise_mode: str = "none",  # noise of the SR layers (rendering config)
        channels: tuple[int, int] | None = None,  # output widths of block0, block1; None: the variant's
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown super-resolution variant {variant!r}")
        self.variant, self.antialias, self.noise_mode = variant, antialias, noise_mode
        self.input_resolution, b0, b1, self.resize_only_smaller = VARIANTS[variant]
        if channels is not None:
            if len(channels) != 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
                raise ValueError(f"super-resolution channels must be two positive ints, got {channels!r}")
            b0 = (b0[0], channels[0], b0[2], b0[3])
            b1 = (channels[0], channels[1], b1[2])
        self.channels = (b0[1], b1[1])
        if variant != "8XDC":
            self.register_buffer("resample_filter", fir_filter())  # unused, present upstream
        self.block0 = SynthesisBlock(b0[0], b0[1], w_dim, b0[2], 3, upsample=b0[3], conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(b1[0], b1[1], w_dim, b1[2], 3, upsample=True, conv_clamp=conv_clamp)

    def needs_resize(self, R: int) -> bool:
        return R < self.input_resolution if self.resize_only_smaller else R != self.input_resolution

    def forward(
        self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, fused: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (image (B, 3, res, res), block0's image (B, 3, r0, r0)).

        Upstream adds block0's torgb output in place to the RGB view of the feature image when
        block0 does not upsample and no resize happens; the second output lets the caller
        reproduce the ``image_raw`` that upstream returns in that case.
        """
        ws = ws[:, -1:, :].expand(-1, 3, -1)
        if self.needs_resize(x.shape[-1]):
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, rgb0 = self.block0(x, rgb, ws, noise_mode=self.noise_mode, fused=fused)
        _, img = self.block1(x, rgb0, ws, noise_mode=self.noise_mode, fused=fused)
        return img, rgb0

    def extra_repr(self) -> str:
        return f"variant={self.variant}, input_resolution={self.input_resolution}, channels={self.channels}"
