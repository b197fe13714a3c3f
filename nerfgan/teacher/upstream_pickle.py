"""Read an upstream EG3D snapshot pickle without executing anything from it.

Threat model: the pickle comes from the internet. Upstream loads it with ``pickle.load``, which
calls whatever callables the file names, and its persistence module even ``exec``s the Python
source embedded in every persistent object. Here nothing named by the file is imported or called:
a restricted unpickler maps an explicit allow-list of globals to inert stand-ins written in this
module (anything else is rejected by name), ``module_src`` strings are never compiled, and tensor
storages (legacy ``torch.save`` streams nested in the pickle) are parsed by a second restricted
unpickler plus numpy, never by ``torch.load`` (:mod:`nerfgan.teacher.upstream_storage`). The
stand-ins cannot be modified by the file (BUILD on them fails), so one file cannot poison the next
load. Every stream is pre-scanned with :mod:`pickletools` before the C unpickler sees it: counted
lengths must fit in the bytes present and memo indices stay small, so no allocation exceeds the
file; tensor views must lie inside their storage. Shared references (the pickle memo) cannot
multiply memory: a module reached twice is refused (EG3D's modules form a tree), a tensor reached
twice is copied once, the init kwargs may spell out to at most ``MAX_KWARGS_BYTES``, and the
tensor bytes materialised (storage copies and state-dict clones) stay within
``MATERIALISED_PER_FILE_BYTE`` x the file size + ``MATERIALISED_SLACK_BYTES``
(nerfgan.teacher.limits). What comes out is plain data: init kwargs, a float32 state dict and the
``neural_rendering_resolution``.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from nerfgan.errors import CheckpointError, InputFileError, UsageError
from nerfgan.teacher.upstream_storage import (
    FORBIDDEN_OPS, Budget, Frozen, Rejected, load_from_bytes, load_one, quote, rebuild_parameter, rebuild_tensor_v2,
)

WHICH_CHOICES = ("G_ema", "G")
_GENERATOR_CLASS = "TriPlaneGenerator"
_PERSISTENT_VERSIONS = frozenset({6})
_PERSISTENT_META_KEYS = frozenset({"type", "version", "module_src", "class_name", "state"})
_MAX_DEPTH = 64


@dataclass(frozen=True)
class UpstreamGenerator:
    """The generator entry of an upstream snapshot, as plain data."""

    class_name: str  # upstream class name, e.g. "TriPlaneGenerator"
    init_kwargs: dict[str, Any]  # constructor keyword arguments, JSON-serialisable plain data
    state_dict: OrderedDict[str, torch.Tensor]  # upstream G.state_dict(): float32 CPU contiguous
    neural_rendering_resolution: int  # side of the volume-rendered feature image, pixels


# ---------------------------------------------------------------------------------- stand-ins


class _StandIn(Frozen):
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
            raise Rejected(f"unexpected constructor arguments for {cls.qualname}")
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise Rejected(f"state of {self.qualname} is not a dict")
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


class _PersistentObject(Frozen):
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
            raise Rejected("EasyDict carries unexpected state")


def _reconstruct_persistent_obj(meta: object) -> _PersistentObject:
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj; never runs module_src."""
    if not isinstance(meta, dict) or set(meta) != _PERSISTENT_META_KEYS:
        raise Rejected("persistent object metadata is not of the documented shape")
    kind, version = meta["type"], meta["version"]
    if type(kind) is not str or kind != "class" or type(version) is not int \
            or version not in _PERSISTENT_VERSIONS:
        raise Rejected(f"persistent object has type {quote(kind)} version {quote(version)}; "
                       f"only type class version {min(_PERSISTENT_VERSIONS)} is known")
    if type(meta["module_src"]) is not str or type(meta["class_name"]) is not str:
        raise Rejected("persistent object metadata has a non-string module_src or class_name")
    if not isinstance(meta["state"], dict):
        raise Rejected(f"state of persistent object {quote(meta['class_name'])} is not a dict")
    return _PersistentObject(meta["class_name"], meta["state"])


_NUMPY_CODES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


class _Dtype:
    """Stand-in for numpy.dtype (called as dtype(code, align, copy)): a plain type code + order."""

    __slots__ = ("code", "order")

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        if type(code) is not str or code not in _NUMPY_CODES:
            raise Rejected(f"unsupported numpy dtype {quote(code)}")
        self.code, self.order = code, "<"

    def __setstate__(self, state: object) -> None:
        # numpy's state: (version, byteorder, subarray, names, fields, elsize, alignment, flags[,
        # metadata]); subarray, names and fields must be None (a plain scalar type).
        if (type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4)
                or state[1] not in ("<", ">", "|", "=") or state[2:5] != (None, None, None)):
            raise Rejected(f"unsupported numpy dtype state for {self.code!r}")
        self.order = ">" if state[1] == ">" else "<"


def _numpy_scalar(dtype: object, data: object = None) -> np.generic:
    if not isinstance(dtype, _Dtype) or type(data) is not bytes:
        raise Rejected("malformed numpy scalar")
    real = np.dtype(dtype.order + dtype.code)
    if len(data) != real.itemsize:
        raise Rejected(f"numpy scalar of type {dtype.code} has {len(data)} bytes")
    scalar: np.generic = np.frombuffer(data, dtype=real)[0]
    return scalar


# ------------------------------------------------------------------------------- the snapshot

# Classes here define __setstate__, so BUILD on the class object fails; OrderedDict is immutable
# C code. Functions are wrapped in _StandIn so that BUILD cannot set their attributes.
_OUTER_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): _Dtype,
    ("numpy._core.multiarray", "scalar"): _StandIn(_numpy_scalar),
    ("numpy.core.multiarray", "scalar"): _StandIn(_numpy_scalar),
    ("torch._utils", "_rebuild_parameter"): _StandIn(rebuild_parameter),
    ("torch._utils", "_rebuild_tensor_v2"): _StandIn(rebuild_tensor_v2),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _StandIn(_reconstruct_persistent_obj),
    **_INERT_CLASSES,
}


_LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")


class _SnapshotUnpickler(pickle.Unpickler):
    """The outer unpickler: every global is looked up in the explicit allow-list.

    torch.storage._load_from_bytes maps to a stand-in of this unpickler's own, which charges the storages
    it copies to the read's budget.
    """

    def __init__(self, file: IO[bytes], budget: Budget) -> None:
        super().__init__(file)
        self._load_storage = _StandIn(lambda blob: load_from_bytes(blob, budget))

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _LOAD_FROM_BYTES:
            return self._load_storage
        try:
            return _OUTER_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise Rejected(f"forbidden global '{quote(module)}.{quote(name)}' (only EG3D "
                           "network classes are allowed; nothing from the file is executed)"
                           ) from None

    def persistent_load(self, pid: object) -> Any:
        raise Rejected("unexpected persistent id in a snapshot pickle")


@dataclass
class _Walk:
    """State of one walk through a module tree: modules seen, tensors already copied, the budget."""

    budget: Budget
    seen: dict[int, str]  # id of each module visited -> its key prefix
    copies: dict[int, torch.Tensor]  # id of each tensor copied -> its copy (a tensor reached twice is copied once)


def _collect(obj: object, prefix: str, out: OrderedDict[str, torch.Tensor], walk: _Walk, depth: int = 0
             ) -> None:
    """Add obj's parameters, persistent buffers, then its children's, as Module.state_dict does.

    A module reached twice is refused (a DAG of k levels would give 2**k paths from a file of k records).
    """
    where = quote(prefix.rstrip(".") or "<root>")
    if not isinstance(obj, (_PersistentObject, _Inert)):
        raise Rejected(f"module {where} is a {type(obj).__name__}, not a module")
    if id(obj) in walk.seen:
        first = quote(walk.seen[id(obj)].rstrip(".") or "<root>")
        raise Rejected(f"module {where} is the module {first} again: shared modules (a cycle or a DAG) are "
                       "not an EG3D structure")
    if depth > _MAX_DEPTH:
        raise Rejected(f"module {where} is nested too deeply")
    walk.seen[id(obj)] = prefix
    state = obj.state
    params, buffers = state.get("_parameters"), state.get("_buffers")
    skip, modules = state.get("_non_persistent_buffers_set"), state.get("_modules")
    if not (isinstance(params, dict) and isinstance(buffers, dict) and isinstance(modules, dict)
            and isinstance(skip, set)):
        raise Rejected(f"module {where} lacks the nn.Module attributes")

    def key_of(name: object) -> str:
        if type(name) is not str or not name or "." in name:
            raise Rejected(f"invalid member name {quote(name)} in module {where}")
        return prefix + name

    owned = list(params.items()) + [(k, v) for k, v in buffers.items() if k not in skip]
    for name, tensor in owned:
        if tensor is None:
            continue
        key = key_of(name)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32:
            got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise Rejected(f"state-dict entry {quote(key)} is {got}, expected a float32 tensor")
        if key in out:
            raise Rejected(f"duplicate state-dict entry {quote(key)}")
        if id(tensor) not in walk.copies:
            walk.budget.tensors(tensor.numel() * tensor.element_size(), f"state-dict entry {quote(key)}")
            walk.copies[id(tensor)] = tensor.detach().clone(memory_format=torch.contiguous_format)
        out[key] = walk.copies[id(tensor)]
    for name, child in modules.items():
        if child is not None:
            _collect(child, key_of(name) + ".", out, walk, depth + 1)


def _plain(value: object, where: str, budget: Budget, depth: int = 0) -> Any:
    """Convert init kwargs to JSON-serialisable plain data (EasyDict -> dict, tuple -> list).

    Each value is charged to ``budget`` as JSON would spell it out, every time it is reached: shared
    references cannot make the result (or its JSON) larger than MAX_KWARGS_BYTES.
    """
    if depth > _MAX_DEPTH:
        raise Rejected(f"{where} is nested too deeply")
    budget.kwargs(8 + (len(value) if isinstance(value, str) else 0), where)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value) if isinstance(value, float) else int(value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise Rejected(f"{where} has a non-string key")
        budget.kwargs(sum(len(k) for k in value), where)
        return {k: _plain(v, f"{where}.{k}", budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", budget, depth + 1) for i, v in enumerate(value)]
    raise Rejected(f"{where} holds a {type(value).__name__}, expected plain data")


def _extract(top: object, which: str, budget: Budget) -> UpstreamGenerator:
    """Pick the generator out of the unpickled top-level dict and flatten it."""
    if not isinstance(top, dict) or which not in top:
        found = (f"keys {quote(sorted(k for k in top if isinstance(k, str)), 120)}"
                 if isinstance(top, dict) else type(top).__name__)
        raise Rejected(f"expected an EG3D snapshot (a dict with key '{which}'), found {found}")
    gen = top[which]
    name = gen.class_name if isinstance(gen, _PersistentObject) else type(gen).__name__
    if not isinstance(gen, _PersistentObject) or gen.class_name != _GENERATOR_CLASS:
        raise Rejected(f"entry '{which}' is {quote(name)}, expected a {_GENERATOR_CLASS}")
    state = gen.state
    if "_init_kwargs" not in state or "neural_rendering_resolution" not in state:
        raise Rejected(f"entry '{which}' lacks _init_kwargs or neural_rendering_resolution")
    args = state.get("_init_args", ())
    if not isinstance(args, (tuple, list)) or args:
        raise Rejected(f"entry '{which}' has positional constructor arguments")
    kwargs = _plain(state["_init_kwargs"], f"{which}._init_kwargs", budget)
    nrr = _plain(state["neural_rendering_resolution"], f"{which}.neural_rendering_resolution", budget)
    if not isinstance(kwargs, dict) or type(nrr) is not int or nrr <= 0:
        raise Rejected(f"entry '{which}' has a malformed _init_kwargs or "
                       "neural_rendering_resolution")
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(gen, "", sd, _Walk(budget, {}, {}))
    return UpstreamGenerator(gen.class_name, kwargs, sd, nrr)


def read_upstream_snapshot(path: str | Path, which: str = "G_ema") -> UpstreamGenerator:
    """Read the generator ``which`` ("G_ema" or "G") of an upstream EG3D snapshot pickle.

    Raises UsageError for a bad ``which``, InputFileError when the file is missing or unreadable
    and CheckpointError when it is not an EG3D snapshot or references anything not allow-listed.
    """
    if which not in WHICH_CHOICES:
        choices = ", ".join(WHICH_CHOICES)
        raise UsageError(f"--which: expected one of {choices}, got {quote(which)}")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        budget = Budget(len(data))
        top, _ = load_one(lambda f: _SnapshotUnpickler(f, budget), data, 0, FORBIDDEN_OPS)
        return _extract(top, which, budget)
    except Rejected as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, RuntimeError, MemoryError) as exc:
        # What the C unpickler (or a stand-in given arguments of the wrong shape) raises for a
        # corrupt stream; the cause stays chained for debugging.
        raise CheckpointError(f"{path}: not a readable EG3D snapshot pickle "
                              f"({type(exc).__name__}: {quote(str(exc), 120)})") from exc
