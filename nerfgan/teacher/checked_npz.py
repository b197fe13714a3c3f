""".npz files (calibration sets, render-set shards) read only after every declared size is checked.

``np.load`` allocates each array at the shape its .npy header declares and then inflates the zip
member into it, so a 3 MB file of deflated zeros can declare, allocate and fill 3 GB. Here each
member is checked before its data is decompressed: the zip directory's sizes (stored or deflated
only; the entry inside the file; uncompressed at most MAX_NPZ_MEMBER_BYTES and at most
MAX_COMPRESSION_RATIO times its compressed size), then the .npy header, read from the first bytes of
the member (its dtype and shape must be what the caller expects, and header + shape x itemsize must
be the entry's uncompressed size, which is also all that zipfile will ever inflate). numpy only.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from nerfgan.errors import InputFileError
from nerfgan.teacher import limits

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _not_npz(path: Path, what: str) -> str:
    """What is wrong with a file that is no zip archive, from its first bytes: for a one-line error."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    if head.startswith(b"\x93NUMPY"):
        return f"a single .npy array (np.save), not an .npz {what}"
    if head[:1] == b"\x80" or head.startswith((b"(dp", b"(lp", b"}q", b"]q")):
        return f"a Python pickle, not an .npz {what} (nerfgan never loads pickles)"
    return f"not an .npz {what} (not a zip archive of .npy arrays)"


class CheckedNpz:
    """An .npz opened for reading; ``what`` names the file kind in errors (every error is InputFileError)."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path, self.what = Path(path), what
        try:
            self.size = self.path.stat().st_size
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            raise InputFileError(f"{self.path}: {_not_npz(self.path, what)}") from None
        except _READ_ERRORS as e:
            raise InputFileError(f"{self.path}: not a readable .npz {what} ({type(e).__name__}: {e})") from None
        self.names = [i.filename[:-4] for i in self._zip.infolist() if i.filename.endswith(".npy")]

    def __enter__(self) -> "CheckedNpz":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._zip.close()

    def _fail(self, name: str, problem: str) -> InputFileError:
        return InputFileError(f"{self.path}: {self.what} array {name!r} {problem}")

    def declared(self, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """(shape, dtype) that member ``name`` declares, once its sizes are checked; nothing is inflated
        beyond the few bytes of its .npy header."""
        try:
            info = self._zip.getinfo(name + ".npy")
        except KeyError:
            raise InputFileError(f"{self.path}: {self.what} has no array {name!r}") from None
        method = _METHODS.get(info.compress_type)
        if method is None:
            raise self._fail(name, f"uses zip compression method {info.compress_type} (stored or deflated only)")
        if info.header_offset + info.compress_size > self.size:
            raise self._fail(name, f"claims {info.compress_size:,} bytes beyond the end of the {self.size:,}-byte file")
        if method == "stored" and info.file_size != info.compress_size:
            raise self._fail(name, f"is stored but declares {info.file_size:,} bytes in {info.compress_size:,}")
        if info.file_size > limits.MAX_NPZ_MEMBER_BYTES:
            raise self._fail(name, f"declares {info.file_size:,} bytes, over the limit of "
                             f"{limits.MAX_NPZ_MEMBER_BYTES:,} (MAX_NPZ_MEMBER_BYTES)")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.RATIO_EXEMPT_BYTES and ratio > limits.MAX_COMPRESSION_RATIO:
            raise self._fail(name, f"declares {info.file_size:,} bytes deflated into {info.compress_size:,} "
                             f"({ratio:,.0f}:1, over MAX_COMPRESSION_RATIO {limits.MAX_COMPRESSION_RATIO}:1)")
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} (1.0 and 2.0 are read)")
                header = f.tell()
        except _READ_ERRORS as e:
            raise self._fail(name, f"has no readable .npy header ({type(e).__name__}: {e})") from None
        if dtype.hasobject:
            raise self._fail(name, "holds Python objects (a pickle), which nerfgan never loads: a "
                                   f"{self.what} holds numeric arrays only")
        nbytes = math.prod(shape) * dtype.itemsize
        if header + nbytes != info.file_size:
            raise self._fail(name, f"declares {dtype} {shape} ({nbytes:,} bytes after a {header}-byte header) but "
                             f"its zip entry holds {info.file_size:,} bytes")
        return tuple(shape), dtype

    def read(self, name: str, shape: tuple[int, ...], dtype: str | np.dtype[Any]) -> np.ndarray:
        """Array ``name``, refused unless it declares exactly ``shape`` and ``dtype`` (checked before it is read)."""
        got_shape, got_dtype = self.declared(name)
        if got_shape != tuple(shape) or got_dtype != np.dtype(dtype):
            raise self._fail(name, f"is {got_dtype} {got_shape}, expected {np.dtype(dtype)} {tuple(shape)}")
        return self._read(name)

    def read_text(self, name: str, max_bytes: int) -> str:
        """A 0-d unicode member (a JSON string) of at most ``max_bytes``, checked before it is read."""
        shape, dtype = self.declared(name)
        if shape != () or dtype.kind != "U" or dtype.itemsize > max_bytes:
            raise self._fail(name, f"is {dtype} {shape}, expected a text of at most {max_bytes:,} bytes")
        return str(self._read(name))

    def _read(self, name: str) -> np.ndarray:
        try:
            with self._zip.open(name + ".npy") as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as e:
            raise self._fail(name, f"is unreadable ({type(e).__name__}: {e})") from None
