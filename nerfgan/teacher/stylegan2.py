"""StyleGAN2 building blocks as EG3D uses them (tri-plane backbone and super-resolution).

Axis letters: B batch, C channels, H W height width, I O input and output channels, K kernel.

Parameter and buffer names, shapes and registration order follow upstream exactly, so an
upstream ``state_dict`` loads with ``strict=True``. Only standard PyTorch ops are used; the
resampling filter is StyleGAN2's 4x4 FIR ``outer([1,3,3,1], [1,3,3,1]) / 64``.

The modulated convolution has two paths with the same math:
``fused`` (one grouped convolution with per-sample weights, upstream's eval path) and the
non-fused reference (scale activations by the style, plain convolution, scale by the
demodulation coefficients), which is faster at large batch and exports with a dynamic batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NOISE_MODES = ("const", "random", "none")
LRELU_GAIN = math.sqrt(2.0)


def fir_filter() -> torch.Tensor:
    """The 4x4 resampling filter (sums to 1)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(k, k) / 64.0


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    lrelu: bool,
    gain: float = 1.0,
    clamp: float | None = None,
) -> torch.Tensor:
    """``x + bias`` (bias on axis 1), optional leaky ReLU (0.2), times ``gain``, clamp to +-clamp."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _depthwise_fir(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) by (before, after) on both axes, then filter every channel with ``f * gain``."""
    C = int(x.shape[1])  # a constant when traced for ONNX: the depthwise kernel needs a static shape
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    w = (f * gain).flip([0, 1])[None, None].expand(C, 1, -1, -1).to(x.dtype)
    return F.conv2d(x, w, groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zero insertion, pad 2 before / 1 after, FIR times 4."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H, 1, W, 1)
    x = F.pad(x, [0, 1, 0, 0, 0, 1])
    x = x.reshape(B, C, 2 * H, 2 * W)
    return _depthwise_fir(x, f, (2, 1), gain=4.0)


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, up: int, groups: int = 1) -> torch.Tensor:
    """A 'same' convolution (kernel K, padding K//2), optionally upsampling x2 as StyleGAN2 does.

    x (B, I*groups, H, W), weight (O*groups, I, K, K) -> (B, O*groups, H*up, W*up).
    up=2: transposed convolution (stride 2, weight not flipped) to 2H+1, pad 1, FIR times 4.
    """
    K = weight.shape[-1]
    if up == 1:
        return F.conv2d(x, weight, padding=K // 2, groups=groups)
    if groups == 1:
        wt = weight.transpose(0, 1)
    else:
        OG, I = weight.shape[:2]
        wt = weight.reshape(groups, OG // groups, I, K, K).transpose(1, 2).reshape(groups * I, OG // groups, K, K)
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
    return _depthwise_fir(x, f, (1, 1), gain=4.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    demodulate: bool = True,
    resample_filter: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    x (B, I, H, W), weight (O, I, K, K), styles (B, I), noise broadcastable to (B, O, H', W').
    Returns (B, O, H*up, W*up).
    """
    B, I, H, W = x.shape
    O, _, K, _ = weight.shape
    if styles.shape != (B, I):
        raise ValueError(f"styles must be ({B}, {I}), got {tuple(styles.shape)}")
    f = resample_filter if resample_filter is not None else fir_filter().to(x.device)
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(B, 1, I, 1, 1)  # (B, O, I, K, K)
    dcoefs = None
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O)
    if not fused:
        x = x * styles.reshape(B, I, 1, 1)
        x = conv2d_resample(x, weight, f, up=up)
        if dcoefs is not None:
            x = x * dcoefs.reshape(B, O, 1, 1)
        if noise is not None:
            x = x + noise
        return x
    if dcoefs is not None:
        w = w * dcoefs.reshape(B, O, 1, 1, 1)
    x = x.reshape(1, B * I, H, W)
    x = conv2d_resample(x, w.reshape(B * O, I, K, K), f, up=up, groups=B)
    x = x.reshape(B, O, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: y = x @ (W * lr / sqrt(in))^T + b * lr, then activation."""

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        lrelu: bool = False,  # leaky ReLU(0.2) times sqrt(2) after the bias, else linear
        lr_multiplier: float = 1.0,  # learning-rate multiplier folded into the runtime gains
        bias_init: float = 0.0,  # initial bias value
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.lrelu = in_features, out_features, lrelu
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        w = self.weight * self.weight_gain
        b = self.bias if self.bias_gain == 1 else self.bias * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, lrelu=True, gain=LRELU_GAIN)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, lrelu={self.lrelu}"


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x (B, F) divided by the root mean square over F."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU (optionally upsampling x2)."""

    resample_filter: torch.Tensor
    noise_const: torch.Tensor

    def __init__(
        self,
        in_channels: int,  # I
        out_channels: int,  # O
        w_dim: int,  # width of the style vector w
        resolution: int,  # output resolution (side of noise_const)
        up: int = 1,  # 1 or 2
        conv_clamp: float | None = None,  # clamp outputs to +-conv_clamp
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("resample_filter", fir_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused: bool = False) -> torch.Tensor:
        """x (B, I, H, W), w (B, w_dim) -> (B, O, H*up, W*up)."""
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            B = x.shape[0]
            noise = torch.randn([B, 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise, up=self.up, resample_filter=self.resample_filter, fused=fused)
        return bias_act(x, self.bias, lrelu=True, gain=LRELU_GAIN, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"I={self.in_channels}, O={self.out_channels}, res={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """1x1 modulated convolution without demodulation to the image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: [const |] conv0, conv1, torgb.

    ``upsample`` False gives EG3D's SynthesisBlockNoUp (conv0 keeps the resolution and the
    incoming image is not upsampled). A block with ``in_channels == 0`` starts from a learned
    4x4 constant and has no conv0.
    """

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,  # 0 for the first block
        out_channels: int,
        w_dim: int,
        resolution: int,  # output resolution of this block
        img_channels: int,  # channels of the skip image (96 for tri-planes, 3 for RGB)
        upsample: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.upsample = upsample
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        self.register_buffer("resample_filter", fir_filter())
        if in_channels != 0:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        fused: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, I, r, r) or None, img (B, img_channels, r', r') or None, ws (B, num_conv + 1, w_dim)."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)  # broadcast, not copied (no Tile in ONNX)
        else:
            assert x is not None
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        if img is not None and self.upsample:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused=fused)
        img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"I={self.in_channels}, O={self.out_channels}, res={self.resolution}, upsample={self.upsample}"


class MappingNetwork(nn.Module):
    """(z, c) -> ws (B, num_ws, w_dim): normalised z and embedded camera, then an MLP, then truncation."""

    w_avg: torch.Tensor

    def __init__(
        self,
        z_dim: int,  # latent width
        c_dim: int,  # conditioning width (25 camera values); 0 for none
        w_dim: int,  # style width
        num_ws: int,  # number of broadcast copies of w
        num_layers: int = 2,  # MLP depth
        lr_multiplier: float = 0.01,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        embed = w_dim if c_dim > 0 else 0
        self.register_buffer("w_avg", torch.zeros([w_dim]))
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed)
        widths = [z_dim + embed] + [w_dim] * num_layers
        self.num_layers = num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(widths[i], widths[i + 1], lrelu=True, lr_multiplier=lr_multiplier))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """z (B, z_dim), c (B, c_dim) -> ws (B, num_ws, w_dim)."""
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            layer: FullyConnectedLayer = getattr(self, f"fc{i}")
            x = layer(x)
        x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            head = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
            x = torch.cat([head, x[:, cutoff:]], dim=1)
        return x


class SynthesisNetwork(nn.Module):
    """StyleGAN2 'skip' synthesis from 4x4 to ``img_resolution``: ws (B, num_ws, w_dim) -> (B, img_channels, H, W)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,  # output side (a power of two >= 4)
        img_channels: int,  # output channels
        channel_base: int,  # channels at resolution r = min(channel_base // r, channel_max)
        channel_max: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.img_resolution, self.img_channels = img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        if 2**log2 != img_resolution or img_resolution < 4:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        ch = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(ch[r // 2] if r > 4 else 0, ch[r], w_dim, r, img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{r}", block)
        self.num_ws += 1  # the last torgb

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be (B, {self.num_ws}, w_dim), got {tuple(ws.shape)}")
        x = img = None
        w_idx = 0
        for r in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{r}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused=fused)
        assert img is not None
        return img


class Backbone(nn.Module):
    """The tri-plane StyleGAN2 generator: ``synthesis`` (ws -> planes) and ``mapping`` ((z, c) -> ws)."""

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, channel_base: int, channel_max: int, mapping_layers: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, 256, 96, channel_base, channel_max, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers)
