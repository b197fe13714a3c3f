"""quickstart --force and DIR/run: only what nerfgan wrote is redone; the output is checked before any work."""

from __future__ import annotations

import json
import os

from safetensors import safe_open

from conftest import invoke

from nerfgan.cli import main
from nerfgan.quickstart import STAGES, Quickstart

LATER = {stage: (lambda: {}) for stage in STAGES[STAGES.index("train") + 1:]}  # teacher, renders, train only


def quiet(out, force):
    return Quickstart(str(out), minutes=0.02, renders=8, force=force, device="cpu", echo=lambda s: None)


def test_force_refuses_a_run_folder_of_other_files_before_any_work(tmp_path, capsys):
    out = tmp_path / "qs"
    (out / "run").mkdir(parents=True)
    (out / "run" / "notes.txt").write_text("keep")
    code, _, err = invoke(main, ["quickstart", "-o", out, "--force", "--minutes", "0.05", "--renders", "8",
                                 "--device", "cpu"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "did not write" in lines[0], err
    assert os.listdir(out) == ["run"] and os.listdir(out / "run") == ["notes.txt"]  # nothing made, nothing removed
    assert (out / "run" / "notes.txt").read_text() == "keep"


def test_force_redoes_a_run_nerfgan_made_and_keeps_other_files(tmp_path):
    out = tmp_path / "qs"
    quiet(out, force=False).run(extra=LATER)
    assert (out / "run" / "train_state.safetensors").is_file()
    (out / "run" / "mine.txt").write_text("keep")
    quiet(out, force=True).run(extra=LATER)  # today: "already holds a run"
    assert (out / "run" / "mine.txt").read_text() == "keep"
    steps = [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    with safe_open(str(out / "run" / "train_state.safetensors"), framework="pt") as f:
        last = json.loads(f.metadata()["info"])["step"]
    # the new run's rows only (at half time and at the end, one row if both fall on one step), each step once
    assert 1 <= len(steps) <= 2 and steps == sorted(set(steps)) and steps[-1] == last


def test_quickstart_output_is_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = invoke(main, ["quickstart", "-o", tmp_path / "file" / "sub", "--minutes", "0.05",
                                 "--renders", "8", "--device", "cpu"], capsys)
    assert code == 2 and "not a folder" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "x"


def test_a_folder_of_the_users_is_refused_before_any_work(tmp_path, capsys):
    """quickstart writes teacher.safetensors, calib.npz, views.png ... by name into DIR: a user's folder is refused."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "teacher.safetensors").write_bytes(b"the user's own teacher")
    (mine / "notes.txt").write_text("keep")
    code, _, err = invoke(main, ["quickstart", "-o", mine, "--minutes", "0.05", "--renders", "8", "--device", "cpu"],
                          capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "did not write" in lines[0], err
    assert sorted(os.listdir(mine)) == ["notes.txt", "teacher.safetensors"]
    assert (mine / "teacher.safetensors").read_bytes() == b"the user's own teacher"
