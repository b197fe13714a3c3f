"""Data sets: a small zip cannot make open_dataset or Dataset.image inflate or decode gigabytes.

Loads run under ``bounded`` (at most 256 MiB more address space, 60 s): code that inflates or decodes
what a file declares fails there with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib

import pytest

from conftest import bounded

from nerfgan.errors import InputFileError
from nerfgan.scenes.dataset import open_dataset


LABELS = json.dumps({"labels": [["00000/img00000000.png", [0.0] * 25]]}).encode()


def test_a_deflated_labels_bomb_is_refused_before_inflating(tmp_path):
    # dataset.json: one label, then 200 MiB of spaces (valid JSON) deflated about 1000:1.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b" " * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    data = c.compress(LABELS) + c.flush(zlib.Z_FULL_FLUSH) + block * 200 + c.flush()
    crc = zlib.crc32(LABELS)
    for _ in range(200):
        crc = zlib.crc32(b" " * (1 << 20), crc)
    name, size = b"dataset.json", len(LABELS) + (200 << 20)
    entry = struct.pack("<HHHHHLLLHH", 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = b"PK\x01\x02" + struct.pack("<H", 20) + entry + struct.pack("<HHHLL", 0, 0, 0, 0, 0) + name
    local = b"PK\x03\x04" + entry + name + data
    path = tmp_path / "bomb.zip"
    path.write_bytes(local + central + struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local), 0))
    assert path.stat().st_size < 300_000
    with bounded(), pytest.raises(InputFileError) as error:
        open_dataset(path)
    message = str(error.value)
    assert str(path) in message and "dataset.json declares" in message and "MAX_COMPRESSION_RATIO" in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns when it opens the header
def test_an_image_of_huge_declared_size_is_refused_before_decoding(tmp_path):
    # A 200-byte PNG declaring 12000 x 12000 RGB (432 MB decoded; under PIL's own bomb limit of 179 M pixels).
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dataset.json", LABELS)
        zf.writestr("00000/img00000000.png", png)
    ds = open_dataset(path)
    with bounded(), pytest.raises(InputFileError) as error:
        ds.image(0)
    assert "img00000000.png is 12000x12000 pixels, over 1024 per side (MAX_IMAGE_RESOLUTION)" in str(error.value)


def test_a_labels_file_of_many_tiny_values_is_refused_before_parsing(tmp_path):
    """Issue 22: 51 MB of `[],` is within the 256 MiB byte limit but 17 million lists (over a GiB) once parsed;
    the count of values is bounded before json.loads runs."""
    d = tmp_path / "data"
    d.mkdir()
    (d / "dataset.json").write_bytes(b'{"labels": [' + b"[]," * (17 << 20) + b"[]]}")
    with bounded(), pytest.raises(InputFileError, match="JSON values"):
        open_dataset(d)


def test_a_camera_label_true_is_not_a_number(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "dataset.json").write_text(json.dumps({"labels": [["00000/img00000000.png", [True] + [0.0] * 24]]}))
    with pytest.raises(InputFileError, match=r"label 0 is not \[name, \[25 numbers\]\]"):
        open_dataset(d)


def test_a_zip_member_with_a_bad_crc_is_one_error_line_naming_it(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from nerfgan.scenes.dataset import _read_zip_member

    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="PNG")
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("dataset.json", LABELS)
        zf.writestr("00000/img00000000.png", buf.getvalue())
    raw = bytearray(path.read_bytes())
    at = raw.index(buf.getvalue()[:8]) + 20  # one byte inside the stored PNG: its CRC-32 no longer matches
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf, pytest.raises(InputFileError, match="img00000000.png is damaged"):
        _read_zip_member(path, zf, "00000/img00000000.png", 1 << 20, "MAX")
