"""Tests for nerfgan.teacher.stylegan2: modulated convolution (fused and non-fused paths against an
independent float64 reference), upsampling, the fully connected layer, mapping truncation, the
synthesis network's w layout, and fused == non-fused on the fixture's teacher.

The float64 references below are written from the published StyleGAN2 equations, not from the library code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nerfgan.teacher.stylegan2 import (
    FullyConnectedLayer,
    MappingNetwork,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
    fir_filter,
    modulated_conv2d,
    upsample2d,
)

FIR_1D = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0  # outer(FIR_1D, FIR_1D) = outer([1,3,3,1], [1,3,3,1]) / 64


def max_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# ----------------------------------------------------------------------------------------------
# float64 references
# ----------------------------------------------------------------------------------------------


def fir4x4(x: np.ndarray, pad_before: int, pad_after: int, gain: float) -> np.ndarray:
    """Zero-pad the last two axes, then y[i, j] = gain * sum_{a,b} f[a, b] x[i+a, j+b] with the 4x4 FIR.

    The filter is symmetric, so correlation and convolution agree.
    """
    f = np.outer(FIR_1D, FIR_1D) * gain
    xp = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad_before, pad_after)] * 2)
    H, W = xp.shape[-2] - 3, xp.shape[-1] - 3
    y = np.zeros(x.shape[:-2] + (H, W))
    for a in range(4):
        for b in range(4):
            y += f[a, b] * xp[..., a : a + H, b : b + W]
    return y


def upsample2d_ref(x: np.ndarray) -> np.ndarray:
    """Zero insertion (samples at even indices), pad 2 before / 1 after, 4x4 FIR times 4."""
    H, W = x.shape[-2:]
    z = np.zeros(x.shape[:-2] + (2 * H, 2 * W))
    z[..., ::2, ::2] = x
    return fir4x4(z, 2, 1, gain=4.0)


def modconv_ref(
    x: np.ndarray, weight: np.ndarray, styles: np.ndarray, noise: np.ndarray | None, up: int, demodulate: bool
) -> np.ndarray:
    """Per sample: W' = W * s[in]; optional d[out] = 1/sqrt(sum W'^2 + 1e-8); conv; + noise."""
    B = x.shape[0]
    O, I, K, _ = weight.shape
    outs = []
    for b in range(B):
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / np.sqrt((w**2).sum(axis=(1, 2, 3)) + 1e-8)[:, None, None, None]
        xb = x[b]  # (I, H, W)
        H, W = xb.shape[1:]
        if up == 1:
            y = F.conv2d(torch.from_numpy(xb[None]), torch.from_numpy(w), padding=K // 2)[0].numpy()
        else:
            # Transposed conv, stride 2, weight NOT flipped: every input pixel (h, w) scatters
            # W'[:, :, a, b] x[:, h, w] to output (2h + a, 2w + b); output (2H + 1)^2 for K = 3.
            y = np.zeros((O, 2 * (H - 1) + K, 2 * (W - 1) + K))
            for a in range(K):
                for c in range(K):
                    y[:, a : a + 2 * H : 2, c : c + 2 * W : 2] += np.einsum("oi,ihw->ohw", w[:, :, a, c], xb)
            # Then pad 1 on every side and filter with the FIR times 4: (2H + 1)^2 -> (2H)^2.
            y = fir4x4(y, 1, 1, gain=4.0)
        outs.append(y)
    out = np.stack(outs)
    if noise is not None:
        out = out + noise
    return out


# ----------------------------------------------------------------------------------------------
# modulated_conv2d
# ----------------------------------------------------------------------------------------------


def modconv_inputs(up: int, kernel: int, with_noise: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, I, O, H = 3, 6, 5, 7
    x = torch.randn(B, I, H, H, generator=g)
    weight = torch.randn(O, I, kernel, kernel, generator=g)
    styles = 1 + 0.5 * torch.randn(B, I, generator=g)  # affine outputs sit around their bias init 1
    noise = 0.3 * torch.randn(B, 1, H * up, H * up, generator=g) if with_noise else None
    return x, weight, styles, noise


CASES = [
    # (up, kernel, demodulate, noise)
    (1, 3, True, True),
    (1, 3, False, True),
    (2, 3, True, True),
    (2, 3, False, True),
    (1, 3, True, False),
    (2, 3, True, False),
    (1, 1, False, False),  # torgb
]


@pytest.mark.parametrize("up, kernel, demodulate, with_noise", CASES)
def test_modulated_conv2d_fused_equals_non_fused_and_reference(up, kernel, demodulate, with_noise):
    x, weight, styles, noise = modconv_inputs(up, kernel, with_noise)
    if not demodulate:
        # As ToRGBLayer does (styles * 1/sqrt(fan-in)), so that outputs stay O(1) like in the model.
        styles = styles / math.sqrt(weight[0].numel())
    kw = dict(noise=noise, up=up, demodulate=demodulate, resample_filter=fir_filter())
    fused = modulated_conv2d(x, weight, styles, fused=True, **kw)
    plain = modulated_conv2d(x, weight, styles, fused=False, **kw)
    assert fused.shape == plain.shape == (3, 5, 7 * up, 7 * up)
    ref = modconv_ref(
        x.double().numpy(), weight.double().numpy(), styles.double().numpy(),
        None if noise is None else noise.double().numpy(), up, demodulate,
    )
    # Same math, different float32 op order on O(1) outputs (sums of up to 54 products):
    # rounding ~1e-6, checked at 1e-5.
    assert max_err(fused, plain) <= 1e-5
    assert max_err(fused, ref) <= 1e-5
    assert max_err(plain, ref) <= 1e-5


def test_modulated_conv2d_rejects_wrong_style_shape():
    x, weight, styles, _ = modconv_inputs(1, 3, False)
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, weight, styles[:, :-1])


def test_non_fused_demodulation_normalises_each_output_channel():
    """With demodulation, each per-sample effective filter has unit L2 norm (up to the 1e-8)."""
    x, weight, styles, _ = modconv_inputs(1, 3, False)
    O, I, K, _ = weight.shape
    # A unit impulse at the centre of input channel i reads out the (flipped) effective filters
    # W'[:, i] d of every output channel; summing their energy over i gives sum W'^2 d^2 = 1.
    for fused in (False, True):
        energy = torch.zeros(3, O, dtype=torch.float64)
        for i in range(I):
            impulse = torch.zeros(3, I, 7, 7)
            impulse[:, i, 3, 3] = 1.0
            y = modulated_conv2d(impulse, weight, styles, fused=fused)[:, :, 2:5, 2:5]
            energy += y.double().square().sum(dim=(2, 3))
        assert max_err(energy, torch.ones(3, O, dtype=torch.float64)) <= 1e-5


# ----------------------------------------------------------------------------------------------
# upsample2d
# ----------------------------------------------------------------------------------------------


def test_upsample2d_matches_the_described_filter():
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = upsample2d_ref(x.numpy())
    got64 = upsample2d(x, fir_filter().double())
    assert got64.shape == (2, 3, 10, 12)
    assert max_err(got64, ref) <= 1e-12  # float64 both sides
    got32 = upsample2d(x.float(), fir_filter())
    assert max_err(got32, ref) <= 1e-6  # |x| <= ~4, a sum of 4 taps in float32


def test_upsample2d_preserves_a_constant_away_from_the_border():
    x = torch.full((1, 2, 6, 6), 2.5)
    y = upsample2d(x, fir_filter())
    # Interior outputs see two taps (1/8 + 3/8) * 2 per axis = 1 of real samples.
    assert max_err(y[..., 1:-1, 1:-1], torch.full((1, 2, 10, 10), 2.5)) <= 1e-6
    # First/last row and column lose the sample outside the image: 3/8 * 2 = 0.75 per axis.
    assert max_err(y[..., 0, 1:-1], torch.full((1, 2, 10), 2.5 * 0.75)) <= 1e-6
    assert max_err(y[..., -1, 1:-1], torch.full((1, 2, 10), 2.5 * 0.75)) <= 1e-6
    assert max_err(y[..., 0, 0], torch.full((1, 2), 2.5 * 0.75**2)) <= 1e-6


# ----------------------------------------------------------------------------------------------
# FullyConnectedLayer, MappingNetwork, SynthesisNetwork
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lrelu", [False, True])
@pytest.mark.parametrize("lr", [1.0, 0.01])
def test_fully_connected_layer(lrelu, lr):
    torch.manual_seed(0)
    fc = FullyConnectedLayer(7, 5, lrelu=lrelu, lr_multiplier=lr, bias_init=0.3)
    with torch.no_grad():
        fc.bias.add_(torch.randn(5) * 20)
    x = torch.randn(4, 7)
    W, b = fc.weight.detach().double(), fc.bias.detach().double()
    ref = x.double() @ (W * lr / math.sqrt(7)).T + b * lr
    if lrelu:
        ref = F.leaky_relu(ref, 0.2) * math.sqrt(2)
    assert max_err(fc(x), ref) <= 1e-5  # O(1) values, 7-term float32 dot products


def test_mapping_truncation_cutoff_only_touches_the_first_ws():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=16, c_dim=25, w_dim=8, num_ws=14, num_layers=2)
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(8))
    z, c = torch.randn(3, 16), torch.randn(3, 25)
    with torch.no_grad():
        full = mapping(z, c)
        cut = mapping(z, c, truncation_psi=0.6, truncation_cutoff=5)
        everything = mapping(z, c, truncation_psi=0.6)  # cutoff None = all num_ws
        at_avg = mapping(z, c, truncation_psi=0.0, truncation_cutoff=5)
    assert full.shape == (3, 14, 8)
    assert torch.equal(full, full[:, :1].expand_as(full))  # 14 broadcast copies
    w_avg = mapping.w_avg.double()
    lerp = w_avg + 0.6 * (full.double() - w_avg)
    assert max_err(cut[:, :5], lerp[:, :5]) <= 1e-6
    assert torch.equal(cut[:, 5:], full[:, 5:])
    assert max_err(everything, lerp) <= 1e-6
    assert max_err(at_avg[:, :5], w_avg.expand(3, 5, 8)) <= 1e-6


def test_synthesis_network_num_ws_and_w_layout():
    """256 px -> 14 ws; b4 uses ws[0], ws[1]; block k >= 1 uses ws[2k-1] (conv0), ws[2k] (conv1), ws[2k+1] (torgb)."""
    torch.manual_seed(0)
    net = SynthesisNetwork(w_dim=4, img_resolution=256, img_channels=3, channel_base=512, channel_max=2)
    assert net.num_ws == 14
    assert net.block_resolutions == [4, 8, 16, 32, 64, 128, 256]
    seen: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(_module, args):
            seen[name] = args[1]

        return hook

    for name, module in net.named_modules():
        if isinstance(module, (SynthesisLayer, ToRGBLayer)):
            module.register_forward_pre_hook(record(name))
    ws = torch.randn(2, 14, 4)
    with torch.no_grad():
        img = net(ws, noise_mode="none")
    assert img.shape == (2, 3, 256, 256)
    expected = {"b4.conv1": 0, "b4.torgb": 1}
    for k, r in enumerate([8, 16, 32, 64, 128, 256], start=1):
        expected.update({f"b{r}.conv0": 2 * k - 1, f"b{r}.conv1": 2 * k, f"b{r}.torgb": 2 * k + 1})
    assert set(seen) == set(expected)
    for name, idx in expected.items():
        assert torch.equal(seen[name], ws[:, idx]), name
    with pytest.raises(ValueError, match="ws must be"):
        net(torch.randn(2, 13, 4))


def test_non_fused_synthesis_runs_with_any_batch_size():
    torch.manual_seed(0)
    net = SynthesisNetwork(w_dim=8, img_resolution=32, img_channels=6, channel_base=128, channel_max=8)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
        ws = torch.randn(5, net.num_ws, 8)
        full = net(ws, noise_mode="const", fused=False)
        for B in (1, 2, 5):
            plain = net(ws[:B], noise_mode="const", fused=False)
            fused = net(ws[:B], noise_mode="const", fused=True)
            assert plain.shape == (B, 6, 32, 32)
            # Samples are independent: a sub-batch equals the rows of the full batch.
            assert max_err(plain, full[:B]) <= 1e-5
            assert max_err(plain, fused) <= 1e-5


def test_fused_and_non_fused_teacher_agree_on_the_fixture(reference, tiny_teacher):
    ws = torch.from_numpy(reference.outputs["ws"][0])
    c = torch.from_numpy(reference.c[0])
    with torch.no_grad():
        plain = tiny_teacher.synthesis(ws, c, fused=False)
        fused = tiny_teacher.synthesis(ws, c, fused=True)
    # FACTS 12: upstream's own two paths differ by <= 5e-6 on these outputs; 2e-5 for the final image.
    assert max_err(plain.image, fused.image) <= 2e-5
    assert max_err(plain.image_raw, fused.image_raw) <= 2e-5
    assert max_err(plain.feature_image, fused.feature_image) <= 2e-5
    assert max_err(plain.image_depth, fused.image_depth) <= 2e-5
