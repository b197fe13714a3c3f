"""The run folder of a distillation run (RUN_DIR): what it holds, who may write it, and how it is cleared.

RUN_DIR holds RUN_FILES, eval/step-NNNNNNN.png, nerfgan.io's owner file (kind RUN_KIND) and lock file. A new run
takes a missing or empty folder or one a nerfgan run made (older runs are recognised by is_run_dir); nothing is
written through a symbolic link; ``quickstart --force`` clears only RUN_FILES and the eval grids.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from nerfgan.errors import NerfganError, OutputError, UsageError
from nerfgan.io import claim_dir, folder_lock

RUN_KIND = "training run"  # the owner file's kind (nerfgan.io.mark_dir)
RUN_FILES = ("train_state.safetensors", "student.safetensors", "config.json", "held_out.safetensors",
             "metrics.jsonl", "replicas.json")
"""The files a training run writes in RUN_DIR, besides eval/step-NNNNNNN.png and the lock and owner files."""
EVAL_DIR = "eval"
HELD_OUT_FORMAT = "nerfgan-held-out"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class TrainingInterrupted(NerfganError):
    """SIGINT or SIGTERM stopped a run between two steps, after a checkpoint; exit code 128 + the signal."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A run folder from before the owner file: it holds a train state, or the config.json a run writes."""
    p = Path(path)
    if (p / "train_state.safetensors").is_file():
        return True
    cfg = p / "config.json"
    try:
        if cfg.is_symlink() or not cfg.is_file() or cfg.stat().st_size > 1 << 20:
            return False
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("train"), dict) and isinstance(data.get("student"), dict)


def claim_run_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check, touching nothing, that ``path`` may be a run folder: missing, empty, or made by a nerfgan run.

    A folder holding anything else raises OutputError naming ``option`` (exit code 1).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {p}: exists and is not a folder")
    return claim_dir(p, RUN_KIND, option, is_run_dir)


def refuse_links(run_dir: Path) -> None:
    """nerfgan writes nothing in a run folder through a symbolic link (a link there could point anywhere)."""
    for name in (*RUN_FILES, EVAL_DIR):
        if (run_dir / name).is_symlink():
            raise OutputError(f"{run_dir / name}: is a symbolic link; nerfgan does not write a run folder's files "
                              "through links (remove it or choose another --out)")


def remove_outputs(run_dir: Path, names: tuple[str, ...]) -> None:
    """Remove the named run files and eval/step-*.png (a link is removed, never followed); nothing else."""
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    eval_dir = run_dir / EVAL_DIR
    if eval_dir.is_dir() and not eval_dir.is_symlink():
        for f in eval_dir.glob("step-*.png"):
            if f.name[5:-4].isdigit():
                f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            eval_dir.rmdir()  # only when empty


def clear_run_dir(path: str | os.PathLike[str], option: str = "--out") -> None:
    """Remove what nerfgan training runs wrote in ``path`` (``quickstart --force``); anything else stays.

    The folder must be one claim_run_dir accepts (else OutputError, nothing touched) and no run may hold it.
    """
    p = claim_run_dir(path, option)
    if not p.is_dir():
        return
    try:
        with folder_lock(p, what="run folder", wait=False):
            remove_outputs(p, RUN_FILES)
    except OSError as e:
        raise OutputError(f"{option} {p}: cannot clear the run folder ({e.strerror or e})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows
