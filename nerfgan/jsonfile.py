"""One bounded JSON reader for every file nerfgan parses (manifests, dataset.json, indexes, sidecars, headers).

A JSON file is bounded twice before it is parsed: in bytes (each caller states its limit) and in values. Python's
parser makes one object per value (an empty list costs about 60 bytes of memory for its 3 bytes of text ``[],``),
so a file within its byte limit can still take gigabytes once parsed. :func:`count_values` is an upper bound of
the values a text holds, counted in C (``bytes.count``) without parsing: every value but the first follows a ``,``
or a ``:`` or opens a container, so values <= commas + colons + brackets + braces + 1 (characters inside strings
only make the bound larger). A text over its ``max_values`` is refused before json.loads runs, so the memory of
a parse is at most about 70 bytes per allowed value plus 4 bytes per character of text.

Strict JSON is read: NaN and Infinity are refused, and so is an object with a key given twice (a second value
would silently win). Nesting deeper than Python's recursion limit is refused (RecursionError). Every refusal is
one InputFileError naming the file and what it was expected to be.

A file is opened without blocking and must be a regular file (a FIFO, /dev/zero or a folder under the file's
name is refused as such, never waited on or read without end).

numpy-free and torch-free: the runtime uses it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from nerfgan.errors import InputFileError, NerfganError

DEFAULT_MAX_VALUES = 1 << 20
"""Values a JSON file may hold unless its reader says otherwise (about 70 MiB once parsed)."""

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def count_values(text: bytes | str) -> int:
    """An upper bound of the JSON values in ``text`` (module docstring), counted without parsing."""
    if isinstance(text, str):
        return sum(text.count(c) for c in ",:[{") + 1
    return sum(text.count(c) for c in (b",", b":", b"[", b"{")) + 1


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise _Refused(f"key {k[:60]!r} given twice in one object")
        d[k] = v
    return d


def loads(text: bytes | str, source: str, what: str = "JSON file", max_values: int = DEFAULT_MAX_VALUES,
          error: type[NerfganError] = InputFileError) -> Any:
    """``text`` parsed as strict JSON, at most ``max_values`` values (counted first, module docstring).
    ``error`` (InputFileError unless given) ``"SOURCE: ..."`` naming ``what`` otherwise."""
    if not isinstance(text, (bytes, str)):
        raise error(f"{source}: malformed {what} (expected JSON text, got {type(text).__name__})")
    n = count_values(text)
    if n > max_values:
        raise error(f"{source}: holds up to {n:,} JSON values, more than the {max_values:,} a {what} may "
                             "have; not read")
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except _Refused as e:
        raise error(f"{source}: malformed {what} ({e})") from None
    except RecursionError:
        raise error(f"{source}: malformed {what} (nested too deeply)") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{source}: malformed {what} (not valid JSON: {str(e)[:120]})") from None


def read_bytes(path: str | os.PathLike[str], what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` (opened without blocking; a FIFO, device or
    folder under that name is refused). InputFileError naming the file and ``what`` otherwise."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise InputFileError(f"{p}: {what} not found") from None
    except IsADirectoryError:
        raise InputFileError(f"{p}: {what} is a folder, not a file") from None
    except OSError as e:
        raise InputFileError(f"{p}: {what} unreadable ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # (checked before os.fdopen, which refuses a folder with its own error)
            raise InputFileError(f"{p}: {what} is not a regular file (a FIFO, device or folder); refused")
        if st.st_size > max_bytes:
            raise InputFileError(f"{p}: {st.st_size:,} bytes, more than the {max_bytes:,} a {what} may have")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(min(st.st_size, max_bytes) + 1)  # (read(n) allocates n bytes first: the size, not the limit)
    except OSError as e:
        raise InputFileError(f"{p}: {what} unreadable ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:  # (grew while read)
        raise InputFileError(f"{p}: more than the {max_bytes:,} bytes a {what} may have")
    return raw


def read_json(path: str | os.PathLike[str], what: str, max_bytes: int, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """The JSON file ``path``: a regular file of at most ``max_bytes`` and ``max_values`` values, strict JSON.
    One InputFileError naming the file otherwise."""
    return loads(read_bytes(path, what, max_bytes), str(path), what, max_values)
