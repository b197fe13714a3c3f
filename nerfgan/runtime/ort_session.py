"""ONNX Runtime session settings for the CPU and the cache of optimised graphs (used by OnnxBackend).

Settings (:func:`session_options`): graph optimisation level 'all' (ORT_ENABLE_ALL: layout and hardware-specific
fusions; 'extended' and 'basic' on request), intra-op threads = the physical cores this process may run on
(:func:`physical_cores`; the caller's ``threads`` wins), one inter-op thread, sequential execution.

The cache (:func:`cache_location`, :func:`open_cached`, :func:`commit`): ONNX Runtime's optimisation of a student
takes a noticeable part of start-up, so the optimised graph it builds (SessionOptions.optimized_model_filepath) is
kept and later sessions load it with optimisation off. An optimised graph at level 'all' is specific to the
hardware it was made on (ONNX Runtime says so), so it is used only when everything it depends on is the same:

* name ``<stem>.ort-opt.<ORT version>.<key>.onnx`` with ``<key>`` the first 16 hex digits of the sha256 of the
  key (source file's sha256, ONNX Runtime version, provider, level, machine and CPU model/flags, nerfgan's cache
  format), and a sidecar ``<name>.json`` holding the whole key and the cache file's size and sha256;
* reused only when the sidecar's key equals the key wanted, the sidecar's MAC is this user's (below), the file has
  the recorded size and sha256, passes the checks every ONNX file gets (read_onnx_checked: external data
  locations) and ONNX Runtime loads it; anything else is ignored (the cache is rebuilt), never an error;
* checked against the source it was made from: the sidecar carries an HMAC-SHA256, under a secret of this user's
  (32 random bytes in ``<user cache>/cache.key``, mode 0600, made with the first cache), of the key (which holds
  the source file's sha256, itself checked against the export's manifest) and the cache file's sha256 and size,
  written by nerfgan right after ONNX Runtime optimised the verified source. A graph planted under a cache name,
  with a sidecar whose sha256 was updated to match it, has no valid MAC and is never loaded: a cache is used only
  when this user's nerfgan made it from this very source. No secret (no user cache folder, or a key file that is
  not a private regular file of this user): no cache;
* kept only for a file of a nerfgan export (listed in its folder's manifest.json with the same sha256): beside it
  when the folder is writable, else in the user cache (``$XDG_CACHE_HOME/nerfgan/onnxruntime``, by default
  ``~/.cache/nerfgan/onnxruntime``) when that is writable, else not at all. Any other ONNX file is never cached
  (nothing is written for a file nerfgan did not make). Files are written under temporary names and renamed (the
  graph first, the sidecar last).

Only the CPU provider is cached, and only models without external data (every nerfgan export under 2 GB).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("nerfgan.runtime")

LEVELS = ("basic", "extended", "all")
CACHE_MODES = ("auto", "off")
CACHE_FORMAT = "nerfgan-ort-cache-1"
CACHE_DIR_ENV = "XDG_CACHE_HOME"
SIDECAR_MAX_BYTES = 64 << 10


def physical_cores(cpu_root: str | os.PathLike[str] = "/sys/devices/system/cpu") -> int:
    """Physical cores among the CPUs this process may run on (its affinity), at least 1.

    Linux: the CPUs of os.sched_getaffinity grouped by ``cpu_root``/cpuN/topology (package id and core id), so SMT
    siblings count once. Elsewhere, or when /sys cannot be read: psutil's physical count when psutil is
    installed (capped by the CPUs usable), else the number of usable logical CPUs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for n in cpus:
        topo = Path(cpu_root) / f"cpu{n}" / "topology"
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores = set()
            break
    if cores:
        return max(1, len(cores))
    try:
        psutil = importlib.import_module("psutil")  # optional, never a dependency
        phys = psutil.cpu_count(logical=False)
        if phys:
            return max(1, min(int(phys), len(cpus)))
    except ImportError:
        pass
    return max(1, len(cpus))


def level_enum(ort: Any, level: str) -> Any:
    from nerfgan.errors import UsageError

    names = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
    if level not in names:
        raise UsageError(f"graph optimisation level {level!r}: choose one of {', '.join(LEVELS)}")
    return getattr(ort.GraphOptimizationLevel, names[level])


def session_options(ort: Any, level: str, threads: int | None) -> Any:
    """SessionOptions: ``level`` optimisation, ``threads`` intra-op threads (None: physical_cores()), one inter-op
    thread, sequential execution, errors-only logging."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = level_enum(ort, level)
    so.intra_op_num_threads = threads if threads else physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def _cpu_signature() -> str:
    """Machine, CPU model and feature flags (Linux /proc/cpuinfo), hashed: what a level-'all' graph depends on."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
        for key in ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"):
            line = next((ln for ln in text.splitlines() if ln.split(":")[0].strip() == key), "")
            parts.append(line.split(":", 1)[-1].strip())
    except OSError:
        pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_key(source_sha256: str, ort_version: str, level: str, provider: str) -> dict[str, str]:
    return {"format": CACHE_FORMAT, "source_sha256": source_sha256, "onnxruntime": ort_version, "level": level,
            "provider": provider, "machine": platform.machine(), "cpu": _cpu_signature()}


def key_digest(key: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _writable_dir(d: Path) -> bool:
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)


def user_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/nerfgan/onnxruntime`` (an absolute XDG_CACHE_HOME only), else under ~/.cache; None when
    there is no home folder."""
    base = os.environ.get(CACHE_DIR_ENV) or ""
    try:
        root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    except RuntimeError:
        return None
    return root / "nerfgan" / "onnxruntime"


def cache_location(path: Path, in_export: bool, key: dict[str, str]) -> Path | None:
    """Where the cached graph of ``path`` lives (see the module docstring), or None when nowhere is allowed."""
    if not in_export:
        return None  # a file nerfgan did not export (or an export being staged): nothing is written for it
    name = f"{path.stem}.ort-opt.{key['onnxruntime']}.{key_digest(key)[:16]}.onnx"
    if _writable_dir(path.parent):
        return path.parent / name
    d = user_cache_dir()
    if d is None:
        return None
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return d / name if _writable_dir(d) else None


def sidecar(cache: Path) -> Path:
    return cache.with_name(cache.name + ".json")


@dataclass(frozen=True)
class CacheEntry:
    """A cache file whose sidecar matches the key wanted: its recorded size and sha256 (checked when read)."""

    path: Path
    sha256: str
    bytes: int


def find(cache: Path, key: dict[str, str]) -> CacheEntry | None:
    """The entry at ``cache`` when its sidecar is well-formed and records exactly ``key``; None otherwise."""
    side = sidecar(cache)
    try:
        if side.is_symlink() or cache.is_symlink() or not side.is_file() or not cache.is_file():
            return None
        from nerfgan.errors import InputFileError
        from nerfgan.jsonfile import read_json

        rec = read_json(side, "onnxruntime cache sidecar", SIDECAR_MAX_BYTES, 1 << 10)
    except (OSError, InputFileError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key:
        return None
    sha, size = rec.get("sha256"), rec.get("bytes")
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    import hmac

    secret = _secret(create=False)
    mac = rec.get("mac")
    if secret is None or not isinstance(mac, str) or not hmac.compare_digest(mac, record_mac(secret, key, sha, size)):
        log.info("%s: not made by this user's nerfgan from this source (no valid MAC); ignored", cache)
        return None
    return CacheEntry(cache, sha, size)


def temp_for(cache: Path) -> Path:
    """A fresh temporary name beside ``cache`` for ONNX Runtime to write into (nerfgan's ``.NAME.PID.RANDOM``
    temporary convention, so a killed run's leftover is removed by the next write: nerfgan.io.clean_stale)."""
    import secrets

    from nerfgan.io import TMP_SUFFIX, clean_stale

    clean_stale(cache.parent, cache.name)
    return cache.parent / f".{cache.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"


SECRET_FILE = "cache.key"


def _secret(create: bool) -> bytes | None:
    """This user's cache secret (module docstring), made when ``create`` and missing; None when there is none or it
    is not a private regular file of this user (then nothing is cached)."""
    import secrets as _secrets
    import stat as _stat

    d = user_cache_dir()
    if d is None:
        return None
    path = d / SECRET_FILE
    try:
        if create and not os.path.lexists(path):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_secrets.token_bytes(32))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
            if not _stat.S_ISREG(st.st_mode) or not mine or st.st_mode & 0o077 or st.st_size != 32:
                log.debug("onnxruntime cache secret %s refused (not a private 32-byte file of this user)", path)
                return None
            return f.read(32)
    except FileExistsError:  # made meanwhile by another process
        return _secret(create=False)
    except OSError as e:
        log.debug("onnxruntime cache secret %s unavailable: %s", path, e)
        return None


def record_mac(secret: bytes, key: dict[str, str], sha256: str, size: int) -> str:
    """HMAC-SHA256 of the cache record (key, cache sha256 and size) under ``secret``."""
    import hmac

    msg = json.dumps({"key": key, "sha256": sha256, "bytes": size}, sort_keys=True).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def commit(tmp_graph: Path, cache: Path, key: dict[str, str]) -> bool:
    """Rename the graph ONNX Runtime wrote to ``tmp_graph`` into place, then write its sidecar (temporary name and
    rename). False (and nothing left behind) when any of it fails: the cache is an optimisation, never an error."""
    from nerfgan.errors import OutputError
    from nerfgan.io import atomic_path

    try:
        secret = _secret(create=True)
        if secret is None:
            raise OSError("no cache secret of this user (the cache's MAC needs one)")
        data = tmp_graph.read_bytes()
        rec: dict[str, Any] = {"key": key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        rec["mac"] = record_mac(secret, key, rec["sha256"], rec["bytes"])
        del data
        os.replace(tmp_graph, cache)
        with atomic_path(sidecar(cache)) as t:
            t.write_text(json.dumps(rec, indent=1, sort_keys=True), encoding="utf-8")
        return True
    except (OSError, OutputError) as e:
        log.debug("onnxruntime cache %s not written: %s", cache, e)
        for leftover in (tmp_graph, cache):  # the graph without its sidecar is of no use to anyone
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
        return False
