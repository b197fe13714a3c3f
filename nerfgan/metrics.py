"""Image metrics in numpy: the figures nerfgan.student.losses computes in torch while training.

Images are (B, C, H, W), RGB about [-1, 1]; both sides are clipped to [-1, 1] (data range 2) before
any figure. numpy only: the runtime's parity report uses it without torch.
"""

from __future__ import annotations

import numpy as np

PSNR_CAP_DB = 100.0  # mean_psnr replaces +inf (identical images) by this value


def _pair(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"{name}: expected two (B, C, H, W) arrays of one shape, got {a.shape} and {b.shape}")
    return np.clip(a, -1.0, 1.0), np.clip(b, -1.0, 1.0)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample PSNR in dB of images clipped to [-1, 1] (data range 2): (B, C, H, W) x2 -> (B,); inf if equal."""
    a, b = _pair(a, b, "psnr")
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return np.asarray(10.0 * np.log10(4.0 / mse))


def _blur_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    k = len(g)
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    y = sum(g[i] * x[..., :, i:i + w] for i in range(k))
    return np.asarray(sum(g[i] * y[..., i:i + h, :] for i in range(k)))


def ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-sample SSIM of images clipped to [-1, 1]: (B, C, H, W) x2 -> (B,).

    nerfgan.student.losses.ssim in float64 numpy (data range 2, 'valid' positions, the window shrunk
    to the image when smaller), after the clipping that parity applies to every figure.
    """
    a, b = _pair(a, b, "ssim")
    a, b = a + 1.0, b + 1.0  # [0, 2]: the luminance term is not shift-invariant
    k = min(window, a.shape[-2], a.shape[-1])
    x = np.arange(k) - (k - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    g /= g.sum()
    c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
    mu_a, mu_b = _blur_valid(a, g), _blur_valid(b, g)
    var_a = _blur_valid(a * a, g) - mu_a**2
    var_b = _blur_valid(b * b, g) - mu_b**2
    cov = _blur_valid(a * b, g) - mu_a * mu_b
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return np.asarray(s.mean(axis=(1, 2, 3)))


def mean_psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """Average of the per-sample PSNR (dB), each first capped at ``cap`` (identical images give +inf)."""
    return float(np.mean(np.minimum(psnr(a, b), cap)))
