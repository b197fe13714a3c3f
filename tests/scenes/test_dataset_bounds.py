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
