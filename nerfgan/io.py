"""Files: atomic writes and images. numpy only (the runtime uses it without torch).

Every output is written to a temporary name in the destination folder and renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nerfgan.errors import InputFileError, OutputError, UsageError


TMP_SUFFIX = ".nerfgan-tmp"
"""Every temporary file or folder nerfgan makes ends with this, after ``.NAME.PID.RANDOM``; one whose process is
gone is left over from a killed run and is removed by the next write of the same name (see clean_stale)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    The temporary file is created with mode 0666 so the process umask gives it the usual permissions (no umask
    juggling, which would race with other threads); a writer that replaces the file gets the same mode back.
    An OSError while writing (read-only folder, disk full) becomes an OutputError naming ``path``.
    """
    final = Path(path)
    if final.is_dir():
        raise UsageError(f"{final}: is a directory, expected a file name")
    tmp_path, mode = _temp_beside(final, directory=False)
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, final)
    except OSError as e:
        raise _output_error(final, e) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty temporary folder beside ``path`` (usual permissions); the caller fills it and renames it.

    The folder is removed on the way out unless the caller moved it away; ``path`` itself is never touched here.
    """
    final = Path(path)
    tmp, _ = _temp_beside(final, directory=True)
    try:
        yield tmp
    except OSError as e:
        raise _output_error(final, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _temp_beside(final: Path, directory: bool) -> tuple[Path, int]:
    """A new temporary file or folder beside ``final`` (its parents made, stale temporaries of its name removed)."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(final.parent, final.name)
        return _new_temp(final.parent, final.name, directory)
    except OSError as e:
        raise _output_error(final, e) from None


def _new_temp(folder: Path, name: str, directory: bool) -> tuple[Path, int]:
    for _ in range(100):
        tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        try:
            if directory:
                os.mkdir(tmp, 0o777)  # the umask applies, as for any folder the user makes
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o666))
        except FileExistsError:
            continue
        return tmp, stat.S_IMODE(tmp.stat().st_mode)
    raise FileExistsError(f"{folder}: could not make a temporary name for {name}")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO planted under a lock file's name must not hang


def clean_stale(folder: str | os.PathLike[str], name: str) -> list[Path]:
    """Remove ``.NAME.PID.*`` temporaries in ``folder`` whose process no longer runs (left by a kill); returns them.

    Only names nerfgan makes are touched (the TMP_SUFFIX ending and a PID), and only when that PID is not a live
    process of this machine, so another run's temporary in progress is left alone.
    """
    removed: list[Path] = []
    prefix = f".{name}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX)):
            continue
        pid_text = entry.name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _output_error(path: Path, e: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


def check_writable(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Fail now, not after minutes of work, when ``path`` (a file to be written) could not be written.

    Makes the parent folders (as the write would) and creates and removes one temporary file there.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p}: is a directory, expected a file name for the {what}")
    _probe_folder(p.parent, p, what)
    return p


def check_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Like check_writable for a folder that will be made or filled: ``path`` or its nearest parent is probed."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{p}: exists and is not a folder (the {what} must be a folder)")
    _probe_folder(p if p.exists() else p.parent, p, what)
    return p


def _probe_folder(folder: Path, target: Path, what: str) -> None:
    try:
        existing = folder
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise UsageError(f"{target}: cannot make the {what}: {existing} is not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{target}: cannot write the {what} ({existing} is not writable)")
        if existing == folder:
            tmp, _ = _new_temp(folder, "probe", directory=False)
            tmp.unlink()
    except OSError as e:
        raise OutputError(f"{target}: cannot write the {what} ({e.strerror or e})") from None


OWNER_FILE = ".nerfgan-owner.json"
"""Written into every folder nerfgan makes and may later replace or empty: {"format": ..., "kind": ...}."""


def claim_dir(path: str | os.PathLike[str], kind: str, option: str, recognise: Callable[[Path], bool] | None = None) -> Path:
    """Check that nerfgan may write the folder ``path`` as a ``kind`` artifact, before any work.

    Allowed: a missing folder, an empty one, or one nerfgan made for the same ``kind`` (its OWNER_FILE, or
    ``recognise(path)`` for folders from before the owner file). Anything else raises OutputError (exit 1)
    naming ``option``; nothing is touched. The caller writes the owner file with mark_dir.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {p}: exists and is not a folder")
    if not p.is_dir():
        return p
    try:
        entries = [e for e in os.listdir(p) if not (e.endswith(TMP_SUFFIX) or _is_lock(e))]
    except OSError as e:
        raise OutputError(f"{option} {p}: cannot read the folder ({e.strerror})") from None
    if not entries:
        return p
    owner = owner_kind(p)
    if owner == kind or (owner is None and recognise is not None and recognise(p)):
        return p
    what = f"a nerfgan {owner}" if owner else "files nerfgan did not write"
    raise OutputError(f"{option} {p}: the folder holds {what}; give an empty or new folder, or one made by nerfgan "
                     f"for the same purpose ({kind}) - nothing was changed")


def owner_kind(path: str | os.PathLike[str]) -> str | None:
    """The ``kind`` recorded in ``path``'s OWNER_FILE, or None when there is none (or it is not ours)."""
    f = Path(path) / OWNER_FILE
    try:
        if f.is_symlink() or not f.is_file() or f.stat().st_size > 4096:
            return None
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("format") == "nerfgan-owner" and isinstance(data.get("kind"), str):
        return str(data["kind"])
    return None


def mark_dir(path: str | os.PathLike[str], kind: str) -> None:
    """Write ``path``'s OWNER_FILE saying nerfgan made it for ``kind`` (atomically)."""
    with atomic_path(Path(path) / OWNER_FILE) as tmp:
        tmp.write_text(json.dumps({"format": "nerfgan-owner", "kind": kind}) + "\n", encoding="utf-8")


LOCK_FILE = ".nerfgan.lock"


def _is_lock(name: str) -> bool:
    return name.startswith(".nerfgan") and name.endswith(".lock")


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike[str], shared: bool = False, what: str = "folder", wait: bool = True,
                name: str = LOCK_FILE, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file ``path``/``name``: exclusive for a writer (installs, training), shared for readers.

    Readers of a folder they cannot write, where no lock file exists yet, proceed without one (no nerfgan writer
    has used the folder). ``wait=False`` raises OutputError at once when another process holds the lock; with
    ``wait`` and ``on_wait``, a line is passed to ``on_wait`` before waiting.
    """
    lock = Path(path) / name
    try:
        fd = os.open(lock, (os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT) | _NOFOLLOW | _NONBLOCK, 0o666)
    except FileNotFoundError:
        if shared:
            yield
            return
        raise OutputError(f"{path}: cannot lock the {what} (no such folder)") from None
    except OSError as e:
        if shared and e.errno in (errno.EACCES, errno.EROFS):
            yield
            return
        raise OutputError(f"{path}: cannot lock the {what} ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device there would block or misbehave
            raise OutputError(f"{lock}: is not a regular file; remove it (nerfgan makes its lock files itself)")
        import fcntl

        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, flags | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise OutputError(f"{path}: another nerfgan process is using this {what}; wait for it or use "
                                  "another folder") from None
            if on_wait is not None:
                on_wait(f"{path}: another nerfgan process is using this {what}; waiting for it")
            fcntl.flock(fd, flags)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def existing_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable file, else raise InputFileError naming it."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: {what} not found")
    if not p.is_file():
        raise InputFileError(f"{p}: {what} is not a regular file")
    return p


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1], (B, 3, H, W) or (3, H, W) float -> uint8 (B, H, W, 3) or (H, W, 3), as EG3D saves them."""
    x = np.asarray(images, dtype=np.float32)
    x = np.clip(np.rint(x * 127.5 + 128.0), 0, 255).astype(np.uint8)
    return np.moveaxis(x, -3, -1)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a uint8 image (H, W), (H, W, 3) or (H, W, 4) to ``path`` atomically."""
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise UsageError(f"{p}: output must be a .png file")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be uint8 (H, W[, C]), got {img.dtype} {img.shape}")
    with atomic_path(p) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
    return p
