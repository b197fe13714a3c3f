"""Tests for nerfgan.student.discriminator: shapes for any batch size, dependence on every input,
gradients to every parameter, R1 through the network, the downsampling convolution and the
minibatch std against float64 references, the camera noise, the config, and the parameter count
of the FFHQ-512 configuration against a closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nerfgan.errors import ConfigError
from nerfgan.student.discriminator import (
    Conv2dLayer,
    Discriminator,
    DiscriminatorConfig,
    MinibatchStdLayer,
    mbstd_group,
)
from nerfgan.student.losses import r1_penalty

FIR_1D = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
TINY = dict(channel_base=512, channel_max=32, mapping_layers=2)


def inputs(B: int, H: int, R: int, seed: int = 0, c_dim: int = 25):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 3, H, H, generator=g) * 2 - 1, torch.rand(B, 3, R, R, generator=g) * 2 - 1,
            torch.randn(B, c_dim, generator=g))


@pytest.fixture(scope="module")
def d64():
    torch.manual_seed(0)
    return Discriminator(64, 32, **TINY).eval()


@pytest.mark.parametrize("res", [(64, 32), (128, 64)])
@pytest.mark.parametrize("B", [1, 3, 5])
def test_output_shape_any_batch(res, B):
    torch.manual_seed(1)
    D = Discriminator(*res, **TINY)
    out = D(*inputs(B, *res))
    assert out.shape == (B, 1) and torch.isfinite(out).all()


def test_depends_on_camera_image_and_raw(d64):
    img, raw, c = inputs(3, 64, 32)
    base = d64(img, raw, c)
    img2, raw2, c2 = inputs(3, 64, 32, seed=1)
    for changed in (d64(img, raw, c2), d64(img2, raw, c), d64(img, raw2, c)):
        assert (changed - base).abs().min() > 1e-6


def test_output_of_a_sample_does_not_depend_on_the_others_when_groups_are_single(d64):
    img, raw, c = inputs(5, 64, 32)  # B = 5: minibatch-std groups of 1
    full = d64(img, raw, c)
    torch.testing.assert_close(d64(img[2:3], raw[2:3], c[2:3]), full[2:3])


def test_gradient_reaches_every_parameter():
    torch.manual_seed(2)
    D = Discriminator(64, 32, **TINY)
    D(*inputs(4, 64, 32)).square().sum().backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_r1_through_the_discriminator(d64):
    img, raw, c = inputs(3, 64, 32)
    img.requires_grad_(True)
    raw.requires_grad_(True)
    pen = r1_penalty(d64(img, raw, c), [img, raw])
    assert pen.shape == (3,) and (pen > 0).all()
    pen.mean().backward()  # double backward through conv, FIR and bilinear upsampling
    assert d64.b64.conv0.weight.grad is not None and d64.b64.conv0.weight.grad.abs().sum() > 0
    d64.zero_grad(set_to_none=True)


def test_c_noise_only_in_training_mode():
    torch.manual_seed(3)
    D = Discriminator(64, 32, c_noise=0.5, **TINY)
    img, raw, c = inputs(4, 64, 32)
    D.eval()
    torch.testing.assert_close(D(img, raw, c), D(img, raw, c))
    D.train()
    assert (D(img, raw, c) - D(img, raw, c)).abs().max() > 1e-6
    out1 = D(img[:1], raw[:1], c[:1])  # B = 1: batch std undefined, no noise
    torch.testing.assert_close(out1, D(img[:1], raw[:1], c[:1]))


def test_unconditional_and_4x4():
    torch.manual_seed(4)
    D = Discriminator(32, 16, c_dim=0, **TINY)
    assert not hasattr(D, "mapping")
    img, raw, c = inputs(2, 32, 16, c_dim=0)
    assert D(img, raw, c).shape == (2, 1)
    D4 = Discriminator(4, 4, **TINY)
    assert D4(*inputs(3, 4, 4)).shape == (3, 1)


def test_shape_checks(d64):
    img, raw, c = inputs(2, 64, 32)
    with pytest.raises(ValueError, match="image_raw"):
        d64(img, raw[:, :, :16, :16], c)
    with pytest.raises(ValueError, match="image must"):
        d64(img[:, :, :32, :32], raw, c)
    with pytest.raises(ValueError, match="c must"):
        d64(img, raw, c[:, :16])


# ----------------------------------------------------------------------------------------------
# building blocks against float64 references
# ----------------------------------------------------------------------------------------------


def down_conv_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pad 1 + K // 2, 4x4 FIR, 'valid' KxK correlation, keep even positions. x (B, I, H, W), w (O, I, K, K)."""
    K = w.shape[-1]
    p = 1 + K // 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (p, p), (p, p)])
    f = np.outer(FIR_1D, FIR_1D)
    Hf, Wf = xp.shape[2] - 3, xp.shape[3] - 3
    y = np.zeros(x.shape[:2] + (Hf, Wf))
    for a in range(4):
        for b in range(4):
            y += f[a, b] * xp[:, :, a : a + Hf, b : b + Wf]
    Ho, Wo = Hf - K + 1, Wf - K + 1
    z = np.zeros((x.shape[0], w.shape[0], Ho, Wo))
    for a in range(K):
        for b in range(K):
            z += np.einsum("oi,bihw->bohw", w[:, :, a, b], y[:, :, a : a + Ho, b : b + Wo])
    return z[:, :, ::2, ::2]


@pytest.mark.parametrize("K", [1, 3])
def test_downsampling_conv_matches_reference(K):
    torch.manual_seed(5)
    layer = Conv2dLayer(4, 5, K, bias=False, lrelu=False, down=2)
    x = torch.randn(2, 4, 10, 10)
    got = layer(x)
    assert got.shape == (2, 5, 5, 5)
    want = down_conv_ref(x.numpy(), layer.weight.detach().double().numpy() * layer.weight_gain)
    np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=0, atol=1e-5)


def test_mbstd_groups_and_values():
    assert [mbstd_group(b, 4) for b in (1, 2, 3, 4, 5, 6, 7, 8, 12)] == [1, 2, 3, 4, 1, 3, 1, 4, 4]
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    y = MinibatchStdLayer(4)(x)  # G = 3, two groups: samples {0, 2, 4} and {1, 3, 5}
    assert y.shape == (6, 4, 2, 2)
    torch.testing.assert_close(y[:, :3], x)
    for members in ([0, 2, 4], [1, 3, 5]):
        xs = x[members].numpy()
        want = np.sqrt(xs.var(axis=0) + 1e-8).mean()
        for i in members:
            np.testing.assert_allclose(y[i, 3].numpy(), np.full((2, 2), want), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# config and size
# ----------------------------------------------------------------------------------------------


def expected_parameter_count(cfg: DiscriminatorConfig) -> int:
    ch = cfg.channels
    n = 6 * ch(cfg.img_resolution) + ch(cfg.img_resolution)  # fromrgb
    r = cfg.img_resolution
    while r > 4:
        t, o = ch(r), ch(r // 2)
        n += (t * t * 9 + t) + (t * o * 9 + o) + t * o  # conv0, conv1, skip (no bias)
        r //= 2
    c4, m = ch(4), cfg.resolved_cmap_dim
    n += (c4 + 1) * c4 * 9 + c4 + c4 * 16 * c4 + c4 + c4 * m + m  # conv, fc, out
    n += cfg.c_dim * m + m + cfg.mapping_layers * (m * m + m)  # camera mapping
    return n


def test_ffhq512_parameter_count():
    cfg = DiscriminatorConfig(img_resolution=512, raw_resolution=128)
    D = Discriminator.from_config(cfg)
    n = sum(p.numel() for p in D.parameters())
    print(f"FFHQ-512 dual discriminator: {n:,} parameters")
    assert n == expected_parameter_count(cfg)
    assert 25_000_000 < n < 35_000_000  # StyleGAN2's 512px discriminator is ~29M
    assert all(k.endswith(("weight", "bias")) for k in D.state_dict())  # FIR buffers are not saved


def test_config_round_trip_and_validation():
    cfg = DiscriminatorConfig(img_resolution=128, raw_resolution=64, channel_base=2048, c_noise=0.1)
    assert DiscriminatorConfig.from_json(cfg.to_json()) == cfg
    assert Discriminator.from_config(cfg).config == cfg
    assert cfg.resolved_cmap_dim == min(2048 // 4, 512)  # None: the channel count at 4x4
    assert DiscriminatorConfig(128, 64, cmap_dim=64).resolved_cmap_dim == 64
    for bad in (dict(img_resolution=96), dict(raw_resolution=256), dict(c_noise=-1.0), dict(mbstd_group_size=0),
                dict(c_dim=0, cmap_dim=16)):
        with pytest.raises(ConfigError):
            DiscriminatorConfig(**{"img_resolution": 128, "raw_resolution": 64, **bad})
    with pytest.raises(ConfigError, match="malformed"):
        DiscriminatorConfig.from_json('{"img_resolution": 128}')
