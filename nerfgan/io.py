"""Files: atomic writes and images. numpy only (the runtime uses it without torch).

Every output is written to a temporary name in the destination folder and renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nerfgan.errors import InputFileError, UsageError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it."""
    final = Path(path)
    if final.is_dir():
        raise UsageError(f"{final}: is a directory, expected a file name")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def existing_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable file, else raise InputFileError naming it."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: {what} not found")
    if not p.is_file():
        raise InputFileError(f"{p}: {what} is not a regular file")
    return p


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1], (B, 3, H, W) or (3, H, W) float -> uint8 (B, H, W, 3) or (H, W, 3), as EG3D saves them."""
    x = np.asarray(images, dtype=np.float32)
    x = np.clip(np.rint(x * 127.5 + 128.0), 0, 255).astype(np.uint8)
    return np.moveaxis(x, -3, -1)


def depth_to_uint8(depth: np.ndarray) -> np.ndarray:
    """Depth (H, W) or (1, H, W) -> uint8 (H, W), near = bright, normalised to the image's own range."""
    d = np.asarray(depth, dtype=np.float64).reshape(np.shape(depth)[-2:])
    lo, hi = float(np.min(d)), float(np.max(d))
    scaled = (hi - d) / (hi - lo) if hi > lo else np.zeros_like(d)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a uint8 image (H, W), (H, W, 3) or (H, W, 4) to ``path`` atomically."""
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: output must be a .png file")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W[, C]), got {img.dtype} {img.shape}")
    with atomic_path(p) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return p
