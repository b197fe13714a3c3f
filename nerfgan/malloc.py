"""Keep freed memory in the process: the one change that removed most of a CPU training step's system time.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` when freed. A PyTorch step on the CPU frees and re-allocates the
same large activations every step, so every step maps new pages and faults each one in, zeroed, again: a
``nerfgan scene fit`` step made 480,000 minor page faults and spent 1.4 s of system time for 2.2 s of user
time (``benchmarks/step_profile.py``). Raising the mmap threshold to 1 GiB and never trimming the heap
lets freed blocks be reused; the same step then makes ~17,000 faults, and its wall time halves on 2 cores.
(A distillation step of the tiny student faults far less; it gains little.)

The cost: while the block runs the process keeps its peak heap. The training loop, the teacher fit and
teacher rendering run inside ``with keep_freed_memory():``; on leaving, glibc's defaults come back and the
free heap goes back to the system. ``NERFGAN_MALLOC=default`` in the environment leaves malloc as it is.
A no-op off glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from typing import Any

MMAP_THRESHOLD = 1 << 30
"""Blocks up to this size (bytes) come from the heap and are reused after a free."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_AFTER_MMAP, _AFTER_TRIM = 32 << 20, 64 << 20  # where glibc's dynamic thresholds end on 64-bit (its maximum)
_depth = 0  # nesting of keep_freed_memory


def _libc() -> Any:
    if os.environ.get("NERFGAN_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl has neither)
        return None
    return libc


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Within the block, glibc serves blocks up to MMAP_THRESHOLD from its heap and never trims it, so a
    loop that frees and re-allocates the same tensors reuses their pages. On leaving, the thresholds become
    those glibc's own dynamic threshold reaches at most (32 MiB mapped, 64 MiB trimmed) and ``malloc_trim``
    returns the free heap to the system, so what runs after (a benchmark measuring peak memory, say) sees a
    process as glibc would have left it. Nests; yields whether it took effect
    (False off glibc, or with ``NERFGAN_MALLOC=default``)."""
    global _depth
    libc = _libc() if _depth == 0 else None
    took = _depth > 0 or (libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
                          and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)))
    _depth += 1
    try:
        yield took
    finally:
        _depth -= 1
        if _depth == 0 and libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _AFTER_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _AFTER_TRIM)
            libc.malloc_trim(0)
