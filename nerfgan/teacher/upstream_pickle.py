"""Read an upstream EG3D snapshot pickle without executing anything from it.

Threat model: the pickle comes from the internet. Upstream loads it with ``pickle.load``, which
calls whatever callables the file names, and its persistence module even ``exec``s the Python
source embedded in every persistent object. Here nothing named by the file is imported or called:
a restricted unpickler maps an explicit allow-list of globals to inert stand-ins written in this
module (anything else is rejected by name), ``module_src`` strings are never compiled, and tensor
storages (legacy ``torch.save`` streams nested in the pickle) are parsed by a second restricted
unpickler plus numpy, never by ``torch.load``. The stand-ins cannot be modified by the file (BUILD
on them fails), so one file cannot poison the next load. Every stream is pre-scanned with
:mod:`pickletools` before the C unpickler sees it: counted lengths must fit in the bytes present
and memo indices stay small, so no allocation exceeds the file; tensor views must lie inside their
storage. What comes out is plain data: init kwargs, a float32 state dict and the
``neural_rendering_resolution``.
"""

from __future__ import annotations

import io
import math
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
# Opcodes a snapshot never needs: out-of-band buffers, the extension registry, protocol-0 class
# instantiation and (in the outer stream) persistent ids.
_FORBIDDEN_OPS = frozenset({"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEXT_BUFFER",
                            "READONLY_BUFFER", "PERSID", "BINPERSID"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


@dataclass(frozen=True)
class UpstreamGenerator:
    """The generator entry of an upstream snapshot, as plain data."""

    class_name: str  # upstream class name, e.g. "TriPlaneGenerator"
    init_kwargs: dict[str, Any]  # constructor keyword arguments, JSON-serialisable plain data
    state_dict: OrderedDict[str, torch.Tensor]  # upstream G.state_dict(): float32 CPU contiguous
    neural_rendering_resolution: int  # side of the volume-rendered feature image, pixels


class _Rejected(Exception):
    """Raised inside the unpicklers; turned into a CheckpointError that names the file."""


def _quote(text: object, limit: int = 80) -> str:
    """A short single-line rendering of an untrusted value."""
    shown = text if isinstance(text, str) and text.isprintable() else ascii(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


# ---------------------------------------------------------------------------------- stand-ins


class _Frozen:
    """Base of the loader's own records: BUILD (``__setstate__``) on one, or on its class, fails."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        name = type(self).__name__.strip("_")
        raise _Rejected(f"pickle tries to modify a loader object ({name})")


class _StandIn(_Frozen):
    """An allow-listed function, wrapped so that the file cannot alter it (its __defaults__...)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


class _Inert:
    """Stand-in for a non-persistent upstream class (NEWOBJ + BUILD): records its __dict__."""

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


_INERT_CLASSES = {
    (module, name): type(name, (_Inert,), {"__slots__": (), "qualname": f"{module}.{name}"})
    for module, name in [
        ("training.triplane", "OSGDecoder"),
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.modules.activation", "Softplus"),
        ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
        ("training.volumetric_rendering.ray_sampler", "RaySampler"),
        ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
    ]
}


class _PersistentObject(_Frozen):
    """What torch_utils.persistence would rebuild, reduced to its class name and state."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name, self.state = class_name, state


class _EasyDict(dict):  # type: ignore[type-arg]
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access, pickled as a dict)."""

    __slots__ = ()

    # Also makes BUILD on the class object fail instead of setting class attributes.
    def __setstate__(self, state: object) -> None:
        if state:
            raise _Rejected("EasyDict carries unexpected state")


def _reconstruct_persistent_obj(meta: object) -> _PersistentObject:
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj; never runs module_src."""
    if not isinstance(meta, dict) or set(meta) != _PERSISTENT_META_KEYS:
        raise _Rejected("persistent object metadata is not of the documented shape")
    kind, version = meta["type"], meta["version"]
    if type(kind) is not str or kind != "class" or type(version) is not int \
            or version not in _PERSISTENT_VERSIONS:
        raise _Rejected(f"persistent object has type {_quote(kind)} version {_quote(version)}; "
                        f"only type class version {min(_PERSISTENT_VERSIONS)} is known")
    if type(meta["module_src"]) is not str or type(meta["class_name"]) is not str:
        raise _Rejected("persistent object metadata has a non-string module_src or class_name")
    if not isinstance(meta["state"], dict):
        raise _Rejected(f"state of persistent object {_quote(meta['class_name'])} is not a dict")
    return _PersistentObject(meta["class_name"], meta["state"])


_NUMPY_CODES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


class _Dtype:
    """Stand-in for numpy.dtype (called as dtype(code, align, copy)): a plain type code + order."""

    __slots__ = ("code", "order")

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if type(code) is not str or code not in _NUMPY_CODES:
            raise _Rejected(f"unsupported numpy dtype {_quote(code)}")
        self.code, self.order = code, "<"

    def __setstate__(self, state: object) -> None:
        # numpy's state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[,
        # metadata]); subarray, names and fields must be None (a plain scalar type).
        if (type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise _Rejected(f"unsupported numpy dtype state for {self.code!r}")
        self.order = ">" if state[1] == ">" else "<"


def _numpy_scalar(dtype: object, data: object = None) -> np.generic:
    if not isinstance(dtype, _Dtype) or type(data) is not bytes:
        raise _Rejected("malformed numpy scalar")
    real = np.dtype(dtype.order + dtype.code)
    if len(data) != real.itemsize:
        raise _Rejected(f"numpy scalar of type {dtype.code} has {len(data)} bytes")
    scalar: np.generic = np.frombuffer(data, dtype=real)[0]
    return scalar


# ----------------------------------------------------------------------------------- tensors

_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType(_Frozen):
    __slots__ = ("dtype",)

    def __init__(self, dtype: str) -> None:
        self.dtype = np.dtype(dtype)


class _StorageRef(_Frozen):
    __slots__ = ("stype", "key", "numel")

    def __init__(self, stype: _StorageType, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel


class _Storage(_Frozen):
    """A parsed storage: its elements as a 1-D tensor."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


_STORAGE_TYPES = {("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()}


def _checked_int(value: object, what: str, high: int = 2**62) -> int:
    if type(value) is not int or not 0 <= value <= high:
        raise _Rejected(f"{what} {_quote(value)} is not an integer in [0, {high}]")
    return value


def _rebuild_tensor_v2(storage: object, storage_offset: object, size: object, stride: object,
                       requires_grad: object, backward_hooks: object, metadata: object = None
                       ) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_tensor_v2: a bounds-checked view of a parsed storage."""
    if (not isinstance(storage, _Storage) or type(size) is not tuple or type(stride) is not tuple
            or len(size) != len(stride) or len(size) > 32 or type(requires_grad) is not bool):
        raise _Rejected("malformed tensor record")
    if not isinstance(backward_hooks, dict) or backward_hooks or metadata is not None:
        raise _Rejected("tensor record carries hooks or metadata")
    available = storage.tensor.numel()
    offset = _checked_int(storage_offset, "tensor storage offset")
    shape = [_checked_int(s, "tensor size") for s in size]
    steps = [_checked_int(s, "tensor stride") for s in stride]
    numel = math.prod(shape)
    last = offset + sum((n - 1) * st for n, st in zip(shape, steps)) if numel else offset - 1
    if numel > available or last >= available:
        raise _Rejected(f"tensor of size {shape} does not fit its storage of {available} elements")
    return torch.as_strided(storage.tensor, shape, steps, offset)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> torch.Tensor:
    """Stand-in for torch._utils._rebuild_parameter: the parameter's data is all we need."""
    if not isinstance(data, torch.Tensor) or type(requires_grad) is not bool:
        raise _Rejected("malformed parameter record")
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise _Rejected("parameter record carries hooks")
    return data


class _StorageUnpickler(pickle.Unpickler):
    """Reads the pickles of a legacy torch.save stream; only storage types are importable."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _STORAGE_TYPES[(module, name)]
        except (KeyError, TypeError):
            raise _Rejected(f"forbidden global '{_quote(module)}.{_quote(name)}' inside a "
                            "tensor storage blob") from None

    def persistent_load(self, pid: object) -> _StorageRef:
        # ('storage', storage type, key, location, element count, view metadata)
        if (type(pid) is not tuple or len(pid) != 6 or type(pid[0]) is not str
                or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
                or type(pid[2]) is not str or type(pid[3]) is not str
                or not pid[3].startswith(("cpu", "cuda")) or pid[5] is not None):
            raise _Rejected("malformed storage reference inside a tensor storage blob")
        return _StorageRef(pid[1], pid[2], _checked_int(pid[4], "storage size"))


def _load_one(unpickler: type[pickle.Unpickler], data: bytes, pos: int, forbidden: frozenset[str]
              ) -> tuple[Any, int]:
    """Pre-scan the pickle at ``pos`` with pickletools, then unpickle it; returns (obj, end)."""
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
            if op.name in _PUT_OPS and not (isinstance(arg, int) and 0 <= arg <= count):
                raise _Rejected(f"pickle memo index {_quote(arg)} out of range")
    except (ValueError, struct.error) as exc:
        raise _Rejected(f"not a valid pickle ({_quote(str(exc), 120)})") from None
    end = stream.tell()
    return unpickler(io.BytesIO(data[pos:end])).load(), end


def _load_from_bytes(blob: object) -> _Storage:
    """Stand-in for torch.storage._load_from_bytes: parses a legacy (non-zip) torch.save stream."""
    if type(blob) is not bytes:
        raise _Rejected("tensor storage blob is not bytes")
    header, pos = [], 0
    for _ in range(5):  # magic number, protocol, sys info, the storage reference, list of keys
        obj, pos = _load_one(_StorageUnpickler, blob, pos, _FORBIDDEN_OPS - {"BINPERSID"})
        header.append(obj)
    magic, protocol, info, ref, keys = header
    if type(magic) is not int or magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise _Rejected("tensor storage blob is not a legacy torch.save stream")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise _Rejected("tensor storage blob is not little-endian")
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise _Rejected("tensor storage blob does not hold exactly one storage")
    (numel,) = struct.unpack_from("<q", blob, pos) if len(blob) >= pos + 8 else (-1,)
    itemsize = ref.stype.dtype.itemsize
    if numel != ref.numel or len(blob) != pos + 8 + numel * itemsize:
        raise _Rejected(f"tensor storage blob holds {len(blob) - pos - 8} data bytes, expected "
                        f"{ref.numel} x {itemsize}")
    array = np.frombuffer(blob, dtype=ref.stype.dtype, count=numel, offset=pos + 8)
    return _Storage(torch.from_numpy(array.copy()))


# ------------------------------------------------------------------------------- the snapshot

# Classes here define __setstate__, so BUILD on the class object fails; OrderedDict is immutable
# C code. Functions are wrapped in _StandIn so that BUILD cannot set their attributes.
_OUTER_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _Dtype,
    ("numpy._core.multiarray", "scalar"): _StandIn(_numpy_scalar),
    ("numpy.core.multiarray", "scalar"): _StandIn(_numpy_scalar),
    ("torch._utils", "_rebuild_parameter"): _StandIn(_rebuild_parameter),
    ("torch._utils", "_rebuild_tensor_v2"): _StandIn(_rebuild_tensor_v2),
    ("torch.storage", "_load_from_bytes"): _StandIn(_load_from_bytes),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _StandIn(_reconstruct_persistent_obj),
    **_INERT_CLASSES,
}


class _SnapshotUnpickler(pickle.Unpickler):
    """The outer unpickler: every global is looked up in the explicit allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _OUTER_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _Rejected(f"forbidden global '{_quote(module)}.{_quote(name)}' (only EG3D "
                            "network classes are allowed; nothing from the file is executed)"
                            ) from None

    def persistent_load(self, pid: object) -> Any:
        raise _Rejected("unexpected persistent id in a snapshot pickle")


def _collect(obj: object, prefix: str, out: OrderedDict[str, torch.Tensor], path: list[int]
             ) -> None:
    """Add obj's parameters, persistent buffers, then its children's, as Module.state_dict does."""
    where = _quote(prefix.rstrip(".") or "<root>")
    if not isinstance(obj, (_PersistentObject, _Inert)):
        raise _Rejected(f"module {where} is a {type(obj).__name__}, not a module")
    if id(obj) in path or len(path) > _MAX_DEPTH:
        raise _Rejected(f"module {where} is cyclic or nested too deeply")
    state = obj.state
    params, buffers = state.get("_parameters"), state.get("_buffers")
    skip, modules = state.get("_non_persistent_buffers_set"), state.get("_modules")
    if not (isinstance(params, dict) and isinstance(buffers, dict) and isinstance(modules, dict)
            and isinstance(skip, set)):
        raise _Rejected(f"module {where} lacks the nn.Module attributes")

    def key_of(name: object) -> str:
        if type(name) is not str or not name or "." in name:
            raise _Rejected(f"invalid member name {_quote(name)} in module {where}")
        return prefix + name

    owned = list(params.items()) + [(k, v) for k, v in buffers.items() if k not in skip]
    for name, tensor in owned:
        if tensor is None:
            continue
        key = key_of(name)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise _Rejected(f"state-dict entry {_quote(key)} is {got}, expected a float32 tensor")
        if key in out:
            raise _Rejected(f"duplicate state-dict entry {_quote(key)}")
        out[key] = tensor.detach().clone(memory_format=torch.contiguous_format)
    for name, child in modules.items():
        if child is not None:
            _collect(child, key_of(name) + ".", out, path + [id(obj)])


def _plain(value: object, where: str, depth: int = 0) -> Any:
    """Convert init kwargs to JSON-serialisable plain data (EasyDict -> dict, tuple -> list)."""
    if depth > _MAX_DEPTH:
        raise _Rejected(f"{where} is nested too deeply")
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value) if isinstance(value, float) else int(value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _Rejected(f"{where} has a non-string key")
        return {k: _plain(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise _Rejected(f"{where} holds a {type(value).__name__}, expected plain data")


def _extract(top: object, which: str) -> UpstreamGenerator:
    """Pick the generator out of the unpickled top-level dict and flatten it."""
    if not isinstance(top, dict) or which not in top:
        found = (f"keys {_quote(sorted(k for k in top if isinstance(k, str)), 120)}"
                 if isinstance(top, dict) else type(top).__name__)
        raise _Rejected(f"expected an EG3D snapshot (a dict with key '{which}'), found {found}")
    gen = top[which]
    name = gen.class_name if isinstance(gen, _PersistentObject) else type(gen).__name__
    if not isinstance(gen, _PersistentObject) or gen.class_name != _GENERATOR_CLASS:
        raise _Rejected(f"entry '{which}' is {_quote(name)}, expected a {_GENERATOR_CLASS}")
    state = gen.state
    if "_init_kwargs" not in state or "neural_rendering_resolution" not in state:
        raise _Rejected(f"entry '{which}' lacks _init_kwargs or neural_rendering_resolution")
    args = state.get("_init_args", ())
    if not isinstance(args, (tuple, list)) or args:
        raise _Rejected(f"entry '{which}' has positional constructor arguments")
    kwargs = _plain(state["_init_kwargs"], f"{which}._init_kwargs")
    nrr = _plain(state["neural_rendering_resolution"], f"{which}.neural_rendering_resolution")
    if not isinstance(kwargs, dict) or type(nrr) is not int or nrr <= 0:
        raise _Rejected(f"entry '{which}' has a malformed _init_kwargs or "
                        "neural_rendering_resolution")
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(gen, "", sd, [])
    return UpstreamGenerator(gen.class_name, kwargs, sd, nrr)


def read_upstream_snapshot(path: str | Path, which: str = "G_ema") -> UpstreamGenerator:
    """Read the generator ``which`` ("G_ema" or "G") of an upstream EG3D snapshot pickle.

    Raises UsageError for a bad ``which``, InputFileError when the file is missing or unreadable
    and CheckpointError when it is not an EG3D snapshot or references anything not allow-listed.
    """
    if which not in WHICH_CHOICES:
        choices = ", ".join(WHICH_CHOICES)
        raise UsageError(f"--which: expected one of {choices}, got {_quote(which)}")
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
        # What the C unpickler (or a stand-in given arguments of the wrong shape) raises for a
        # corrupt stream; the cause stays chained for debugging.
        raise CheckpointError(f"{path}: not a readable EG3D snapshot pickle "
                              f"({type(exc).__name__}: {_quote(str(exc), 120)})") from exc
