"""Tensor storages inside an upstream EG3D snapshot, parsed without torch.load and within a budget.

Part of the one upstream loader (:mod:`nerfgan.teacher.upstream_pickle` reads the snapshot itself).
Upstream pickles each storage as ``torch.storage._load_from_bytes(blob)``, the blob a legacy
(non-zip) ``torch.save`` stream: five small pickles, read here by a restricted unpickler that can
import nothing but storage types, then the raw little-endian elements, read by numpy. Every copy
made is charged to a :class:`Budget` proportional to the file's size, since a file can make many
storages (or tensors) from one memoised blob.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import struct
from typing import IO, Any, Callable

import numpy as np
import torch

from nerfgan.teacher import limits

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Opcodes a snapshot never needs: out-of-band buffers, the extension registry, protocol-0 class
# instantiation and (in the outer stream) persistent ids.
FORBIDDEN_OPS = frozenset({"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER",
                            "READONLY_BUFFER", "PERSID", "BINPERSID"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


class Rejected(Exception):
    """Raised inside the unpicklers; turned into a CheckpointError that names the file."""


class Budget:
    """What one read may materialise: tensor bytes (storage copies, state-dict clones) and kwargs size."""

    __slots__ = ("tensor_bytes", "tensor_limit", "kwargs_bytes")

    def __init__(self, file_size: int) -> None:
        self.tensor_limit = limits.MATERIALISED_PER_FILE_BYTE * file_size + limits.MATERIALISED_SLACK_BYTES
        self.tensor_bytes = 0
        self.kwargs_bytes = 0

    def tensors(self, nbytes: int, what: str) -> None:
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.tensor_limit:
            raise Rejected(f"{what} takes the tensor data materialised to {self.tensor_bytes:,} bytes, over the "
                           f"budget of {self.tensor_limit:,} ({limits.MATERIALISED_PER_FILE_BYTE} x the file size "
                           "+ MATERIALISED_SLACK_BYTES): tensors share their data")

    def kwargs(self, nbytes: int, where: str) -> None:
        self.kwargs_bytes += nbytes
        if self.kwargs_bytes > limits.MAX_KWARGS_BYTES:
            raise Rejected(f"{quote(where, 100)}: the init kwargs spell out to more than "
                           f"{limits.MAX_KWARGS_BYTES:,} bytes (MAX_KWARGS_BYTES): shared references")


def quote(text: object, limit: int = 80) -> str:
    """A short single-line rendering of an untrusted value."""
    shown = text if isinstance(text, str) and text.isprintable() else ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


class Frozen:
    """Base of the loader's own records: BUILD (``__setstate__``) on one, or on its class, fails."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        name = type(self).__name__.strip("_")
        raise Rejected(f"pickle tries to modify a loader object ({name})")


_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType(Frozen):
    __slots__ = ("dtype",)

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)


class _StorageRef(Frozen):
    __slots__ = ("stype", "key", "numel")

    def __init__(self, stype: _StorageType, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel


class _Storage(Frozen):
    """A parsed storage: its elements as a 1-D tensor."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


_STORAGE_TYPES = {("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()}


def checked_int(value: object, what: str, high: int = 2**62) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise Rejected(f"{what} {quote(value)} is not an integer in [0, {high}]")
    return value


def rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                      requires_grad: object, backward_hooks: object, metadata: object = None
                      ) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_tensor_v2: a bounds-checked view of a parsed storage."""
    if (not isinstance(storage, _Storage) or type(size) is not tuple or type(stride) is not tuple
            or len(size) != len(stride) or len(size) > 32 or type(requires_grad) is not bool):
        raise Rejected("malformed tensor record")
    if not isinstance(backward_hooks, dict) or backward_hooks or metadata is not None:
        raise Rejected("tensor record carries hooks or metadata")
    available = storage.tensor.numel()
    offset = checked_int(storage_offset, "tensor storage offset")
    shape = [checked_int(s, "tensor size") for s in size]
    steps = [checked_int(s, "tensor stride") for s in stride]
    numel = math.prod(shape)
    last = offset + sum((n - 1) * st for n, st in zip(shape, steps)) if numel else offset - 1
    if numel > available or last >= available:
        raise Rejected(f"tensor of size {shape} does not fit its storage of {available} elements")
    return torch.as_strided(storage.tensor, shape, steps, offset)


def rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_parameter: the parameter's data is all we need."""
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise Rejected("malformed parameter record")
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise Rejected("parameter record carries hooks")
    return data


class _StorageUnpickler(pickle.Unpickler):
    """Reads the pickles of a legacy torch.save stream; only storage types are importable."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _STORAGE_TYPES[(module, name)]
        except (KeyError, TypeError):
            raise Rejected(f"forbidden global '{quote(module)}.{quote(name)}' inside a "
                           "tensor storage blob") from None

    def persistent_load(self, pid: object) -> _StorageRef:
        # ('storage', storage type, key, location, element count, view metadata)
        if (type(pid) is not tuple or len(pid) != 6 or type(pid[0]) is not str
                or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
                or type(pid[2]) is not str or type(pid[3]) is not str
                or not pid[3].startswith(("cpu", "cuda")) or pid[5] is not None):
            raise Rejected("malformed storage reference inside a tensor storage blob")
        return _StorageRef(pid[1], pid[2], checked_int(pid[4], "storage size"))


def load_one(unpickler: Callable[[IO[bytes]], pickle.Unpickler], data: bytes, pos: int,
             forbidden: frozenset[str]) -> tuple[Any, int]:
    """Pre-scan the pickle at ``pos`` with pickletools, then unpickle it; returns (obj, end)."""
    if data[pos:pos + 1] != pickle.PROTO:
        raise Rejected("not a pickle (no protocol header)")
    stream = io.BytesIO(data)
    stream.seek(pos)
    count = 0
    try:
        for op, arg, _ in pickletools.genops(stream):
            count += 1
            if op.name in forbidden:
                raise Rejected(f"not an EG3D snapshot: forbidden pickle opcode {op.name}")
            if op.name in _PUT_OPS and not (isinstance(arg, int) and 0 <= arg <= count):
                raise Rejected(f"pickle memo index {quote(arg)} out of range")
    except (ValueError, struct.error) as exc:
        raise Rejected(f"not a valid pickle ({quote(str(exc), 120)})") from None
    end = stream.tell()
    return unpickler(io.BytesIO(data[pos:end])).load(), end


def load_from_bytes(blob: object, budget: Budget) -> _Storage:
    """Stand-in for torch.storage._load_from_bytes: parses a legacy (non-zip) torch.save stream.

    Every call copies its storage, and a file can call it many times on one memoised blob: each copy is
    charged to ``budget``.
    """
    if type(blob) is not bytes:
        raise Rejected("tensor storage blob is not bytes")
    header, pos = [], 0
    for _ in range(5):  # magic number, protocol, sys info, the storage reference, list of keys
        obj, pos = load_one(_StorageUnpickler, blob, pos, FORBIDDEN_OPS - {"BINPERSID"})
        header.append(obj)
    magic, protocol, info, ref, keys = header
    if type(magic) is not int or magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise Rejected("tensor storage blob is not a legacy torch.save stream")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise Rejected("tensor storage blob is not little-endian")
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise Rejected("tensor storage blob does not hold exactly one storage")
    (numel,) = struct.unpack_from("<q", blob, pos) if len(blob) >= pos + 8 else (-1,)
    itemsize = ref.stype.dtype.itemsize
    if numel != ref.numel or len(blob) != pos + 8 + numel * itemsize:
        raise Rejected(f"tensor storage blob holds {len(blob) - pos - 8} data bytes, expected "
                       f"{ref.numel} x {itemsize}")
    array = np.frombuffer(blob, dtype=ref.stype.dtype, count=numel, offset=pos + 8)
    budget.tensors(array.nbytes, "a tensor storage")
    return _Storage(torch.from_numpy(array.copy()))
