"""Real images for the adversarial stage: an EG3D-format data set as part of the discriminator's real samples.

A convolutional student conditioned on the camera can tie image attributes to the pose; showing the
discriminator real images with their own cameras beside the teacher's renders counters that bias
(Shahbazi et al.). In stage 2 a fraction F of each batch of the discriminator's real samples is
real images, the rest teacher renders:

    global D batch of B real samples, n = round(F * B) >= 1 real images
      positions 0 .. B-n-1   teacher renders of samples 0 .. B-n-1 of the step (image, raw RGB, render camera)
      positions B-n .. B-1   data set images picked by (seed, step), without replacement within the step
    real image  uint8 (H, W, 3) -> float (3, H, W) in [-1, 1]
    its raw     the image resized to the neural rendering resolution R with an antialiasing filter (B, 3, R, R)
    its camera  its 25-value label (B, 25)

The data set (a folder or .zip, see nerfgan.scenes.dataset) is checked when it is opened, before any
training: every label (open_dataset), and every image's header (present, within the size limits, a
readable image, all of one size; in a zip each member is read through once so that its CRC-32 is checked); ``check`` then compares that size with the teacher's output and the
image count with what a step needs. Decoded images stay in a cache bounded in bytes; an image that
fails to decode later stops the run with one error line naming it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import image_rgb8
from nerfgan.scenes.dataset import (MAX_IMAGE_FILE_BYTES, Dataset, _read_member, _read_zip_member, check_zip_member,
                                    open_dataset)
from nerfgan.teacher import limits

REAL_STREAM = 0x7265616C  # "real": the picks of step s come from default_rng([seed, s, REAL_STREAM])
MAX_CACHE_BYTES = 512 << 20
"""Decoded images kept in memory (uint8), least recently used dropped first."""


def real_count(fraction: float, batch_size: int) -> int:
    """Real images among the discriminator's ``batch_size`` real samples: F * B rounded half up."""
    return int(math.floor(fraction * batch_size + 0.5))


def downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, R, R): bilinear resizing with antialiasing (a triangle filter as wide as the scale
    factor; for H = 2R each output pixel is [1, 3, 3, 1] / 8 of its input rows and columns, renormalised at the
    borders), as EG3D makes the raw branch of a real image."""
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


class RealImages:
    """An EG3D-format data set opened and checked for stage 2; ``load(indices)`` returns images and cameras.

    Args:
        path: DATA folder or DATA.zip (dataset.json labels + images), as ``--real`` names it.
        cache_bytes: bound of the decoded-image cache, in bytes.
    """

    def __init__(self, path: str | os.PathLike[str], cache_bytes: int = MAX_CACHE_BYTES) -> None:
        self.path = Path(path)
        try:
            self.dataset: Dataset = open_dataset(self.path)
        except InputFileError as e:
            raise InputFileError(f"--real {e}") from None
        self._zip: zipfile.ZipFile | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, cache_bytes
        sizes, file_bytes = self._scan_headers()
        self.width, self.height = sizes
        h = hashlib.sha256()
        h.update(json.dumps(self.dataset.names).encode())
        h.update(self.dataset.labels.astype("<f4").tobytes())
        h.update(np.asarray(file_bytes, dtype="<i8").tobytes())
        self.digest = h.hexdigest()
        """sha256 of the names, labels and image file sizes: cheap, and it changes when the data set does."""

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return f"RealImages({str(self.path)!r}, {len(self)} images of {self.width}x{self.height})"

    def config_fields(self, fraction: float) -> dict[str, Any]:
        """The TrainConfig fields that record this data set: path as given, fraction, image count, digest."""
        return {"real": str(self.path), "real_fraction": fraction, "real_count": len(self), "real_digest": self.digest}

    # --- checks ---------------------------------------------------------------------------------------
    def _fail(self, message: str) -> InputFileError:
        return InputFileError(f"--real {self.path}: {message}")

    def _scan_headers(self) -> tuple[tuple[int, int], list[int]]:
        """Every image present, within MAX_IMAGE_FILE_BYTES and MAX_IMAGE_RESOLUTION, with a readable header, and all
        of the size of image 0 (nothing decoded) -> ((width, height), file sizes in bytes)."""
        from PIL import Image

        first: tuple[int, int] | None = None
        file_bytes = []
        zf = self._open_zip() if self.path.is_file() else None
        for name in self.dataset.names:
            try:
                f: Any
                if zf is not None:
                    try:
                        info = zf.getinfo(name)
                    except KeyError:
                        raise self._fail(f"has no {name} (named in dataset.json)") from None
                    n = info.file_size
                else:
                    p = self._member_path(name)
                    n = p.stat().st_size
                if n > MAX_IMAGE_FILE_BYTES:
                    raise self._fail(f"{name} is larger than {MAX_IMAGE_FILE_BYTES >> 20} MiB (MAX_IMAGE_FILE_BYTES)")
                if zf is not None:
                    try:
                        check_zip_member(self.path, zf, info)  # its CRC-32, now rather than mid-training
                    except InputFileError as e:
                        raise self._fail(str(e).removeprefix(f"{self.path}: ")) from None
                f = zf.open(info) if zf is not None else open(p, "rb")
                with f, warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below by its size
                    with Image.open(f) as im:  # reads the header only
                        size = im.size
            except InputFileError:
                raise
            except Exception as e:  # PIL and zipfile raise many kinds for a broken file
                raise self._fail(f"{name} is not a readable image ({e})") from None
            if max(size) > limits.MAX_IMAGE_RESOLUTION:
                raise self._fail(f"{name} is {size[0]}x{size[1]} pixels, over {limits.MAX_IMAGE_RESOLUTION} per side "
                                 "(MAX_IMAGE_RESOLUTION)")
            if first is None:
                first = size
            elif size != first:
                raise self._fail(f"{name} is {size[0]}x{size[1]} pixels, {self.dataset.names[0]} "
                                 f"{first[0]}x{first[1]}; all images of a data set have one size")
            file_bytes.append(n)
        assert first is not None  # open_dataset refuses an empty label list
        return first, file_bytes

    def _member_path(self, name: str) -> Path:
        root = self.path.resolve()
        p = (self.path / name).resolve()
        if root not in p.parents:
            raise self._fail(f"image name {name!r} in dataset.json leaves the data set")
        if not p.is_file():
            raise self._fail(f"has no {name} (named in dataset.json)")
        return p

    def check(self, resolution: int, fraction: float, batch_size: int) -> int:
        """The images are ``resolution`` pixels square (the teacher's output) and there are enough of them for
        ``fraction`` of a ``batch_size`` batch -> real images per step."""
        if (self.width, self.height) != (resolution, resolution):
            raise self._fail(f"images are {self.width}x{self.height} pixels ({self.dataset.names[0]}), the teacher "
                             f"renders {resolution}x{resolution}; make the data set at --res {resolution}")
        n = real_count(fraction, batch_size)
        if n < 1:
            raise UsageError(f"--real-fraction {fraction:g} of --batch-size {batch_size} is no real image per step; "
                             f"give at least {0.5 / batch_size:.3g}")
        if len(self) < n:
            raise self._fail(f"has {len(self)} images, fewer than the {n} each step shows the discriminator "
                             f"(--real-fraction {fraction:g} of --batch-size {batch_size})")
        return n

    # --- reading --------------------------------------------------------------------------------------
    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as e:
                raise self._fail(f"unreadable zip file ({e})") from None
        return self._zip

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def pick(self, seed: int, step: int, n: int) -> np.ndarray:
        """The n distinct image indices step ``step`` of a run with ``seed`` shows: a function of (seed, step)."""
        rng = np.random.default_rng([seed, step, REAL_STREAM])
        return np.sort(rng.choice(len(self), size=n, replace=False))

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3), from the cache or decoded (its size checked again)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        from PIL import Image

        name = self.dataset.names[i]
        if self.path.is_file():
            data = _read_zip_member(self.path, self._open_zip(), name, MAX_IMAGE_FILE_BYTES, "MAX_IMAGE_FILE_BYTES")
        else:
            data = _read_member(self.path, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below by its size
                im = Image.open(io.BytesIO(data))
            with im:
                if im.size != (self.width, self.height):
                    raise self._fail(f"{name} is {im.size[0]}x{im.size[1]} pixels, the data set's images "
                                     f"{self.width}x{self.height}")
                arr = image_rgb8(im, f"--real {self.path}: {name}")  # (16-bit grey scaled, not clipped)
        except InputFileError:
            raise
        except Exception as e:  # a header that reads but data that does not decode
            raise self._fail(f"{name} is not a readable image ({e})") from None
        self._cache[i] = arr
        self._cache_bytes += arr.nbytes
        while self._cache_bytes > self._cache_limit and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes
        return arr

    def load(self, indices: np.ndarray | list[int],
             device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``indices`` -> (images (B, 3, H, W) float32 in [-1, 1], cameras (B, 25) float32) on ``device``."""
        idx = [int(i) for i in indices]
        if not idx:
            return (torch.zeros(0, 3, self.height, self.width, device=device),
                    torch.zeros(0, 25, device=device))
        arr = np.stack([self.image(i) for i in idx])  # (B, H, W, 3) uint8
        images = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        cams = torch.from_numpy(self.dataset.labels[idx]).to(device)
        return images.contiguous(), cams
