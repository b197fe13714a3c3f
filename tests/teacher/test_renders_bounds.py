"""Render sets: a hostile index or shard is refused before anything of the size it declares is allocated.

The shard's sha256 comes from the same index, so it is no defence. Loads run under ``bounded`` (at most
256 MiB more address space, 60 s): code that allocates what the files declare fails there with
MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import bounded

from nerfgan.errors import InputFileError
from nerfgan.io import file_sha256
from nerfgan.teacher import limits
from nerfgan.teacher.config import preset
from nerfgan.teacher.renders import RenderSet, array_specs, plan_render_set


def npy_member(shape: tuple[int, ...], dtype: str, deflate: bool) -> tuple[bytes, int, int]:
    """(data, size, CRC-32) of a zip member holding an .npy of zeros, stored or deflated (about 1000:1, made without
    ever holding the zeros: after a full flush the compressor emits the same block for every further MiB)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    header, zeros = buf.getvalue(), int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if not deflate:
        return header + bytes(zeros), len(header) + zeros, zlib.crc32(header + bytes(zeros))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(zeros >> 20):
        crc = zlib.crc32(bytes(1 << 20), crc)
    rest = bytes(zeros & ((1 << 20) - 1))
    return head + block * (zeros >> 20) + c.compress(rest) + c.flush(), len(header) + zeros, zlib.crc32(rest, crc)


def zeros_shard(path: Path, count: int, deflate: bool) -> Path:
    """A render-set shard of ``count`` samples of the tiny teacher, every array zeros, stored or deflated."""
    local, central = b"", b""
    specs = array_specs(preset("tiny"))
    for name, (dtype, shape) in specs.items():
        data, size, crc = npy_member((count, *shape), dtype, deflate)
        member = f"{name}.npy".encode()
        entry = struct.pack("<HHHHHLLLHH", 20, 0, 8 if deflate else 0, 0, 0x21, crc, len(data), size, len(member), 0)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + entry + struct.pack("<HHHLL", 0, 0, 0, 0, len(local)) + member
        local += b"PK\x03\x04" + entry + member + data
    end = struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, len(specs), len(specs), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


def hostile_set(directory: Path, listed: int, stored: int, deflate: bool = True) -> Path:
    """A render set whose index lists ``listed`` samples in one shard holding arrays of ``stored`` samples."""
    header = plan_render_set("tiny", listed, directory, shard_size=listed).header
    directory.mkdir()
    shard = zeros_shard(directory / "shard-00000.npz", stored, deflate)
    entry = {"file": shard.name, "start": 0, "count": listed, "sha256": file_sha256(shard)}
    (directory / "index.json").write_text(json.dumps({**header, "shards": [entry]}))
    return directory


def test_a_shard_listed_with_more_samples_than_it_can_hold_is_refused(tmp_path):
    d = hostile_set(tmp_path / "bomb", listed=7500, stored=7500)  # 3 GB of arrays in a 3 MB file
    assert (d / "shard-00000.npz").stat().st_size < 3_500_000
    with bounded(), pytest.raises(InputFileError) as error:
        RenderSet.open(d).load()
    message = str(error.value)
    assert "shard-00000.npz" in message and "\n" not in message
    assert "lists 7500 samples of 405,724 bytes" in message


def test_a_shard_declaring_more_than_its_index_entry_is_refused_before_decompressing(tmp_path):
    d = hostile_set(tmp_path / "liar", listed=2, stored=7500)  # the index is plausible, the shard is not
    rs = RenderSet.open(d)
    with bounded(), pytest.raises(InputFileError) as error:
        next(rs.shards())
    message = str(error.value)
    assert "shard-00000.npz" in message
    assert "render set shard array 'index' is int64 (7500,), expected int64 (2,)" in message


def test_an_oversized_index_is_refused_before_parsing(tmp_path, monkeypatch):
    d = hostile_set(tmp_path / "index", listed=1, stored=1, deflate=False)
    RenderSet.open(d)  # the control
    monkeypatch.setattr(limits, "MAX_INDEX_BYTES", (d / "index.json").stat().st_size - 1)
    with pytest.raises(InputFileError, match=r"index.json: larger than .* \(MAX_INDEX_BYTES\)"):
        RenderSet.open(d)


def test_a_huge_teacher_config_in_the_index_is_refused(tmp_path):
    d = hostile_set(tmp_path / "config", listed=1, stored=1, deflate=False)
    index = json.loads((d / "index.json").read_text())
    index["teacher"]["config"]["upstream_init_kwargs"]["z_dim"] = 10**8
    (d / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputFileError, match=r"z_dim = 100000000 exceeds the limit 1024 \(MAX_Z_DIM\)"):
        RenderSet.open(d)


def test_a_render_set_is_never_written_into_a_folder_of_the_users(tmp_path):
    from nerfgan.errors import OutputError
    from nerfgan.io import folder_lock
    from nerfgan.teacher.renders import make_render_set

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.md").write_text("my notes")
    with pytest.raises(OutputError, match="-o .*did not write"):
        make_render_set("tiny", 2, mine, progress=False)
    assert [p.name for p in mine.iterdir()] == ["index.md"]
    busy = tmp_path / "busy"
    busy.mkdir()
    with folder_lock(busy), pytest.raises(OutputError, match="another nerfgan process"):
        make_render_set("tiny", 2, busy, progress=False)
