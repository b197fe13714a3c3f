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


OWNER_MAX_BYTES = 1 << 20  # an owner file is a line, or (with its record of files) a few kB


def owner_record(path: str | os.PathLike[str]) -> dict[str, object] | None:
    """``path``'s OWNER_FILE as a dict with a string ``kind``, or None when there is none (or it is not ours)."""
    from nerfgan.jsonfile import read_json

    f = Path(path) / OWNER_FILE
    if f.is_symlink() or not f.is_file():
        return None
    try:
        data = read_json(f, "nerfgan owner file", OWNER_MAX_BYTES, 1 << 14)
    except InputFileError:
        return None
    if isinstance(data, dict) and data.get("format") == "nerfgan-owner" and isinstance(data.get("kind"), str):
        return data
    return None


def owner_kind(path: str | os.PathLike[str]) -> str | None:
    """The ``kind`` recorded in ``path``'s OWNER_FILE, or None when there is none (or it is not ours)."""
    record = owner_record(path)
    return None if record is None else str(record["kind"])


def mark_dir(path: str | os.PathLike[str], kind: str, files: dict[str, str] | None = None) -> None:
    """Write ``path``'s OWNER_FILE saying nerfgan made it for ``kind`` (atomically); ``files``: the relative path ->
    sha256 of every file nerfgan wrote there, the record :func:`may_replace` judges a later write by."""
    record: dict[str, object] = {"format": "nerfgan-owner", "kind": kind}
    if files is not None:
        record["files"] = dict(sorted(files.items()))
    with atomic_path(Path(path) / OWNER_FILE) as tmp:
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")


# --- what a writer may replace ------------------------------------------------------------------------------------
def may_replace(path: str | os.PathLike[str], recorded: dict[str, str | None], name: str | None = None,
                ours: Callable[[Path], bool] | None = None) -> bool:
    """THE rule every nerfgan writer follows before it replaces or removes a file in a folder it owns.

    ``recorded`` is the folder's record of what nerfgan wrote there (an export's manifest, a repository's owner
    file): name -> sha256. A file may be replaced or removed only when it is missing, or when the record lists it
    (``name``, default the file's name) and it is still a plain file (no link) with the sha256 recorded. An entry
    recorded without a sha256 (None: a plan's sidecar) qualifies when ``ours(path)`` recognises it as nerfgan's.
    A file the record does not list, or one changed since (the user's), is never touched.
    """
    p = Path(path)
    if not os.path.lexists(p):
        return True
    key = p.name if name is None else name
    if key not in recorded or p.is_symlink() or not p.is_file():
        return False
    sha = recorded[key]
    if sha is None:
        return ours is not None and ours(p)
    try:
        return file_sha256(p) == sha
    except OSError:
        return False


def check_may_replace(folder: str | os.PathLike[str], names: list[str],
                      recorded: dict[str, str | None] | list[dict[str, str | None]], option: str,
                      ours: Callable[[Path], bool] | None = None) -> None:
    """OutputError naming ``option``, the folder and every file of ``names`` (relative to ``folder``) that
    :func:`may_replace` refuses under each of the ``recorded`` records; nothing is touched."""
    d = Path(folder)
    records = recorded if isinstance(recorded, list) else [recorded]
    refused = [n for n in names if not any(may_replace(d / n, r, n, ours) for r in records)]
    if refused:
        shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
        raise OutputError(f"{option} {d}: would replace {shown}, which nerfgan did not write there or which changed "
                          "since (not in its record with this sha256); move it away or give another folder - "
                          "nothing was changed")


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


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def image_rgb8(im: object, source: str) -> np.ndarray:
    """A PIL image as uint8 (H, W, 3) RGB, the one conversion every image nerfgan reads goes through.

    Pillow's own ``convert("RGB")`` clips a 16-bit grey image (mode I;16, as Pillow opens a 16-bit grey PNG) to 255
    instead of scaling it, which turns it white; here its 0..65535 is scaled to 0..255 (round(v / 257)). 8-bit modes
    (grey, palette, alpha, CMYK, ...) convert as Pillow converts them (alpha is dropped). Images whose range cannot
    be known (32-bit integer 'I', float 'F') are refused: InputFileError naming ``source``.
    """
    from PIL import Image

    assert isinstance(im, Image.Image)
    if im.mode in _SIXTEEN_BIT:
        v = np.asarray(im).astype(np.uint32)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if im.mode in ("I", "F"):
        raise InputFileError(f"{source}: a {'32-bit integer' if im.mode == 'I' else 'floating-point'} image (mode "
                             f"{im.mode}) has no fixed range; save it as 8-bit (or 16-bit) RGB or grey")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


ANIMATION_FPS = (0.01, 100.0)
"""Frames per second an animation nerfgan writes may have: a GIF stores each frame's time in centiseconds in 16 bits
(at most 655.35 s, so about 0.0015 fps), and 0.01 fps (100 s a frame) is well inside that."""


def frame_ms(fps: float, option: str = "--fps") -> int:
    """Milliseconds of one frame at ``fps`` (at least 10, as browsers show GIFs); UsageError naming ``option`` when
    ``fps`` is outside ANIMATION_FPS."""
    lo, hi = ANIMATION_FPS
    if not (isinstance(fps, (int, float)) and lo <= fps <= hi):
        raise UsageError(f"{option}: expected a number >= {lo:g} and <= {hi:g}, got {fps!r}")
    return max(10, round(1000 / fps))
