"""Data sets of the scene family in EG3D's own dataset format: the "real images" of adversarial training.

Layout (a folder, or the same entries in a .zip), as EG3D's dataset_tool writes it::

    DATA/dataset.json                {"labels": [["00000/img00000000.png", [25 floats]], ...]}
    DATA/00000/img00000000.png       RGB uint8, resolution x resolution
    DATA/00000/img00000001.png ...   1000 images per folder

Each label is the 25-value camera the image was rendered from (``nerfgan.camera``). Image i is
sample i of ``nerfgan.sampling.draw(seed, ...)``: its z and render pose, without truncation
(psi = 1: real data is not truncated).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import atomic_dir, check_writable_dir, image_rgb8
from nerfgan.jsonfile import loads, read_bytes
from nerfgan.teacher import limits


MAX_LABELS_BYTES = 256 << 20
"""dataset.json larger than this is refused before it is parsed."""

MAX_LABELS = 1 << 19
"""Labels (images) of one data set, at most (FFHQ with its mirror images has 140,000)."""

MAX_LABELS_VALUES = 32 * MAX_LABELS
"""JSON values dataset.json may hold (a label is 28: its list, name, camera list and 25 numbers), counted before it
is parsed (nerfgan.jsonfile): about 1 GiB once parsed at most, however the 256 MiB are filled."""

MAX_IMAGE_FILE_BYTES = 64 << 20
"""An image file of a data set larger than this is refused before it is read (a 1024 px RGB PNG is at most 3 MiB)."""


def image_name(i: int) -> str:
    return f"{i // 1000:05d}/img{i:08d}.png"


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(out: str | os.PathLike[str], n: int, seed: int, resolution: int = 128, batch: int = 4,
                  progress: Callable[[int], None] | None = None) -> Path:
    """Render n samples of the family into ``out`` (a folder, or a file ending in .zip); returns ``out``.

    ``out`` must not exist: nothing is overwritten. The data set is built under a temporary name
    beside it and renamed into place when complete.
    """
    import torch

    from nerfgan import camera
    from nerfgan.io import to_uint8
    from nerfgan.sampling import PoseDistribution, draw
    from nerfgan.scenes.family import SceneFamily
    from nerfgan.scenes.render import render

    dest = Path(out)
    if n < 1:
        raise UsageError(f"--n: expected a positive number of images, got {n}")
    if not 16 <= resolution <= 1024:
        raise UsageError(f"--res: expected 16..1024 pixels, got {resolution}")
    if dest.exists():
        raise UsageError(f"{dest}: already exists; give a new name (nerfgan never overwrites a data set)")
    as_zip = dest.suffix.lower() == ".zip"
    check_writable_dir(dest, "data set")
    family = SceneFamily()
    labels: list[list[object]] = []
    with atomic_dir(dest) as tmp:
        zf = zipfile.ZipFile(tmp / "data.zip", "w", compression=zipfile.ZIP_STORED) if as_zip else None
        for start in range(0, n, batch):
            idx = range(start, min(n, start + batch))
            s = draw(seed, idx, PoseDistribution(), camera.DEFAULT_RADIUS, camera.DEFAULT_PIVOT)
            params = family.params(torch.from_numpy(s.z), 1.0)
            images = to_uint8(render(family, params, torch.from_numpy(s.c), resolution).image.numpy())
            for k, i in enumerate(idx):
                name = image_name(i)
                data = _png_bytes(images[k])
                if zf is not None:
                    zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
                else:
                    (tmp / name).parent.mkdir(exist_ok=True)
                    (tmp / name).write_bytes(data)
                labels.append([name, [float(v) for v in s.c[k]]])
            if progress:
                progress(len(idx))
        text = json.dumps({"labels": labels})
        if zf is not None:
            zf.writestr(zipfile.ZipInfo("dataset.json", date_time=(2026, 1, 1, 0, 0, 0)), text)
            zf.close()
            os.replace(tmp / "data.zip", dest)
        else:
            (tmp / "dataset.json").write_text(text)
            os.rename(tmp, dest)
    return dest


@dataclass
class Dataset:
    """An EG3D-format data set opened for reading: names and 25-value labels, images on demand."""

    path: Path
    names: list[str]
    labels: np.ndarray  # (N, 25) float32

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3)."""
        from PIL import Image

        data = _read_member(self.path, self.names[i])
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                if max(width, height) <= limits.MAX_IMAGE_RESOLUTION:
                    return image_rgb8(im, f"{self.path}: {self.names[i]}")  # (16-bit grey scaled, not clipped)
        except InputFileError:
            raise
        except Exception as e:  # PIL raises many kinds for a broken file
            raise InputFileError(f"{self.path}: {self.names[i]} is not a readable image ({e})") from None
        raise InputFileError(f"{self.path}: {self.names[i]} is {width}x{height} pixels, over "
                             f"{limits.MAX_IMAGE_RESOLUTION} per side (MAX_IMAGE_RESOLUTION)")


def _read_member(path: Path, name: str) -> bytes:
    if path.is_file():
        try:
            with zipfile.ZipFile(path) as zf:
                return _read_zip_member(path, zf, name, MAX_IMAGE_FILE_BYTES, "MAX_IMAGE_FILE_BYTES")
        except zipfile.BadZipFile as e:
            raise InputFileError(f"{path}: {name} is unreadable ({e})") from None
    p = (path / name).resolve()
    if path.resolve() not in p.parents:
        raise InputFileError(f"{path}/dataset.json: image name {name!r} leaves the data set")
    if not p.is_file():
        raise InputFileError(f"{path}: has no {name}")
    if p.stat().st_size > MAX_IMAGE_FILE_BYTES:
        raise InputFileError(f"{p}: larger than {MAX_IMAGE_FILE_BYTES >> 20} MiB (MAX_IMAGE_FILE_BYTES)")
    return p.read_bytes()


def _read_zip_member(path: Path, zf: zipfile.ZipFile, name: str, limit: int, limit_name: str) -> bytes:
    """Member ``name`` of the zip ``path``, read only once the sizes in the zip directory are checked: at most
    ``limit`` bytes, inside the file, and (above RATIO_EXEMPT_BYTES) at most MAX_COMPRESSION_RATIO times its
    compressed size. zipfile never inflates more than the declared size."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise InputFileError(f"{path}: has no {name}") from None
    if info.file_size > limit:
        raise InputFileError(f"{path}: {name} is larger than {limit >> 20} MiB ({limit_name})")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) \
            or info.header_offset + info.compress_size > path.stat().st_size:
        raise InputFileError(f"{path}: {name} is not stored or deflated inside the file")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limits.RATIO_EXEMPT_BYTES and ratio > limits.MAX_COMPRESSION_RATIO:
        raise InputFileError(f"{path}: {name} declares {info.file_size:,} bytes deflated into {info.compress_size:,} "
                             f"({ratio:,.0f}:1, over MAX_COMPRESSION_RATIO {limits.MAX_COMPRESSION_RATIO}:1)")
    try:
        return zf.read(info)
    except ZIP_ERRORS as e:  # a bad CRC-32 is a BadZipFile
        raise InputFileError(f"{path}: {name} is damaged in the zip file ({str(e)[:120]})") from None


ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError)
"""What zipfile raises for a damaged member (a bad CRC-32, a truncated or corrupt deflate stream, an encrypted one)."""


def check_zip_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read member ``info`` of the zip ``path`` through to its end, so that zipfile checks its CRC-32 and its
    deflate stream; nothing is kept. InputFileError naming the member when it is damaged."""
    try:
        with zf.open(info) as f:
            while f.read(1 << 20):
                pass
    except ZIP_ERRORS as e:
        raise InputFileError(f"{path}: {info.filename} is damaged in the zip file ({str(e)[:120]})") from None


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read and check ``dataset.json`` of a folder or zip: every label a name and 25 finite numbers."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: data set not found")
    try:
        if p.is_file():
            with zipfile.ZipFile(p) as zf:
                raw = _read_zip_member(p, zf, "dataset.json", MAX_LABELS_BYTES, "MAX_LABELS_BYTES")
        else:
            f = p / "dataset.json"
            if not f.is_file():
                raise InputFileError(f"{p}: has no dataset.json")
            if f.stat().st_size > MAX_LABELS_BYTES:
                raise InputFileError(f"{f}: larger than {MAX_LABELS_BYTES >> 20} MiB")
            raw = read_bytes(f, "dataset.json", MAX_LABELS_BYTES)
    except KeyError:
        raise InputFileError(f"{p}: has no dataset.json") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise InputFileError(f"{p}: not a readable zip file or folder ({str(e)[:120]})") from None
    doc = loads(raw, f"{p}: dataset.json", "data set's dataset.json", MAX_LABELS_VALUES)
    del raw
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, list) or not labels:
        raise InputFileError(f"{p}: dataset.json has no 'labels' list (EG3D's format: [[name, [25 floats]], ...])")
    if len(labels) > MAX_LABELS:
        raise InputFileError(f"{p}: dataset.json has {len(labels):,} labels, more than {MAX_LABELS:,} (MAX_LABELS)")
    names = []
    arr = np.empty((len(labels), 25), np.float32)  # filled row by row: no second copy of the labels as lists
    for k, entry in enumerate(labels):
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)
        # (bool is an int in Python; a camera value `true` is not a number)
        if not ok or len(entry[1]) != 25 or not all(type(v) in (int, float) for v in entry[1]):
            raise InputFileError(f"{p}: dataset.json label {k} is not [name, [25 numbers]]")
        names.append(entry[0])
        try:
            arr[k] = entry[1]
        except OverflowError:  # an integer beyond float32
            raise InputFileError(f"{p}: dataset.json label {k} has a camera value out of range") from None
        labels[k] = None  # the parsed row is freed as it is copied
    if not np.isfinite(arr).all():
        raise InputFileError(f"{p}: dataset.json has non-finite camera values")
    return Dataset(p, names, arr)
