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


def steps_in(run):
    with safe_open(str(run / "train_state.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["info"])["step"]


def rows(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_changed_option_redoes_exactly_the_stages_that_depend_on_it(tmp_path):
    """README's reruns: the same command reuses everything; another --minutes or --renders retrains from scratch
    (never 'resume' a run made for other settings), and each redone stage says why."""
    out = tmp_path / "qs"
    said: list[str] = []

    def go(minutes, renders):
        said.clear()
        q = Quickstart(str(out), minutes=minutes, renders=renders, force=False, device="cpu", echo=said.append)
        q.run(extra=LATER)
        q.summary()
        return q

    go(0.02, 8)
    q = go(0.03, 8)
    assert q.reused == ["teacher", "renders", "calibrate"]  # calibration samples hold no student
    assert q.redone == [s for s in STAGES[STAGES.index("train"):] if s != "calibrate"]
    assert "[train] ... (changed: --minutes 0.02 -> 0.03)" in said
    assert any(s.startswith("  a new run from scratch") for s in said)
    assert "  redone: train, export, images, parity, score, bench; reused: teacher, renders, calibrate" in said
    first = rows(out / "run")
    assert first[0] >= 1 and first == sorted(set(first))  # a fresh run's rows, not an old run's continued

    q = go(0.03, 10)
    assert q.reused == ["teacher"] and "[renders] ... (changed: --renders 8 -> 10)" in said
    assert "[train] ... (changed: --renders 8 -> 10)" in said and not any("continuing" in s for s in said)
    assert json.loads((out / "renders" / "index.json").read_text())["n"] == 10

    q = go(0.03, 10)
    assert q.redone == [] and said.count("[train] done before, reused (--force to redo)") == 1


def test_a_killed_training_continues_with_the_same_settings(tmp_path):
    out = tmp_path / "qs"
    quiet(out, force=False).run(extra=LATER)
    last = steps_in(out / "run")
    for stage in STAGES[STAGES.index("train"):]:  # as if killed during training: its marker is not written yet
        (out / ".quickstart" / f"{stage}.json").unlink()
    said: list[str] = []
    Quickstart(str(out), minutes=0.02, renders=8, force=False, device="cpu", echo=said.append).run(extra=LATER)
    assert any(s.startswith("  continuing the interrupted run") for s in said)
    assert steps_in(out / "run") >= last and rows(out / "run")[0] <= last  # the same run, continued
