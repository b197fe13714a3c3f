"""EG3D's pose-conditioned dual discriminator (a ResNet StyleGAN2 discriminator), standard ops only.

Follow one tensor (img 128, raw 64, channel_base 2048, channel_max 128):

    image (B, 3, 128, 128), image_raw (B, 3, 64, 64)
      -> bilinear upsampling of image_raw to 128, concatenation   x (B, 6, 128, 128)
      -> b128.fromrgb (1x1)                                        (B, 16, 128, 128)
      -> b128, b64, ..., b8 (ResNet blocks, each halves H and W)   (B, 128, 4, 4)
      -> b4: minibatch std (+1 channel), conv 3x3, fc, out        (B, cmap_dim)
    camera c (B, 25) -> mapping (embed + fc layers)                cmap (B, cmap_dim)
      -> (x * cmap).sum(1) / sqrt(cmap_dim)                        logits (B, 1)

Channels at resolution r: min(channel_base // r, channel_max). All weights use the equalised
learning rate (stored N(0, 1), scaled by 1 / sqrt(fan_in) at run time). Downsampling is
StyleGAN2's: the 4x4 FIR low-pass, then stride 2. Parameter names follow upstream EG3D's
DualDiscriminator (b{r}.conv0 ..., b4.out, mapping.embed, mapping.fc{i}); the FIR buffers are
not persistent, so a state_dict holds parameters only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nerfgan.errors import ConfigError
from nerfgan.teacher.stylegan2 import (
    LRELU_GAIN,
    FullyConnectedLayer,
    bias_act,
    normalize_2nd_moment,
)

IMG_CHANNELS = 3  # per input; the dual discriminator sees 2 * 3 = 6
SKIP_GAIN = math.sqrt(0.5)  # the residual and skip branches are each scaled so their sum keeps unit variance


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Widths and options of :class:`Discriminator` (saved as JSON beside its checkpoints)."""

    img_resolution: int  # H = W of the final image, a power of two >= 4
    raw_resolution: int  # R of the low-resolution image_raw, 1 <= R <= img_resolution
    c_dim: int = 25  # camera conditioning width; 0: unconditional (no mapping, one output)
    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    cmap_dim: int | None = None  # projection width; None: the channel count at 4x4
    mbstd_group_size: int = 4  # minibatch-std group; the largest divisor of B up to this is used
    c_noise: float = 0.0  # training only: c += N(0, 1) * std of c over the batch * c_noise (EG3D)
    mapping_layers: int = 8  # fc layers after the embedding in the camera mapping (StyleGAN2-ADA: 8)

    def __post_init__(self) -> None:
        r = self.img_resolution
        if r < 4 or r & (r - 1):
            raise ConfigError(f"discriminator: img_resolution must be a power of two >= 4, got {r}")
        if not 1 <= self.raw_resolution <= r:
            raise ConfigError(f"discriminator: raw_resolution must be in [1, {r}], got {self.raw_resolution}")
        if self.c_dim < 0 or self.channel_base < 4 or self.channel_max < 1:
            raise ConfigError("discriminator: c_dim must be >= 0, channel_base >= 4 and channel_max >= 1")
        if self.c_dim == 0 and self.cmap_dim:
            raise ConfigError("discriminator: cmap_dim must be None or 0 when c_dim is 0")
        if self.cmap_dim is not None and self.cmap_dim < 0:
            raise ConfigError(f"discriminator: cmap_dim must be >= 0, got {self.cmap_dim}")
        if self.mbstd_group_size < 1 or self.mapping_layers < 1:
            raise ConfigError("discriminator: mbstd_group_size and mapping_layers must be >= 1")
        if not (math.isfinite(self.c_noise) and self.c_noise >= 0):
            raise ConfigError(f"discriminator: c_noise must be finite and >= 0, got {self.c_noise}")

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def resolved_cmap_dim(self) -> int:
        """0 when unconditional, else cmap_dim or the channel count at 4x4."""
        if self.c_dim == 0:
            return 0
        return self.cmap_dim if self.cmap_dim else self.channels(4)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "discriminator config") -> "DiscriminatorConfig":
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as e:
            raise ConfigError(f"{source}: discriminator config JSON is malformed ({e})") from None


def fir_lowpass(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad (B, C, H, W) by ``pad`` on every side and filter with the 4x4 FIR outer([1,3,3,1], [1,3,3,1]) / 64.

    Written as two 1D passes of shifted slices rather than a grouped convolution: the same numbers,
    and its double backward (R1) stays fast on GPUs, where a depthwise convolution's is very slow.
    """
    x = F.pad(x, [pad, pad, pad, pad])
    x = (x[..., :-3] + 3 * x[..., 1:-2] + 3 * x[..., 2:-1] + x[..., 3:]) * 0.125
    return (x[..., :-3, :] + 3 * x[..., 1:-2, :] + 3 * x[..., 2:-1, :] + x[..., 3:, :]) * 0.125


class Conv2dLayer(nn.Module):
    """Equalised-lr 'same' convolution + bias + activation, optionally downsampling x2.

    down=2: pad 1 + K // 2, 4x4 FIR low-pass, then the convolution with stride 2 (StyleGAN2's
    order), so (B, I, H, W) -> (B, O, H / 2, W / 2) for even H, W and K in {1, 3}.
    """

    def __init__(
        self,
        in_channels: int,  # I
        out_channels: int,  # O
        kernel_size: int,  # K (odd)
        bias: bool = True,  # learned per-channel bias
        lrelu: bool = True,  # leaky ReLU(0.2) times sqrt(2), else linear
        down: int = 1,  # 1 or 2
        gain: float = 1.0,  # extra output gain (after the activation)
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.lrelu, self.down = lrelu, down
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = (LRELU_GAIN if lrelu else 1.0) * gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        else:
            p = 1 + self.kernel_size // 2
            x = fir_lowpass(x, p)
            x = F.conv2d(x, w, stride=2)
        return bias_act(x, self.bias, lrelu=self.lrelu, gain=self.act_gain)

    def extra_repr(self) -> str:
        return f"I={self.in_channels}, O={self.out_channels}, K={self.kernel_size}, down={self.down}, lrelu={self.lrelu}"


class DiscriminatorBlock(nn.Module):
    """ResNet block: [fromrgb,] conv0 3x3, conv1 3x3 down 2; skip 1x1 down 2; sum (both times sqrt(1/2))."""

    def __init__(
        self,
        in_channels: int,  # 0 for the first block (it reads the image through fromrgb)
        tmp_channels: int,  # width at this block's input resolution
        out_channels: int,  # width at half the resolution
        img_channels: int,  # channels of the image the first block reads
    ) -> None:
        super().__init__()
        self.in_channels, self.tmp_channels, self.out_channels = in_channels, tmp_channels, out_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=2, gain=SKIP_GAIN)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, lrelu=False, down=2, gain=SKIP_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, img_channels or tmp_channels, r, r) -> (B, out_channels, r / 2, r / 2)."""
        if self.in_channels == 0:
            x = self.fromrgb(x)
        y = self.skip(x)
        return y + self.conv1(self.conv0(x))

    def extra_repr(self) -> str:
        return f"I={self.in_channels}, tmp={self.tmp_channels}, O={self.out_channels}"


def mbstd_group(batch: int, group_size: int) -> int:
    """The largest divisor of ``batch`` that is <= ``group_size``."""
    return max(g for g in range(1, min(group_size, batch) + 1) if batch % g == 0)


class MinibatchStdLayer(nn.Module):
    """Appends the mean std over groups of samples: (B, C, H, W) -> (B, C + 1, H, W).

    Sample i is in group i mod (B / G) (StyleGAN2's layout); G = :func:`mbstd_group` (B, group_size).
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        G = mbstd_group(B, self.group_size)
        y = x.reshape(G, -1, C, H, W)  # (G, B/G, C, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)  # variance within each group
        y = (y + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (B/G,)
        y = y.reshape(-1, 1, 1, 1).repeat(G, 1, H, W)  # (B, 1, H, W)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch std, conv 3x3, fc, out; projection onto cmap when conditioned."""

    def __init__(
        self,
        in_channels: int,  # channels at 4x4
        cmap_dim: int,  # width of out and of cmap; 0: unconditional, out has one unit
        mbstd_group_size: int,
    ) -> None:
        super().__init__()
        self.in_channels, self.cmap_dim = in_channels, cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size)
        self.conv = Conv2dLayer(in_channels + 1, in_channels, 3)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, lrelu=True)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        """x (B, in_channels, 4, 4), cmap (B, cmap_dim) or None -> (B, 1)."""
        x = self.conv(self.mbstd(x))
        x = self.out(self.fc(x.flatten(1)))
        if cmap is None:
            return x
        return (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))


class CameraMapping(nn.Module):
    """c (B, c_dim) -> cmap (B, cmap_dim): embed, normalise the 2nd moment, ``num_layers`` fc (lr x0.01)."""

    def __init__(self, c_dim: int, cmap_dim: int, num_layers: int, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.embed = FullyConnectedLayer(c_dim, cmap_dim)
        for i in range(num_layers):
            fc = FullyConnectedLayer(cmap_dim, cmap_dim, lrelu=True, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", fc)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.embed(c))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


class Discriminator(nn.Module):
    """EG3D's dual discriminator: scores (image, image_raw) pairs given the camera; (B, 1) logits."""

    def __init__(
        self,
        img_resolution: int,  # H = W of ``image``, a power of two >= 4
        raw_resolution: int,  # R of ``image_raw`` (upsampled bilinearly to H before concatenation)
        c_dim: int = 25,  # camera vector width (nerfgan.camera's 25 values); 0: unconditional
        channel_base: int = 32768,  # channels at resolution r: min(channel_base // r, channel_max)
        channel_max: int = 512,  # upper bound on the channels at any resolution
        cmap_dim: int | None = None,  # projection width; None: the channel count at 4x4
        mbstd_group_size: int = 4,  # minibatch-std group size (largest divisor of B up to this)
        c_noise: float = 0.0,  # training mode only: c += N(0, 1) * c.std(0) * c_noise (EG3D's disc_c_noise)
        mapping_layers: int = 8,  # fc layers of the camera mapping after its embedding
    ) -> None:
        super().__init__()
        cfg = DiscriminatorConfig(
            img_resolution, raw_resolution, c_dim, channel_base, channel_max, cmap_dim, mbstd_group_size, c_noise,
            mapping_layers,
        )
        self.config = cfg
        self.img_resolution, self.raw_resolution, self.c_dim = img_resolution, raw_resolution, c_dim
        self.cmap_dim, self.c_noise = cfg.resolved_cmap_dim, c_noise
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]  # img_resolution, ..., 8
        for r in self.block_resolutions:
            in_ch = 0 if r == img_resolution else cfg.channels(r)
            setattr(self, f"b{r}", DiscriminatorBlock(in_ch, cfg.channels(r), cfg.channels(r // 2), 2 * IMG_CHANNELS))
        if not self.block_resolutions:  # img_resolution == 4: only the epilogue, read through fromrgb
            self.fromrgb = Conv2dLayer(2 * IMG_CHANNELS, cfg.channels(4), 1)
        if self.c_dim > 0:
            self.mapping = CameraMapping(c_dim, self.cmap_dim, mapping_layers)
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), self.cmap_dim, mbstd_group_size)

    @classmethod
    def from_config(cls, cfg: DiscriminatorConfig) -> "Discriminator":
        return cls(**asdict(cfg))

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), image_raw (B, 3, R, R), c (B, c_dim) -> logits (B, 1)."""
        B, H = image.shape[0], self.img_resolution
        if image.shape[1:] != (IMG_CHANNELS, H, H):
            raise ValueError(f"image must be (B, {IMG_CHANNELS}, {H}, {H}), got {tuple(image.shape)}")
        R = self.raw_resolution
        if image_raw.shape != (B, IMG_CHANNELS, R, R):
            raise ValueError(f"image_raw must be ({B}, {IMG_CHANNELS}, {R}, {R}), got {tuple(image_raw.shape)}")
        if c.shape != (B, self.c_dim):
            raise ValueError(f"c must be ({B}, {self.c_dim}), got {tuple(c.shape)}")
        if R != H:
            image_raw = F.interpolate(image_raw, size=(H, H), mode="bilinear", align_corners=False, antialias=False)
        x = torch.cat([image, image_raw], dim=1)
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x)
        if not self.block_resolutions:
            x = self.fromrgb(x)
        cmap = None
        if self.c_dim > 0:
            if self.training and self.c_noise > 0 and B > 1:  # B == 1: the batch std is undefined, no noise
                c = c + torch.randn_like(c) * c.std(dim=0) * self.c_noise
            cmap = self.mapping(c)
        return self.b4(x, cmap)

    def extra_repr(self) -> str:
        return (f"img_resolution={self.img_resolution}, raw_resolution={self.raw_resolution}, c_dim={self.c_dim}, "
                f"cmap_dim={self.cmap_dim}, c_noise={self.c_noise}")
