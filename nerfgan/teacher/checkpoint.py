"""nerfgan's own teacher file: safetensors weights + the config as JSON metadata.

Nothing here unpickles. Upstream ``.pkl`` snapshots are converted once by
:mod:`nerfgan.teacher.upstream_pickle` (``nerfgan teacher import``); reference ``.npz`` files
are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

import nerfgan
from nerfgan.errors import CheckpointError, ConfigError
from nerfgan.io import atomic_path, existing_file
from nerfgan.teacher.config import TeacherConfig
from nerfgan.teacher.generator import EG3D

FORMAT = "nerfgan-teacher"
FORMAT_VERSION = "1"


Shapes = Mapping[str, tuple[int, ...]]


def expected_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of the module ``build()`` makes, built on the meta device (nothing is
    allocated), so a config can be compared with the tensors of a file before the real module is built."""
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def teacher_shapes(config: TeacherConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor of an EG3D with ``config`` (its state dict), without allocating it."""
    return expected_shapes(lambda: EG3D(config))


def check_shapes(expected: Shapes, got: Shapes, source: str) -> None:
    """Raise CheckpointError naming ``source`` unless ``got`` has exactly the keys and shapes of ``expected``
    (the value counts of both are in the message, which names up to 5 tensors of each kind of problem)."""
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s): {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    if wrong:
        problems.append("wrong shape(s): " + ", ".join(f"{k} {tuple(got[k])} (expected {tuple(expected[k])})"
                                                        for k in wrong[:5]))
    if problems:
        counts = (f"the config has {_values(expected):,} values in {len(expected)} tensors, "
                  f"the file {_values(got):,} in {len(got)}")
        raise CheckpointError(f"{source}: weights do not match the config ({counts}): " + "; ".join(problems))


def _values(shapes: Shapes) -> int:
    return sum(math.prod(s) for s in shapes.values())


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming ``source`` unless ``state`` has exactly the model's keys and shapes."""
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in state.items()}, source)


def build_teacher(config: TeacherConfig, state: Mapping[str, torch.Tensor] | None = None, source: str = "weights") -> EG3D:
    """An eval-mode EG3D for ``config``, with ``state`` loaded after a full key/shape check.

    The check runs against a module built on the meta device first, so weights that do not match their
    config are refused before anything of the config's size is allocated.
    """
    if state is not None:
        check_shapes(teacher_shapes(config), {k: tuple(v.shape) for k, v in state.items()}, source)
    model = EG3D(config).eval().requires_grad_(False)
    if state is not None:
        model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    return model


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                      meta: Mapping[str, str] | None = None) -> Path:
    """Write tensors (moved to CPU, contiguous) and string metadata to ``path`` atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=dict(meta or {}))
        _sort_metadata(tmp)
    return Path(path)


def _sort_metadata(path: Path) -> None:
    """safetensors writes the metadata in hash-map order, different in every process; sort it in place so
    the same tensors and metadata always give the same bytes (files are identified by their sha256)."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        text = raw.decode("utf-8").rstrip(" ")
        header = json.loads(text)
        if "__metadata__" not in header:
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        canon = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(canon) != len(text.encode("utf-8")):  # a formatting difference: leave the file as written
            return
        f.seek(8)
        f.write(canon + b" " * (n - len(canon)))


SAFETENSORS_MAX_HEADER_BYTES = 16 << 20
"""A safetensors header (tensor names, shapes, offsets, metadata) larger than this is refused before it is parsed; a
teacher's is about 100 kB, a training state's a few hundred kB."""
SAFETENSORS_MAX_HEADER_VALUES = 1 << 20  # JSON values in the header (nerfgan.jsonfile.count_values)


def check_safetensors_header(p: Path) -> None:
    """Bound the header of the safetensors file ``p`` before safetensors parses it: its 8-byte length within
    SAFETENSORS_MAX_HEADER_BYTES and the file, and at most SAFETENSORS_MAX_HEADER_VALUES JSON values in it (a
    metadata value is itself counted: configs in it are JSON too). CheckpointError naming the file otherwise."""
    from nerfgan.jsonfile import count_values

    try:
        with open(p, "rb") as f:
            head = f.read(8)
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(SAFETENSORS_MAX_HEADER_BYTES, size - 8):
                why = "shorter than a header" if n < 2 else (
                    f"declares a {n:,}-byte header, more than the {SAFETENSORS_MAX_HEADER_BYTES:,} allowed"
                    if n > SAFETENSORS_MAX_HEADER_BYTES else f"declares a {n:,}-byte header beyond its end")
                raise CheckpointError(f"{p}: not a readable safetensors file ({why})")
            text = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{p}: unreadable ({e.strerror})") from None
    if count_values(text) > SAFETENSORS_MAX_HEADER_VALUES:
        raise CheckpointError(f"{p}: its safetensors header holds more than {SAFETENSORS_MAX_HEADER_VALUES:,} JSON "
                              "values; not read")


def read_safetensors(
    path: str | os.PathLike[str], what: str, with_tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file in one read; ``what`` names the file kind in errors.

    The tensors take no more memory than the file's size (safetensors checks that their extents lie in it).
    """
    from safetensors import safe_open

    p = existing_file(path, what)
    check_safetensors_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as e:  # safetensors raises its own error types for any malformed header or payload
        raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    return tensors, meta


def read_safetensors_header(path: str | os.PathLike[str], what: str
                            ) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(key -> shape, metadata) of a safetensors file, from its header only: no tensor is read."""
    from safetensors import safe_open

    p = existing_file(path, what)
    check_safetensors_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # as in read_safetensors
        raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    return shapes, meta


def save_teacher(model: EG3D, path: str | os.PathLike[str], extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config to a safetensors file, atomically."""
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "nerfgan_version": nerfgan.__version__,
            "config": model.config.to_json()}
    meta.update(extra_metadata or {})
    return write_safetensors(path, {k: v.to(torch.float32) for k, v in model.state_dict().items()}, meta)


def _check_teacher_metadata(p: Path, meta: dict[str, str]) -> None:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a nerfgan teacher file (metadata format={meta.get('format')!r}; "
                              "convert upstream pickles with `nerfgan teacher import`)")


def read_teacher_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a teacher file (raises CheckpointError if it is not one)."""
    p = resolve_teacher_path(path)
    _, meta = read_safetensors(p, "teacher checkpoint", with_tensors=False)
    _check_teacher_metadata(p, meta)
    return meta


# Teachers shipped inside the package, by name. "tiny" is EG3D's tiny configuration (the upstream test
# fixture's: 128px output from 64px rendering) fitted by `nerfgan scene fit` to nerfgan's analytic scene
# family (nerfgan.scenes): head-like objects with exact ground truth, not faces.
BUILTIN_TEACHERS = {"tiny": "tiny_teacher.safetensors"}


def resolve_teacher_path(path_or_name: str | os.PathLike[str]) -> Path:
    """A file path as given, or the packaged file of a built-in teacher name (see BUILTIN_TEACHERS)."""
    p = Path(path_or_name)
    if not p.exists() and str(path_or_name) in BUILTIN_TEACHERS:
        from importlib.resources import files

        return Path(str(files("nerfgan.data").joinpath(BUILTIN_TEACHERS[str(path_or_name)])))
    return p


def teacher_config_of(path: Path, meta: Mapping[str, str]) -> TeacherConfig:
    """The config in a teacher file's metadata, checked against nerfgan.teacher.limits (CheckpointError naming it)."""
    _check_teacher_metadata(path, dict(meta))
    try:
        return TeacherConfig.from_json(meta["config"], source=str(path))
    except KeyError:
        raise CheckpointError(f"{path}: metadata has no 'config'") from None
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_teacher(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> EG3D:
    """Load a teacher written by :func:`save_teacher` (or ``nerfgan teacher import``), or a built-in by name.

    Bounds before allocation: the config is checked against nerfgan.teacher.limits and the tensors listed in
    the file's header against a module built on the meta device before any tensor is read or module built.
    """
    p = resolve_teacher_path(path)
    shapes, meta = read_safetensors_header(p, "teacher checkpoint")
    config = teacher_config_of(p, meta)
    check_shapes(teacher_shapes(config), shapes, str(p))
    state, _ = read_safetensors(p, "teacher checkpoint")
    return build_teacher(config, state, source=str(p)).to(device)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's weights (names, shapes and float32 values in key order): the same for a teacher however it
    was loaded (an upstream pickle, its converted safetensors, the built-in file). Student files record their
    teacher's digest as ``teacher_sha256`` and the tools that compare a student with a teacher check it."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        v = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(v.shape)};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()
