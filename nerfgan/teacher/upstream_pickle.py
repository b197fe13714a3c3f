"""Read an upstream EG3D snapshot pickle without executing anything from it.

Threat model: the pickle comes from the internet. Upstream loads it with ``pickle.load``, which
runs arbitrary callables named in the file, and its persistence module even ``exec``s the Python
source embedded in every persistent object. Here nothing named by the file is ever imported or
called: a restricted unpickler maps an explicit allow-list of globals to inert stand-ins written
in this module (anything else is rejected by name), the ``module_src`` strings are never compiled,
and the tensor storages (legacy ``torch.save`` streams nested inside the pickle) are parsed by a
second restricted unpickler plus numpy, never by ``torch.load``. Before any stream reaches the C
unpickler it is pre-scanned with :mod:`pickletools` so that counted lengths must fit in the bytes
present and memo indices stay small (no allocations bigger than the file); tensor views must lie
inside their storage. What comes out is plain data: the generator's init kwargs, its state dict
(float32 CPU tensors) and its ``neural_rendering_resolution``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nerfgan.errors import CheckpointError, InputFileError, UsageError

WHICH_CHOICES = ("G_ema", "G")
_GENERATOR_CLASS = "TriPlaneGenerator"
_PERSISTENT_VERSIONS = frozenset({6})
_PERSISTENT_META_KEYS = frozenset({"type", "version", "module_src", "class_name", "state"})
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_MAX_DEPTH = 64
# Opcodes an EG3D snapshot never needs: out-of-band buffers, the extension registry, protocol-0
# class instantiation and (outer stream only) persistent ids.
_FORBIDDEN_OPS = frozenset({"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER",
                            "READONLY_BUFFER", "PERSID", "BINPERSID"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


@dataclass(frozen=True)
class UpstreamGenerator:
    """The generator entry of an upstream snapshot, as plain data."""

    class_name: str  # upstream class name, e.g. "TriPlaneGenerator"
    init_kwargs: dict  # constructor keyword arguments: JSON-serialisable dicts/lists/scalars
    state_dict: "OrderedDict[str, torch.Tensor]"  # upstream G.state_dict(), float32 CPU, contiguous
    neural_rendering_resolution: int  # side of the volume-rendered feature image, pixels


class _Rejected(Exception):
    """Raised inside the unpicklers; turned into a CheckpointError that names the file."""


def _quote(text: object, limit: int = 80) -> str:
    """A short single-line rendering of an untrusted string."""
    shown = ascii(text) if not isinstance(text, str) or not text.isprintable() else text
    return shown if len(shown) <= limit else shown[:limit] + "..."


# ---------------------------------------------------------------------------------- stand-ins


class _Inert:
    """Stand-in for a non-persistent upstream class: records the __dict__ given by BUILD."""

    __slots__ = ("state",)
    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        if args or kwargs:
            raise _Rejected(f"unexpected constructor arguments for {cls.qualname}")
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise _Rejected(f"state of {self.qualname} is not a dict")
        self.state = state


_INERT_NAMES = (
    "training.triplane.OSGDecoder",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.activation.Softplus",
    "training.volumetric_rendering.renderer.ImportanceRenderer",
    "training.volumetric_rendering.ray_sampler.RaySampler",
    "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
)
_INERT_CLASSES = {
    tuple(name.rsplit(".", 1)): type(name.rsplit(".", 1)[1], (_Inert,), {"__slots__": (), "qualname": name})
    for name in _INERT_NAMES
}


class _PersistentObject:
    """What torch_utils.persistence would rebuild, reduced to its class name and state."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name = class_name
        self.state = state

    def __setstate__(self, state: object) -> None:
        raise _Rejected(f"BUILD applied to persistent object {self.class_name}")


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access; pickled as a dict)."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        if state:
            raise _Rejected("EasyDict carries unexpected state")


def _reconstruct_persistent_obj(meta: object) -> _PersistentObject:
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj: never runs module_src."""
    if not isinstance(meta, dict) or set(meta) != _PERSISTENT_META_KEYS:
        raise _Rejected("persistent object metadata is not of the documented shape")
    version = meta["version"]
    if meta["type"] != "class" or type(version) is not int or version not in _PERSISTENT_VERSIONS:
        raise _Rejected(f"persistent object of unsupported type/version {_quote(meta['type'])}/"
                        f"{_quote(version)}")
    if not isinstance(meta["module_src"], str) or not isinstance(meta["class_name"], str):
        raise _Rejected("persistent object metadata has non-string module_src or class_name")
    if not isinstance(meta["state"], dict):
        raise _Rejected(f"state of persistent object {_quote(meta['class_name'])} is not a dict")
    return _PersistentObject(meta["class_name"], meta["state"])


_NUMPY_CODES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


class _Dtype:
    """Stand-in for numpy.dtype: records the type code and byte order only."""

    __slots__ = ("code", "order")

    def __init__(self, code: str) -> None:
        self.code, self.order = code, "<"

    def __setstate__(self, state: object) -> None:
        # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment,
        # flags[, metadata]); only plain scalar types are accepted.
        if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise _Rejected(f"unsupported numpy dtype state for {self.code!r}")
        self.order = ">" if state[1] == ">" else "<"


def _numpy_dtype(code: object, align: object = False, copy: object = True) -> _Dtype:
    if not isinstance(code, str) or code not in _NUMPY_CODES:
        raise _Rejected(f"unsupported numpy dtype {_quote(code)}")
    return _Dtype(code)


def _numpy_scalar(dtype: object, data: object = None) -> np.generic:
    if not isinstance(dtype, _Dtype) or not isinstance(data, bytes):
        raise _Rejected("malformed numpy scalar")
    real = np.dtype(dtype.order + dtype.code)
    if len(data) != real.itemsize:
        raise _Rejected(f"numpy scalar of type {dtype.code} has {len(data)} bytes")
    return np.frombuffer(data, dtype=real)[0]


# ----------------------------------------------------------------------------------- tensors

_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


_STORAGE_TYPES = {("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}


class _Storage:
    """A parsed storage: its elements as a 1-D tensor."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __setstate__(self, state: object) -> None:
        raise _Rejected("BUILD applied to a storage")


def _checked_int(value: object, what: str, low: int = 0, high: int = 2**62) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _Rejected(f"tensor {what} {_quote(value)} is not an integer in [{low}, {high}]")
    return value


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object, backward_hooks: object, metadata: object = None
                       ) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_tensor_v2: a bounds-checked view of a parsed storage."""
    if not isinstance(storage, _Storage) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise _Rejected("malformed tensor record")
    if len(size) != len(stride) or len(size) > 32 or not isinstance(requires_grad, bool):
        raise _Rejected("malformed tensor record")
    if not isinstance(backward_hooks, dict) or backward_hooks or metadata:
        raise _Rejected("tensor record carries hooks or metadata")
    available = storage.tensor.numel()
    offset = _checked_int(storage_offset, "storage offset")
    shape = [_checked_int(s, "size") for s in size]
    steps = [_checked_int(s, "stride") for s in stride]
    numel = 1
    for s in shape:
        numel *= s
    last = offset + sum((n - 1) * st for n, st in zip(shape, steps)) if numel else offset - 1
    if numel > available or last >= available:
        raise _Rejected(f"tensor of size {list(shape)} does not fit its storage of {available}")
    return torch.as_strided(storage.tensor, shape, steps, offset)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_parameter: the parameter's data is all we need."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise _Rejected("malformed parameter record")
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise _Rejected("parameter record carries hooks")
    return data


class _StorageRef:
    __slots__ = ("stype", "key", "numel")

    def __init__(self, stype: _StorageType, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel


class _StorageUnpickler(pickle.Unpickler):
    """Reads the pickles of a legacy torch.save stream; only storage types are importable."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _STORAGE_TYPES[(module, name)]
        except (KeyError, TypeError):
            raise _Rejected(f"forbidden global '{_quote(module)}.{_quote(name)}' inside a "
                            "tensor storage blob") from None

    def persistent_load(self, pid: object) -> _StorageRef:
        if (not isinstance(pid, tuple) or len(pid) != 6 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[3], str) or not pid[3].startswith(("cpu", "cuda"))
                or pid[5] is not None):
            raise _Rejected("malformed storage reference inside a tensor storage blob")
        return _StorageRef(pid[1], pid[2], _checked_int(pid[4], "storage size"))


def _load_one(unpickler: type[pickle.Unpickler], data: bytes, pos: int, forbidden: frozenset[str]
              ) -> tuple[Any, int]:
    """Pre-scan the pickle starting at ``pos`` with pickletools, then unpickle it; returns (obj, end)."""
    if data[pos:pos + 1] != pickle.PROTO:
        raise _Rejected("not a pickle (no protocol header)")
    stream = io.BytesIO(data)
    stream.seek(pos)
    count = 0
    try:
        for op, arg, _ in pickletools.genops(stream):
            count += 1
            if op.name in forbidden:
                raise _Rejected(f"not an EG3D snapshot: forbidden pickle opcode {op.name}")
            if op.name in _PUT_OPS and not 0 <= int(arg) <= count:
                raise _Rejected(f"pickle memo index {_quote(arg)} out of range")
    except (ValueError, struct.error) as exc:
        raise _Rejected(f"not a valid pickle ({_quote(str(exc), 120)})") from None
    end = stream.tell()
    return unpickler(io.BytesIO(data[pos:end])).load(), end


def _load_from_bytes(blob: object) -> _Storage:
    """Stand-in for torch.storage._load_from_bytes: parses the legacy (non-zip) torch.save stream."""
    if not isinstance(blob, bytes):
        raise _Rejected("tensor storage blob is not bytes")
    allowed = _FORBIDDEN_OPS - {"BINPERSID"}
    header = []
    pos = 0
    for _ in range(5):  # magic, protocol, sys info, the storage reference, the list of keys
        obj, pos = _load_one(_StorageUnpickler, blob, pos, allowed)
        header.append(obj)
    magic, protocol, info, ref, keys = header
    if type(magic) is not int or magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise _Rejected("tensor storage blob is not a legacy torch.save stream")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise _Rejected("tensor storage blob is not little-endian")
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise _Rejected("tensor storage blob does not hold exactly one storage")
    if len(blob) < pos + 8:
        raise _Rejected("tensor storage blob is truncated")
    (numel,) = struct.unpack_from("<q", blob, pos)
    itemsize = ref.stype.dtype.itemsize
    if numel != ref.numel or len(blob) != pos + 8 + numel * itemsize:
        raise _Rejected(f"tensor storage blob holds {len(blob) - pos - 8} data bytes, expected "
                        f"{ref.numel} x {itemsize}")
    array = np.frombuffer(blob, dtype=ref.stype.dtype, count=numel, offset=pos + 8)
    return _Storage(torch.from_numpy(array.copy()))


# ------------------------------------------------------------------------------- the snapshot

_OUTER_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    **_INERT_CLASSES,
}


class _SnapshotUnpickler(pickle.Unpickler):
    """The outer unpickler: every global is looked up in the explicit allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _OUTER_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Rejected(f"forbidden global '{_quote(module)}.{_quote(name)}' (only EG3D network "
                            "classes are allowed; nothing from the file is executed)") from None

    def persistent_load(self, pid: object) -> Any:
        raise _Rejected("unexpected persistent id in a snapshot pickle")


def _collect(obj: object, prefix: str, out: OrderedDict, path: list[int]) -> None:
    """Append obj's parameters, persistent buffers, then its children's, as Module.state_dict does."""
    if not isinstance(obj, (_PersistentObject, _Inert)):
        raise _Rejected(f"module {_quote(prefix or '<root>')} is a {type(obj).__name__}, not a module")
    if id(obj) in path or len(path) > _MAX_DEPTH:
        raise _Rejected(f"module {_quote(prefix)} is cyclic or nested too deeply")
    state = obj.state
    params, buffers = state.get("_parameters"), state.get("_buffers")
    skip, modules = state.get("_non_persistent_buffers_set"), state.get("_modules")
    if not (isinstance(params, dict) and isinstance(buffers, dict) and isinstance(modules, dict)
            and isinstance(skip, set)):
        raise _Rejected(f"module {_quote(prefix or '<root>')} lacks the nn.Module attributes")
    owned = list(params.items()) + [(k, v) for k, v in buffers.items() if k not in skip]
    for name, tensor in owned:
        if tensor is None:
            continue
        key = _check_name(name, prefix)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise _Rejected(f"state-dict entry {_quote(key)} is {got}, expected a float32 tensor")
        if key in out:
            raise _Rejected(f"duplicate state-dict entry {_quote(key)}")
        out[key] = tensor.detach().clone(memory_format=torch.contiguous_format)
    for name, child in modules.items():
        if child is not None:
            _collect(child, _check_name(name, prefix) + ".", out, path + [id(obj)])


def _check_name(name: object, prefix: str) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise _Rejected(f"invalid member name {_quote(name)} under {_quote(prefix or '<root>')}")
    return prefix + name


def _plain(value: object, where: str, depth: int = 0) -> Any:
    """Convert init kwargs to JSON-serialisable plain data (EasyDict -> dict, tuple -> list)."""
    if depth > _MAX_DEPTH:
        raise _Rejected(f"{where} is nested too deeply")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Rejected(f"{where} has a non-string key")
        return {k: _plain(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _Rejected(f"{where} holds a {type(value).__name__}, expected plain data")


def read_upstream_snapshot(path: str | Path, which: str = "G_ema") -> UpstreamGenerator:
    """Read the generator ``which`` ("G_ema" or "G") of an upstream EG3D snapshot pickle.

    Raises UsageError for a bad ``which``, InputFileError when the file is missing or unreadable
    and CheckpointError when it is not an EG3D snapshot (or tries to reference anything else).
    """
    if which not in WHICH_CHOICES:
        raise UsageError(f"--which: expected one of {', '.join(WHICH_CHOICES)}, got {_quote(which)}")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        top, _ = _load_one(_SnapshotUnpickler, data, 0, _FORBIDDEN_OPS)
        return _extract(top, which)
    except _Rejected as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{path}: not a readable EG3D snapshot pickle "
                              f"({type(exc).__name__}: {_quote(str(exc), 120)})") from exc


def _extract(top: object, which: str) -> UpstreamGenerator:
    if not isinstance(top, dict) or which not in top:
        found = type(top).__name__ if not isinstance(top, dict) else f"keys {_quote(sorted(map(str, top)), 120)}"
        raise _Rejected(f"expected an EG3D snapshot (a dict with key '{which}'), found {found}")
    gen = top[which]
    name = gen.class_name if isinstance(gen, _PersistentObject) else type(gen).__name__
    if not isinstance(gen, _PersistentObject) or gen.class_name != _GENERATOR_CLASS:
        raise _Rejected(f"entry '{which}' is {_quote(name)}, expected a {_GENERATOR_CLASS}")
    state = gen.state
    if "_init_kwargs" not in state or "neural_rendering_resolution" not in state:
        raise _Rejected(f"entry '{which}' lacks _init_kwargs or neural_rendering_resolution")
    if state.get("_init_args", ()) not in ((), []):
        raise _Rejected(f"entry '{which}' has positional constructor arguments")
    kwargs = _plain(state["_init_kwargs"], f"{which}._init_kwargs")
    nrr = _plain(state["neural_rendering_resolution"], f"{which}.neural_rendering_resolution")
    if not isinstance(kwargs, dict) or type(nrr) is not int or nrr <= 0:
        raise _Rejected(f"entry '{which}' has malformed _init_kwargs or neural_rendering_resolution")
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(gen, "", sd, [])
    return UpstreamGenerator(gen.class_name, kwargs, sd, nrr)
