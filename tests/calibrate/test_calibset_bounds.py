"""Calibration sets: a small hostile .npz is refused before anything is decompressed or allocated.

Loads run under ``bounded`` (at most 256 MiB more address space, 60 s): code that lets numpy allocate
what a member declares fails there with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import bounded

from nerfgan.calibrate.calibset import FORMAT, load_calibration_set
from nerfgan.errors import InputFileError
from nerfgan.teacher.config import preset


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def deflated(header: bytes, zeros: int) -> tuple[bytes, int, int, int]:
    """A zip member of ``header`` + ``zeros`` zero bytes, deflated (about zeros / 1000 bytes) without ever holding
    the zeros: after a full flush the compressor emits the same block for every further MiB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    data = head + block * (zeros >> 20) + c.compress(bytes(zeros & ((1 << 20) - 1))) + c.flush()
    crc = zlib.crc32(header)
    for _ in range(zeros >> 20):
        crc = zlib.crc32(bytes(1 << 20), crc)
    return data, 8, len(header) + zeros, zlib.crc32(bytes(zeros & ((1 << 20) - 1)), crc)


def stored(data: bytes) -> tuple[bytes, int, int, int]:
    return data, 0, len(data), zlib.crc32(data)


def write_zip(path: Path, members: dict[str, tuple[bytes, int, int, int]]) -> Path:
    """A zip of name -> (data as stored, method 0 or 8, uncompressed size, CRC-32), as zipfile would write it."""
    local, central = b"", b""
    for name, (data, method, size, crc) in members.items():
        entry = struct.pack("<HHHHHLLLHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0) + name.encode()
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + entry[:-len(name)] + struct.pack("<HHHLL", 0, 0, 0, 0, len(local))
                    + name.encode())
        local += b"PK\x03\x04" + entry + data
    end = struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


def meta(n: int) -> bytes:
    text = json.dumps({"format": FORMAT, "format_version": 1, "n": n,
                       "teacher_config": json.loads(preset("tiny").to_json())})
    array = np.array(text)
    return npy_header((), array.dtype.str) + array.tobytes()


SHAPES = {"index": ((), "<i8"), "z": ((512,), "<f4"), "c_cond": ((25,), "<f4"), "psi": ((), "<f4"),
          "w": ((512,), "<f4"), "c": ((25,), "<f4"), "image": ((3, 128, 128), "<f2"), "image_raw": ((3, 64, 64), "<f2")}


def calibration_bomb(path: Path, n: int) -> Path:
    """A calibration set of n samples whose arrays are deflated zeros (about 1000:1)."""
    members = {"meta.npy": stored(meta(n))}
    for name, (shape, dtype) in SHAPES.items():
        zeros = n * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        members[f"{name}.npy"] = deflated(npy_header((n, *shape), dtype), zeros)
    return write_zip(path, members)


def test_the_calibration_bomb_is_refused_before_decompressing(tmp_path):
    path = calibration_bomb(tmp_path / "bomb.npz", n=25_000)  # declares 3.2 GB
    assert path.stat().st_size < 3_300_000
    with bounded(), pytest.raises(InputFileError) as error:
        load_calibration_set(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "declares" in message and "MAX_COMPRESSION_RATIO" in message


def test_a_header_that_disagrees_with_its_zip_entry_is_refused(tmp_path):
    # A stored member whose header declares a billion samples but whose data holds a few bytes.
    members = {"meta.npy": stored(meta(10**9))}
    for name, (shape, dtype) in SHAPES.items():
        members[f"{name}.npy"] = stored(npy_header((10**9, *shape), dtype) + bytes(64))
    path = write_zip(tmp_path / "liar.npz", members)
    with bounded(), pytest.raises(InputFileError) as error:
        load_calibration_set(path)
    assert str(path) in str(error.value) and "its zip entry holds" in str(error.value)


def test_shapes_must_follow_the_format(tmp_path):
    def array(shape: tuple[int, ...], dtype: str) -> tuple[bytes, int, int, int]:
        return stored(npy_header(shape, dtype) + bytes(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize))

    good = {"meta.npy": stored(meta(2))}
    good.update({f"{k}.npy": array((2, *shape), dtype) for k, (shape, dtype) in SHAPES.items()})
    assert len(load_calibration_set(write_zip(tmp_path / "good.npz", good))) == 2  # the control
    cases = {
        "z": (array((2, 2048), "<f4"), "z_dim = 2048 is outside 1..1024 (MAX_Z_DIM)"),
        "image_raw": (array((2, 3, 512, 512), "<f2"), "R = 512 is outside 1..256 (MAX_NEURAL_RENDERING_RESOLUTION)"),
        "image": (array((2, 3, 128, 64), "<f2"), "array image is (2, 3, 128, 64), expected (n x 3 x H x H) with H = 128"),
        "psi": (array((3,), "<f4"), "array psi is (3,), expected (n) with n = 2"),
        "index": (array((2,), "<f8"), "array index is float64 (2,), expected int64"),
    }
    for name, (member, needle) in cases.items():
        path = write_zip(tmp_path / f"{name}.npz", {**good, f"{name}.npy": member})
        with pytest.raises(InputFileError) as error:
            load_calibration_set(path)
        assert str(path) in str(error.value) and needle in str(error.value), name
