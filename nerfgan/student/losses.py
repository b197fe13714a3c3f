"""Losses and image metrics for distilling EG3D into the student.

Images are (B, C, H, W) in [-1, 1] (data range 2) unless a function says otherwise.

- Metrics: :func:`psnr` and :func:`ssim` give one value per sample, shape (B,).
- Reconstruction: :func:`l1`, :func:`ssim_loss`, :class:`ReconstructionWeights` and
  :func:`reconstruction_loss` (student outputs against the teacher's renders of the same z, c).
- Adversarial (StyleGAN2's non-saturating logistic GAN): :func:`g_nonsaturating`,
  :func:`d_logistic` and the R1 gradient penalty :func:`r1_penalty`.

nerfgan's choice, not a published recipe: L1 on the low-resolution feature image and its RGB, and L1 +
(1 - SSIM) on the final image. A perceptual loss would need pretrained network weights, which nerfgan never
downloads; SSIM is the structural term that needs none.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from nerfgan.errors import ConfigError
from nerfgan.metrics import PSNR_CAP_DB  # mean_psnr replaces +inf (identical images) by this value

SSIM_K1 = 0.01  # Wang et al. 2004
SSIM_K2 = 0.03


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"{name}: expected two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, value_min: float = -1.0) -> torch.Tensor:
    """Per-sample PSNR in dB: (B, C, H, W) x2 -> (B,).

    Both images are clipped to [value_min, value_min + data_range] ([-1, 1] by default), then
    PSNR = 10 log10(data_range^2 / MSE) with the MSE averaged over C, H, W. Identical images give
    +inf (MSE 0); :func:`mean_psnr` caps that for averaging.
    """
    _check_pair(a, b, "psnr")
    lo, hi = value_min, value_min + data_range
    d = a.clamp(lo, hi).to(torch.float32) - b.clamp(lo, hi).to(torch.float32)
    mse = d.square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


@torch.no_grad()
def mean_psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, cap: float = PSNR_CAP_DB) -> float:
    """Average of the per-sample PSNR (dB) over the batch, each value first capped at ``cap`` dB.

    Averaging per-sample values (not the PSNR of the batch MSE) is how distillation papers usually report PSNR;
    the cap keeps one identical pair (+inf) from making the mean infinite.
    """
    return float(psnr(a, b, data_range=data_range).clamp(max=cap).mean())


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(size,) normalised 1D Gaussian centred at (size - 1) / 2."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of every channel: (N, C, H, W) -> (N, C, H-k+1, W-k+1)."""
    C, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.reshape(1, 1, 1, k).expand(C, 1, 1, k), groups=C)
    return F.conv2d(x, g.reshape(1, 1, k, 1).expand(C, 1, k, 1), groups=C)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
    value_min: float = -1.0,
) -> torch.Tensor:
    """Per-sample SSIM (Wang et al. 2004): (B, C, H, W) x2 -> (B,). Differentiable; no clipping.

    K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 with L = ``data_range``; local statistics
    from a ``window`` x ``window`` Gaussian (std ``sigma`` pixels) per channel, 'valid' positions
    only; the SSIM map is averaged over channels and positions.

    SSIM's luminance term is not shift-invariant, so the images are first shifted by
    ``-value_min`` to [0, data_range]. The result equals the usual SSIM of the images mapped to
    [0, 1] with data range 1 (SSIM is invariant to scaling images and L together).

    Images smaller than the window: the window shrinks to min(window, H, W) (same sigma,
    renormalised), so a 4x4 image uses a 4x4 window and one 'valid' position.
    """
    _check_pair(a, b, "ssim")
    k = min(window, a.shape[-2], a.shape[-1])
    dtype = torch.promote_types(a.dtype, torch.float32)
    a, b = a.to(dtype) - value_min, b.to(dtype) - value_min
    g = gaussian_window(k, sigma, dtype=dtype, device=a.device)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    B = a.shape[0]
    # Second moments of images centred per (sample, channel): E[x^2] - E[x]^2 then cancels far
    # less in float32 (exact 0 for a constant image); the centring constants cancel algebraically.
    ma, mb = a.mean(dim=(2, 3), keepdim=True).detach(), b.mean(dim=(2, 3), keepdim=True).detach()
    a, b = a - ma, b - mb
    # one filtering pass over the five maps: E[a], E[b], E[a^2], E[b^2], E[ab] (local, centred)
    stats = _blur_valid(torch.cat([a, b, a * a, b * b, a * b], dim=0), g)
    mu_a, mu_b, e_aa, e_bb, e_ab = stats.split(B, dim=0)
    var_a, var_b, cov = e_aa - mu_a.square(), e_bb - mu_b.square(), e_ab - mu_a * mu_b
    mu_a, mu_b = mu_a + ma, mu_b + mb
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(1, 2, 3))


# ----------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over all elements (scalar)."""
    if a.shape != b.shape:
        raise ValueError(f"l1: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return (a - b).abs().mean()


def ssim_loss(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """1 - mean SSIM over the batch (scalar, 0 for identical images)."""
    return 1.0 - ssim(a, b, data_range=data_range).mean()


@dataclass(frozen=True)
class ReconstructionWeights:
    """Weights of the distillation terms (student vs teacher, same z and camera). Our defaults.

    nerfgan's choice: L1 terms and SSIM on the final image (a perceptual loss would need downloaded
    pretrained weights, which nerfgan never fetches). A weight of 0 skips its term.
    """

    feature_l1: float = 1.0  # L1 on the whole (B, 32, R, R) feature image
    raw_rgb_l1: float = 1.0  # L1 on the low-resolution RGB (B, 3, R, R) = feature image[:, :3]
    highres_l1: float = 1.0  # L1 on the final (B, 3, H, W) image
    highres_ssim: float = 1.0  # 1 - SSIM on the final image

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"reconstruction weight {name} must be finite and >= 0, got {value}")


def reconstruction_loss(
    feature_image: torch.Tensor,  # student (B, 32, R, R)
    feature_image_teacher: torch.Tensor,  # teacher (B, 32, R, R)
    image: torch.Tensor,  # student final image (B, 3, H, W)
    image_teacher: torch.Tensor,  # teacher final image (B, 3, H, W)
    weights: ReconstructionWeights = ReconstructionWeights(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the reconstruction terms -> (scalar loss, {term name: unweighted value}).

    The low-resolution RGB is taken as channels :3 of the feature images (EG3D's image_raw).
    Terms with weight 0 are neither computed nor reported.
    """
    terms: dict[str, torch.Tensor] = {}
    if weights.feature_l1:
        terms["feature_l1"] = l1(feature_image, feature_image_teacher)
    if weights.raw_rgb_l1:
        terms["raw_rgb_l1"] = l1(feature_image[:, :3], feature_image_teacher[:, :3])
    if weights.highres_l1:
        terms["highres_l1"] = l1(image, image_teacher)
    if weights.highres_ssim:
        terms["highres_ssim"] = ssim_loss(image, image_teacher)
    total = sum((getattr(weights, n) * v for n, v in terms.items()), image.new_zeros([]))
    return total, terms


# ----------------------------------------------------------------------------------------------
# adversarial (StyleGAN2 non-saturating logistic loss, R1)
# ----------------------------------------------------------------------------------------------


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss: mean softplus(-D(fake)) = -log sigmoid(D(fake)). fake_logits (B, 1) -> scalar."""
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: mean softplus(D(fake)) + mean softplus(-D(real)). (B, 1) x2 -> scalar."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_inputs: list[torch.Tensor]) -> torch.Tensor:
    """R1: per-sample squared gradient norm of D(real) w.r.t. its inputs, summed over inputs -> (B,).

    ``real_inputs`` are the tensors D was called on (each (B, ...), ``requires_grad=True``; for
    the dual discriminator both ``image`` and ``image_raw``, as EG3D does). The graph is kept
    (create_graph=True) so the penalty can be minimised. Use as
    ``(gamma / 2) * r1_penalty(logits, [image, image_raw]).mean()``.
    """
    if not real_inputs:
        raise ValueError("r1_penalty: real_inputs is empty")
    for i, x in enumerate(real_inputs):
        if not x.requires_grad:
            raise ValueError(f"r1_penalty: real_inputs[{i}] does not require grad (call .detach().requires_grad_() first)")
    grads = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return torch.stack([g.square().flatten(1).sum(dim=1) for g in grads]).sum(dim=0)
