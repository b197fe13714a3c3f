"""The run folder: one run at a time, never another's files or cache, one metrics row per step, no
writes through links, a checkpoint on Ctrl-C, and the teacher recorded in every student file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import invoke

from nerfgan.cli import main
from nerfgan.errors import OutputError, UsageError
from nerfgan.io import OWNER_FILE
from nerfgan.student.checkpoint import read_student_metadata
from nerfgan.student.train import EVAL_SEED_OFFSET, Trainer, TrainingInterrupted, teacher_batch, train_preset
from nerfgan.teacher.checkpoint import save_teacher, weights_digest
from nerfgan.teacher.identity import TEACHER_KEY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
METRIC_KEYS = ("psnr_hr", "ssim_hr", "psnr_lr", "ssim_lr")


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    from nerfgan.teacher.renders import make_render_set

    out = tmp_path_factory.mktemp("renders") / "set"
    make_render_set("tiny", 6, out, seed=0, shard_size=3, batch_size=3, progress=False)
    return out


def cfg(**overrides):
    return train_preset("tiny", **{"batch_size": 2, "n_eval": 2, "eval_every": 1, "stage1_steps": 3, **overrides})


def trainer(teacher, out, renders, resume=False, **overrides):
    return Trainer(cfg(**overrides), teacher, out, renders=str(renders), resume=resume, progress=False)


def train_argv(out, renders, *extra):
    return ["train", "--teacher", "tiny", "--renders", renders, "--out", out, "--batch-size", "2", "--n-eval", "2",
            "--stage1-steps", "3", "--device", "cpu", *extra]


def state_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(json.loads(f.metadata()["info"])["step"])


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- one run per folder, only nerfgan's folders ------------------------------------------------------
def test_a_second_training_into_the_same_folder_fails_at_once(tmp_path, renders, builtin_teacher, capsys):
    out = tmp_path / "run"
    with trainer(builtin_teacher, out, renders) as first:
        code, _, err = invoke(main, train_argv(out, renders, "--steps", "1"), capsys)
        assert code == 1 and "another nerfgan process" in one_error_line(err)
        assert not (out / "train_state.safetensors").exists()  # the second run wrote nothing
        first.run(steps=2)  # the first keeps going
    assert state_step(out / "train_state.safetensors") == 2
    assert [r["step"] for r in metric_rows(out)] == [0, 1, 2]


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path, renders, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    code, _, err = invoke(main, train_argv(out, renders, "--steps", "1"), capsys)
    assert code == 1 and "did not write" in one_error_line(err)
    assert os.listdir(out) == ["notes.txt"]  # no lock, no owner file, nothing else


def test_a_new_run_after_one_that_died_before_its_first_checkpoint(tmp_path, renders, builtin_teacher):
    out = tmp_path / "run"
    with trainer(builtin_teacher, out, renders, seed=0, n_eval=2) as dead:
        dead.log_eval()  # config.json, held_out, a metrics row and a grid; then killed before any checkpoint
    (out / OWNER_FILE).unlink(missing_ok=True)  # as a run from before the owner file: recognised by its config.json
    assert not (out / "train_state.safetensors").exists()

    with trainer(builtin_teacher, out, renders, seed=1, n_eval=3) as t:
        expected = teacher_batch(builtin_teacher, 1 + EVAL_SEED_OFFSET, np.arange(3), t.cfg.pose)
        assert t.held_out["w"].shape[0] == 3  # rendered again for this run's seed and n, not the old cache
        assert torch.equal(t.held_out["w"], expected["w"])
        rows = t.run(steps=1)
    assert [r["step"] for r in metric_rows(out)] == [0, 1]  # the old run's row is gone
    assert [r["psnr_hr"] for r in metric_rows(out)] == [r["psnr_hr"] for r in rows]
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["step-0000000.png", "step-0000001.png"]


def test_a_new_run_leaves_a_finished_student_alone(tmp_path, renders, builtin_teacher):
    out = tmp_path / "run"
    with trainer(builtin_teacher, out, renders, eval_every=0) as t:
        t.run(steps=1)
    (out / "train_state.safetensors").unlink()  # the user kept only the student
    kept = (out / "student.safetensors").read_bytes()
    with pytest.raises(UsageError, match="holds a student"):
        trainer(builtin_teacher, out, renders, eval_every=0)
    assert (out / "student.safetensors").read_bytes() == kept


def test_the_held_out_cache_is_keyed_by_its_settings(tmp_path, renders, builtin_teacher, other_builtin_teacher):
    out = tmp_path / "run"
    path = out / "held_out.safetensors"
    trainer(builtin_teacher, out, renders).close()
    first = path.read_bytes()
    before = path.stat().st_mtime_ns
    trainer(builtin_teacher, out, renders).close()  # same settings: reused
    assert path.stat().st_mtime_ns == before
    with trainer(other_builtin_teacher, out, renders) as t:  # same seed and n, another teacher: rendered again
        assert path.read_bytes() != first
        assert torch.equal(t.held_out["image"], teacher_batch(other_builtin_teacher, EVAL_SEED_OFFSET, np.arange(2),
                                                              t.cfg.pose)["image"])


# --- metrics: one row per step -----------------------------------------------------------------------
def test_resume_drops_rows_past_the_checkpoint_and_logs_each_step_once(tmp_path, renders, builtin_teacher):
    out, backup = tmp_path / "run", tmp_path / "backup"
    with trainer(builtin_teacher, out, renders) as t:
        t.run(steps=2)
    backup.mkdir()
    for name in ("train_state.safetensors", "student.safetensors"):
        shutil.copy(out / name, backup / name)
    with trainer(builtin_teacher, out, renders, resume=True) as t:
        t.run(steps=4)
    first = metric_rows(out)
    assert [r["step"] for r in first] == [0, 1, 2, 3, 4]
    for name in ("train_state.safetensors", "student.safetensors"):  # killed after logging 3 and 4, before
        shutil.copy(backup / name, out / name)                        # the step-4 checkpoint
    with trainer(builtin_teacher, out, renders, resume=True) as t:
        assert t.step == 2
        t.run(steps=4)
    again = metric_rows(out)
    assert [r["step"] for r in again] == [0, 1, 2, 3, 4]
    for a, b in zip(first, again):  # the resumed run repeats the same steps exactly
        assert [a[k] for k in METRIC_KEYS] == [b[k] for k in METRIC_KEYS]
    with trainer(builtin_teacher, out, renders, resume=True) as t:  # nothing left to do: no new row
        rows = t.run(steps=4)
    assert rows[-1]["step"] == 4 and [r["step"] for r in metric_rows(out)] == [0, 1, 2, 3, 4]


# --- no writes through links -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.jsonl", "eval", "student.safetensors"])
def test_run_files_are_never_written_through_links(tmp_path, renders, capsys, name):
    out = tmp_path / "run"
    code, _, err = invoke(main, train_argv(out, renders, "--steps", "1", "--eval-every", "1"), capsys)
    assert code == 0, err
    target = tmp_path / "elsewhere"
    if name == "eval":
        shutil.rmtree(out / name)
        target.mkdir()
    else:
        (out / name).unlink()
        target.write_text("precious\n")
    (out / name).symlink_to(target)
    code, _, err = invoke(main, train_argv(out, renders, "--steps", "2", "--eval-every", "1", "--resume"), capsys)
    assert code == 1 and "symbolic link" in one_error_line(err)
    assert (os.listdir(target) == []) if name == "eval" else (target.read_text() == "precious\n")
    assert state_step(out / "train_state.safetensors") == 1


def test_metrics_are_not_appended_through_a_link_made_during_the_run(tmp_path, renders, builtin_teacher):
    out = tmp_path / "run"
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious\n")
    with trainer(builtin_teacher, out, renders) as t:
        (out / "metrics.jsonl").symlink_to(target)  # after the checks at the start
        with pytest.raises(OutputError, match="symbolic link"):
            t.log_eval()
    assert target.read_text() == "precious\n"


# --- the teacher, recorded ---------------------------------------------------------------------------
def test_student_files_record_the_teacher_and_resume_refuses_another(tmp_path, renders, builtin_teacher,
                                                                     tiny_teacher, capsys):
    out = tmp_path / "run"
    code, _, err = invoke(main, train_argv(out, renders, "--steps", "1"), capsys)
    assert code == 0, err
    assert read_student_metadata(out / "student.safetensors")[TEACHER_KEY] == weights_digest(builtin_teacher)
    other = save_teacher(tiny_teacher, tmp_path / "other.safetensors")  # same architecture, other weights
    argv = train_argv(out, renders, "--steps", "2", "--resume")
    argv[argv.index("tiny")] = str(other)
    code, _, err = invoke(main, argv, capsys)
    assert code == 2 and "another teacher" in one_error_line(err)
    assert state_step(out / "train_state.safetensors") == 1


# --- signals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_between_steps_with_a_checkpoint(tmp_path, renders, builtin_teacher, monkeypatch, signum,
                                                        code):
    out = tmp_path / "run"
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with trainer(builtin_teacher, out, renders, eval_every=0) as t:
        real_step = t.train_step

        def step_then_signal():
            logs = real_step()
            if t.step == 2:
                os.kill(os.getpid(), signum)
            return logs

        monkeypatch.setattr(t, "train_step", step_then_signal)
        with pytest.raises(TrainingInterrupted) as e:
            t.run(steps=50)
    assert e.value.exit_code == code
    assert f"{signal.Signals(signum).name} at step 2" in str(e.value) and "--resume" in str(e.value)
    assert state_step(out / "train_state.safetensors") == 2 and (out / "student.safetensors").is_file()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # put back
    with trainer(builtin_teacher, out, renders, resume=True, eval_every=0) as t:  # the lock was released
        assert t.step == 2


def test_training_in_another_thread_installs_no_handlers(tmp_path, renders, builtin_teacher):
    result = {}

    def work():
        with trainer(builtin_teacher, tmp_path / "run", renders) as t:
            result["rows"] = t.run(steps=1)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result["rows"][-1]["step"] == 1


def test_ctrl_c_before_the_first_checkpoint_loses_nothing(tmp_path, renders):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nerfgan.cli", *train_argv(out, renders, "--steps", "1000", "--eval-every", "1")]
    proc = subprocess.Popen([str(a) for a in cmd], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(line)["step"] >= 1 for line in metrics.read_text().splitlines()):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    line = one_error_line(err)
    assert str(out / "train_state.safetensors") in line and "--resume" in line
    k = state_step(out / "train_state.safetensors")
    assert 1 <= k < 100  # before the first periodic checkpoint
    assert [r["step"] for r in metric_rows(out)] == list(range(k + 1))

    cmd = [sys.executable, "-m", "nerfgan.cli",
           *train_argv(out, renders, "--steps", str(k + 2), "--eval-every", "1", "--resume")]
    done = subprocess.run([str(a) for a in cmd], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert state_step(out / "train_state.safetensors") == k + 2
    assert [r["step"] for r in metric_rows(out)] == list(range(k + 3))  # continued from k, each step once
