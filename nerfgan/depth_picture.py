"""Depth pictures that explain themselves: a colour scale with its range in world units, empty pixels marked.

    img = depth_picture(depth, opacity, size=128)    # depth, opacity (H, W) float -> uint8 (H', W', 3)

Where the ray's accumulated opacity is below ``EMPTY_BELOW`` the pixel shows a grey checker ("nothing there")
instead of a depth: a volume renderer's depth there is the ratio of two sums of almost-zero weights (EG3D's
``sum(w t) / sum(w)``), a meaningless value that an image normalised to its own range shows as grey bands.
Surfaces run from bright yellow (near) through green and blue to dark purple (far), on the range of the
surfaces in view; a bar under the image and the footer give the two ends in world units (distance along the
ray from the camera). numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np

EMPTY_BELOW = 0.5
"""Pixels whose opacity is below this are empty (the mask IoU threshold of ``nerfgan scene score``)."""

# A perceptually ordered scale (viridis' published key colours at 0, 1/8, ..., 1), from far to near.
_SCALE = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                   [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)
_CHECKER = (236, 206)  # the two greys of the empty checker
_CHECK = 4  # checker square, pixels
_BAR = 10  # height of the colour bar, pixels


def colour_scale(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] (any shape; 0 far, 1 near) -> uint8 RGB (..., 3) on the scale."""
    x = np.clip(np.asarray(t, np.float64), 0, 1) * (len(_SCALE) - 1)
    i = np.minimum(np.floor(x).astype(int), len(_SCALE) - 2)
    f = (x - i)[..., None]
    return np.rint(_SCALE[i] * (1 - f) + _SCALE[i + 1] * f).astype(np.uint8)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR),
                      dtype=np.float64)


def depth_picture(depth: np.ndarray, opacity: np.ndarray, size: int | None = None,
                  empty_below: float = EMPTY_BELOW) -> np.ndarray:
    """depth and opacity (H, W) or (1, H, W) -> a captioned uint8 (H', W', 3) picture at ``size`` x ``size``.

    Resizing (a 64 px volume render shown at the 128 px image size, say) interpolates opacity, and depth
    only between covered pixels (weighted by opacity), so silhouettes take no depth from the background.
    """
    from nerfgan.captions import caption_grid

    d = np.asarray(depth, np.float64).reshape(np.shape(depth)[-2:])
    o = np.clip(np.asarray(opacity, np.float64).reshape(np.shape(opacity)[-2:]), 0, 1)
    if d.shape != o.shape or d.shape[0] != d.shape[1]:
        raise ValueError(f"depth {d.shape} and opacity {o.shape} must be one square (H, W)")
    d = np.where(np.isfinite(d), d, 0.0)
    if size is not None and size != d.shape[0]:
        covered = o > 0
        wsum = _resize(np.where(covered, o, 0.0), size)
        d = np.where(wsum > 1e-9, _resize(np.where(covered, o * d, 0.0), size) / np.maximum(wsum, 1e-12), 0.0)
        o = np.clip(_resize(o, size), 0, 1)
    H, W = d.shape
    hit = o >= empty_below
    yy, xx = np.mgrid[0:H, 0:W]
    checker = np.where(((yy // _CHECK) + (xx // _CHECK)) % 2 == 0, _CHECKER[0], _CHECKER[1]).astype(np.uint8)
    img = np.repeat(checker[..., None], 3, -1)
    if hit.any():
        near, far = float(d[hit].min()), float(d[hit].max())
        t = (far - d) / (far - near) if far > near else np.ones_like(d)
        img[hit] = colour_scale(t[hit])
    note = depth_note(d, o, empty_below)
    bar = np.repeat(colour_scale(np.linspace(1, 0, W))[None], _BAR, 0)
    tile = np.concatenate([img, np.full((2, W, 3), 255, np.uint8), bar], 0)
    return caption_grid([[tile]], footer=note)


def depth_note(depth: np.ndarray, opacity: np.ndarray, empty_below: float = EMPTY_BELOW) -> str:
    """The footer of a depth picture: the scale's two ends (the nearest and farthest covered pixel) in world
    units, and what the checker means."""
    d, o = np.asarray(depth, np.float64), np.asarray(opacity, np.float64)
    hit = (o >= empty_below) & np.isfinite(d)
    if not hit.any():
        return f"nothing in view: every pixel is empty (opacity < {empty_below:g})"
    return (f"depth (world units): yellow near {float(d[hit].min()):.3f}, purple far {float(d[hit].max()):.3f}; "
            f"checker: empty (opacity < {empty_below:g})")
