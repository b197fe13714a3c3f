"""Images to response bytes: PNG or JPEG (several images side by side), .npy batches, looping GIF orbits."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from nerfgan.io import frame_ms

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "npy": "application/x-npy", "gif": "image/gif"}


def strip(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (H, N*W, 3): the images left to right (one image comes back as it is)."""
    return images[0] if len(images) == 1 else np.concatenate(list(images), axis=1)


def encode_images(images: np.ndarray, fmt: str, jpeg_quality: int = 90) -> bytes:
    """(N, H, W, 3) uint8 as ``fmt``: 'png' / 'jpeg' (a strip of the N images) or 'npy' (the batch as it is)."""
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, np.ascontiguousarray(images), allow_pickle=False)
    elif fmt == "png":
        Image.fromarray(strip(images)).save(buf, format="PNG")
    elif fmt == "jpeg":
        Image.fromarray(strip(images)).save(buf, format="JPEG", quality=jpeg_quality)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """(F, H, W, 3) uint8 -> a looping GIF, encoded as nerfgan-run writes its --orbit GIFs."""
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=frame_ms(fps, "fps"))
    return buf.getvalue()
