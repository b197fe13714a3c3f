"""Tests for nerfgan.student.losses: PSNR and SSIM against analytic values and a float64 reference
written directly from Wang et al. 2004 (centred local moments, explicit window sums), the
reconstruction terms, and the GAN losses (values at known logits, R1 of linear / quadratic
discriminators).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nerfgan.errors import ConfigError
from nerfgan.student.losses import (
    PSNR_CAP_DB,
    ReconstructionWeights,
    d_logistic,
    g_nonsaturating,
    l1,
    mean_psnr,
    psnr,
    r1_penalty,
    reconstruction_loss,
    ssim,
    ssim_loss,
)


# ----------------------------------------------------------------------------------------------
# PSNR
# ----------------------------------------------------------------------------------------------


def test_psnr_constant_offset_known_values():
    d = torch.tensor([0.1, 0.5, 1.0])
    a = torch.zeros(3, 3, 8, 8)
    b = a + d.reshape(3, 1, 1, 1)
    got = psnr(a, b)
    assert got.shape == (3,)
    want = 10 * torch.log10(4.0 / d**2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert abs(float(got[2]) - 10 * math.log10(4.0)) < 1e-4  # 6.02 dB


def test_psnr_clips_both_images():
    a = torch.full((2, 3, 4, 4), 3.0)
    b = torch.full((2, 3, 4, 4), -3.0)
    torch.testing.assert_close(psnr(a, b), torch.zeros(2), rtol=0, atol=1e-5)  # clipped to 1 and -1: MSE 4
    same_after_clip = psnr(torch.full((1, 3, 4, 4), 1.5), torch.ones(1, 3, 4, 4))
    assert torch.isinf(same_after_clip).all()


def test_psnr_is_per_sample():
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[1] += 0.2
    got = psnr(a, b)
    assert torch.isinf(got[0]) and abs(float(got[1]) - 10 * math.log10(4 / 0.04)) < 1e-4


def test_mean_psnr_averages_per_sample_values_and_caps():
    a = torch.zeros(2, 3, 8, 8)
    b = a + torch.tensor([0.1, 0.2]).reshape(2, 1, 1, 1)
    want = (10 * math.log10(4 / 0.01) + 10 * math.log10(4 / 0.04)) / 2
    assert abs(mean_psnr(a, b) - want) < 1e-4
    b[0] = 0.0  # identical pair: +inf capped
    assert abs(mean_psnr(a, b) - (PSNR_CAP_DB + 10 * math.log10(4 / 0.04)) / 2) < 1e-4


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="psnr"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


# ----------------------------------------------------------------------------------------------
# SSIM: float64 reference from the definition
# ----------------------------------------------------------------------------------------------


def ssim_ref(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """SSIM of images in [-1, 1] mapped to [0, 1] (L = 1), per sample, with explicit window sums."""
    a, b = (a.astype(np.float64) + 1) / 2, (b.astype(np.float64) + 1) / 2
    B, C, H, W = a.shape
    k = min(window, H, W)
    t = np.arange(k) - (k - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    out = np.zeros(B)
    for n in range(B):
        vals = []
        for ch in range(C):
            for i in range(H - k + 1):
                for j in range(W - k + 1):
                    pa, pb = a[n, ch, i : i + k, j : j + k], b[n, ch, i : i + k, j : j + k]
                    mu_a, mu_b = (w * pa).sum(), (w * pb).sum()
                    var_a = (w * (pa - mu_a) ** 2).sum()
                    var_b = (w * (pb - mu_b) ** 2).sum()
                    cov = (w * (pa - mu_a) * (pb - mu_b)).sum()
                    lum = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
                    cs = (2 * cov + c2) / (var_a + var_b + c2)
                    vals.append(lum * cs)
        out[n] = np.mean(vals)
    return out


def correlated_pair(shape, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g) * 1.6 - 0.8
    b = (a + noise * torch.randn(shape, generator=g)).clamp(-1, 1)
    return a, b


def test_ssim_identical_is_one():
    a, _ = correlated_pair((2, 3, 16, 16), 0.0)
    torch.testing.assert_close(ssim(a, a), torch.ones(2), rtol=0, atol=1e-6)
    assert float(ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 2, 13, 18), (2, 1, 6, 7)])
def test_ssim_matches_float64_reference(shape):
    a, b = correlated_pair(shape, 0.3, seed=sum(shape))
    got = ssim(a, b)
    want = ssim_ref(a.numpy(), b.numpy())
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=1e-5)
    got64 = ssim(a.double(), b.double())
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64.numpy(), want, rtol=0, atol=1e-10)


def test_ssim_of_constant_images_is_the_luminance_term():
    p, q = 0.2, -0.4  # [0, 1] values 0.6, 0.3
    a, b = torch.full((1, 3, 12, 12), p), torch.full((1, 3, 12, 12), q)
    pu, qu, c1 = (p + 1) / 2, (q + 1) / 2, 0.01**2
    want = (2 * pu * qu + c1) / (pu**2 + qu**2 + c1)
    assert float(ssim(a, b)) == pytest.approx(want, abs=1e-6)


def test_ssim_is_symmetric_and_decreases_with_noise():
    a, b = correlated_pair((2, 3, 24, 24), 0.2, seed=3)
    torch.testing.assert_close(ssim(a, b), ssim(b, a), rtol=0, atol=1e-6)
    values = [float(ssim(*correlated_pair((2, 3, 24, 24), s, seed=4)).mean()) for s in (0.0, 0.05, 0.2, 0.5)]
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert all(x > y for x, y in zip(values, values[1:])), values


def test_ssim_gradients_flow():
    a, b = correlated_pair((2, 3, 16, 16), 0.3, seed=5)
    a.requires_grad_(True)
    ssim_loss(a, b).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------


def test_l1_value():
    assert float(l1(torch.zeros(2, 3), torch.full((2, 3), -0.5))) == pytest.approx(0.5)


def test_reconstruction_loss_terms_and_weights():
    g = torch.Generator().manual_seed(0)
    feat_s, feat_t = torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 32, 8, 8, generator=g)
    img_s, img_t = correlated_pair((2, 3, 16, 16), 0.3, seed=6)
    w = ReconstructionWeights(feature_l1=0.5, raw_rgb_l1=2.0, highres_l1=1.0, highres_ssim=3.0)
    total, terms = reconstruction_loss(feat_s, feat_t, img_s, img_t, w)
    assert set(terms) == {"feature_l1", "raw_rgb_l1", "highres_l1", "highres_ssim"}
    want = (0.5 * l1(feat_s, feat_t) + 2.0 * l1(feat_s[:, :3], feat_t[:, :3]) + l1(img_s, img_t)
            + 3.0 * ssim_loss(img_s, img_t))
    torch.testing.assert_close(total, want)
    total0, terms0 = reconstruction_loss(feat_s, feat_s, img_s, img_s, ReconstructionWeights(highres_ssim=0.0))
    assert "highres_ssim" not in terms0 and float(total0) == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_weights_are_validated():
    with pytest.raises(ConfigError, match="highres_l1"):
        ReconstructionWeights(highres_l1=-1.0)


# ----------------------------------------------------------------------------------------------
# GAN losses
# ----------------------------------------------------------------------------------------------


def test_gan_losses_at_known_logits():
    zero = torch.zeros(4, 1)
    assert float(g_nonsaturating(zero)) == pytest.approx(math.log(2))
    assert float(d_logistic(zero, zero)) == pytest.approx(2 * math.log(2))
    big = torch.full((4, 1), 30.0)
    assert float(d_logistic(big, -big)) == pytest.approx(0.0, abs=1e-10)
    assert float(g_nonsaturating(-big)) == pytest.approx(30.0, abs=1e-6)
    x = torch.tensor([[1.5], [-0.5]])
    assert float(g_nonsaturating(x)) == pytest.approx(np.mean(np.log1p(np.exp(-x.numpy()))), abs=1e-6)


def test_r1_of_linear_discriminator_is_the_squared_weight_norm():
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(3, 8, 8, generator=g, requires_grad=True)
    w2 = torch.randn(3, 4, 4, generator=g)
    x1 = torch.randn(5, 3, 8, 8, generator=g).requires_grad_(True)
    x2 = torch.randn(5, 3, 4, 4, generator=g).requires_grad_(True)
    logits = ((x1 * w1).sum(dim=(1, 2, 3)) + (x2 * w2).sum(dim=(1, 2, 3)) + 0.7).unsqueeze(1)
    pen = r1_penalty(logits, [x1, x2])
    assert pen.shape == (5,)
    want = (w1.detach().square().sum() + w2.square().sum()).expand(5)
    torch.testing.assert_close(pen.detach(), want)
    (grad_w1,) = torch.autograd.grad(pen.mean(), [w1])  # the penalty is differentiable (create_graph)
    torch.testing.assert_close(grad_w1, 2 * w1.detach())


def test_r1_is_per_sample():
    x = torch.randn(4, 2, 3, 3).requires_grad_(True)
    logits = 0.5 * x.square().sum(dim=(1, 2, 3))  # gradient x: penalty |x_i|^2
    torch.testing.assert_close(r1_penalty(logits, [x]).detach(), x.detach().square().sum(dim=(1, 2, 3)))


def test_r1_requires_grad_inputs():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(x.sum(1), [x])
