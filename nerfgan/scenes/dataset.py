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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerfgan.errors import InputFileError, UsageError
from nerfgan.io import atomic_dir, check_writable_dir


MAX_LABELS_BYTES = 256 << 20
"""dataset.json larger than this is refused before it is parsed."""


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
    dest.parent.mkdir(parents=True, exist_ok=True)
    family = SceneFamily()
    labels: list[list[object]] = []
    check_writable_dir(dest, "data set")
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
                return np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises many kinds for a broken file
            raise InputFileError(f"{self.path}: {self.names[i]} is not a readable image ({e})") from None


def _read_member(path: Path, name: str) -> bytes:
    if path.is_file():
        with zipfile.ZipFile(path) as zf:
            try:
                return zf.read(name)
            except KeyError:
                raise InputFileError(f"{path}: has no {name}") from None
    p = (path / name).resolve()
    if path.resolve() not in p.parents:
        raise InputFileError(f"{path}/dataset.json: image name {name!r} leaves the data set")
    if not p.is_file():
        raise InputFileError(f"{path}: has no {name}")
    return p.read_bytes()


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read and check ``dataset.json`` of a folder or zip: every label a name and 25 finite numbers."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: data set not found")
    try:
        if p.is_file():
            with zipfile.ZipFile(p) as zf:
                info = zf.getinfo("dataset.json")
                if info.file_size > MAX_LABELS_BYTES:
                    raise InputFileError(f"{p}: dataset.json is larger than {MAX_LABELS_BYTES >> 20} MiB")
                raw = zf.read(info)
        else:
            f = p / "dataset.json"
            if not f.is_file():
                raise InputFileError(f"{p}: has no dataset.json")
            if f.stat().st_size > MAX_LABELS_BYTES:
                raise InputFileError(f"{f}: larger than {MAX_LABELS_BYTES >> 20} MiB")
            raw = f.read_bytes()
        doc = json.loads(raw)
    except KeyError:
        raise InputFileError(f"{p}: has no dataset.json") from None
    except zipfile.BadZipFile:
        raise InputFileError(f"{p}: not a zip file or folder") from None
    except ValueError as e:
        raise InputFileError(f"{p}: dataset.json is not valid JSON ({e})") from None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, list) or not labels:
        raise InputFileError(f"{p}: dataset.json has no 'labels' list (EG3D's format: [[name, [25 floats]], ...])")
    names, cams = [], []
    for k, entry in enumerate(labels):
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)
        if not ok or len(entry[1]) != 25 or not all(isinstance(v, (int, float)) for v in entry[1]):
            raise InputFileError(f"{p}: dataset.json label {k} is not [name, [25 numbers]]")
        names.append(entry[0])
        cams.append(entry[1])
    arr = np.asarray(cams, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputFileError(f"{p}: dataset.json has non-finite camera values")
    return Dataset(p, names, arr)
