"""One spelling per idea across `nerfgan`, `nerfgan-export` and `nerfgan-run`: -o/--out for every output (old
names still work, hidden), --teacher/--student for the checkpoints (--ckpt still works, hidden), --dry-run on
every command that works (JSON, exit 0, nothing written), --version everywhere, help with examples, and one
clear line for a bad seed or a bad calibration file."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import click
import numpy as np
import pytest

from conftest import UPSTREAM_PKL, invoke

import nerfgan
from nerfgan.cli import cli, export_main, main, run_main


def nerfgan_(args, capsys):
    return invoke(main, args, capsys)


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()):
    """(argv path, command) of every command under ``group``, groups included."""
    for name, cmd in sorted(group.commands.items()):
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from leaf_commands(cmd, path + (name,))


ALL_PATHS = [p for p, _ in leaf_commands(cli)]
WORKING = [p for p, c in leaf_commands(cli) if not isinstance(c, click.Group)]


# --- help, examples, version -----------------------------------------------------------------------------------
def test_top_level_help_is_short_full_and_says_where_to_start(capsys):
    code, out, _ = nerfgan_(["--help"], capsys)
    assert code == 0
    assert "start here: nerfgan quickstart -o qs" in out
    assert "..." not in out.split("\n", 1)[1]  # no truncated one-line descriptions (the usage line is click's)
    listing = out.split("Commands:")[1].strip().splitlines()
    assert len(listing) == len(cli.commands)  # one line each: nothing wrapped
    assert {line.split()[0] for line in listing} == set(cli.commands)


@pytest.mark.parametrize("path", [(), *ALL_PATHS], ids=lambda p: " ".join(p) or "nerfgan")
def test_every_command_help_has_examples(path, capsys):
    code, out, _ = nerfgan_([*path, "--help"], capsys)
    assert code == 0 and "Examples:" in out
    examples = out.split("Examples:")[1].split("Options:")[0]
    lines = [line.strip() for line in examples.strip().splitlines()]
    commands = [line for line in lines if line.startswith(("nerfgan", "torchrun"))]
    assert len(commands) >= 2 and all(len(c) < 120 for c in commands)  # \b kept one example per line
    assert "face.png" not in out and not re.search(r"^  (-\w, )?--ckpt\s", out, re.M) and "--output" not in out


@pytest.mark.parametrize("entry", [export_main, run_main], ids=["nerfgan-export", "nerfgan-run"])
def test_other_entry_points_help_has_examples(entry, capsys):
    code, out, _ = invoke(entry, ["--help"], capsys)
    assert code == 0 and "Examples:" in out and "-o, --out" in out
    assert "face.png" not in out and "--output" not in out and not re.search(r"^  (-\w, )?--ckpt\s", out, re.M)


@pytest.mark.parametrize("entry, prog", [(main, "nerfgan"), (export_main, "nerfgan-export"), (run_main, "nerfgan-run")])
def test_version_on_every_entry_point(entry, prog, capsys):
    code, out, _ = invoke(entry, ["--version"], capsys)
    assert code == 0 and out.strip() == f"{prog} {nerfgan.__version__}"


def test_checkpoint_options_say_which_is_which(capsys):
    _, render_help, _ = nerfgan_(["teacher", "render", "--help"], capsys)
    assert "--teacher" in render_help and "The teacher:" in render_help
    for argv in (["calibrate", "--help"], ["export", "--help"]):
        _, out, _ = nerfgan_(argv, capsys)
        assert "--student" in out and "The student" in out
    _, out, _ = invoke(export_main, ["--help"], capsys)
    assert "--student" in out


# --- --dry-run everywhere, with every spelling of -o/--out --------------------------------------------------------
def dry_run_cases(tmp, student):
    """(entry, argv without the output option, output option spellings, output value, JSON key holding it)."""
    engine = str(student)
    return {
        "teacher import": (main, ["teacher", "import", UPSTREAM_PKL], ("-o", "--out", "--output"), tmp / "t.safetensors", None),
        "teacher render": (main, ["teacher", "render", "--teacher", "tiny"], ("-o", "--out", "--output"), tmp / "v.png", None),
        "teacher renders": (main, ["teacher", "renders", "--teacher", "tiny", "--n", 2], ("-o", "--out", "--output"),
                            tmp / "renders", None),
        "teacher verify": (main, ["teacher", "verify", tmp / "ref.npz"], (), None, None),
        "train": (main, ["train", "--teacher", "tiny"], ("-o", "--out"), tmp / "run", None),
        "quickstart": (main, ["quickstart"], ("-o", "--out", "--output"), tmp / "qs", "out"),
        "calibrate": (main, ["calibrate", "--student", student], ("-o", "--out", "--output"), tmp / "c.npz", "out"),
        "export": (main, ["export", "--student", student], ("-o", "--out", "--output"), tmp / "export", "out"),
        "nerfgan-export": (export_main, ["--student", student], ("-o", "--out", "--output"), tmp / "export", "out"),
        "parity": (main, ["parity", "--teacher", "tiny", "--engine", engine], ("-o", "--out", "--output"),
                   tmp / "parity", "out"),
        "bench": (main, ["bench", "--teacher", "tiny", "--engine", engine], ("-o", "--out", "--json"),
                  tmp / "bench.json", "out"),
        "scene render": (main, ["scene", "render", "--seed", 3], ("-o", "--out", "--output"), tmp / "truth.png", "out"),
        "scene dataset": (main, ["scene", "dataset", "--n", 2], ("-o", "--out", "--output"), tmp / "data.zip", "out"),
        "scene fit": (main, ["scene", "fit"], ("-o", "--out", "--output"), tmp / "fit", None),
        "scene score": (main, ["scene", "score", "--n", 1], ("-o", "--out", "--json"), tmp / "score.json", "out"),
        "serve": (main, ["serve", "--engine", engine], (), None, None),
        "web": (main, ["web", "--engine", tmp / "export"], ("-o", "--out"), tmp / "site", "out"),
        "invert": (main, ["invert", tmp / "photo.png", "--student", student, "--pose", "0,0"], ("-o", "--out", "--output"),
                   tmp / "inv", "out"),
        "fid": (main, ["fid", "--engine", engine, "--reference", "tiny", "--n", 8], ("-o", "--out", "--json"),
                tmp / "fid.json", "out"),
        "nerfgan-run": (run_main, ["--engine", engine, "--seed", 3], ("-o", "--out", "--output"), tmp / "view.png",
                        "outputs"),
    }


CASES = list(dry_run_cases(Path("x"), "s"))


def test_the_dry_run_cases_cover_every_command():
    assert {" ".join(p) for p in WORKING} | {"nerfgan-export", "nerfgan-run"} == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_dry_run_prints_json_writes_nothing_and_takes_every_output_spelling(case, tmp_path, tiny_student_path, capsys,
                                                                             monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    entry, argv, spellings, value, key = dry_run_cases(work, tiny_student_path)[case]
    if case == "teacher verify":
        np.savez(work / "ref.npz", z=np.zeros(1))
    before = sorted(p.name for p in work.iterdir())
    answers = []
    for flag in spellings or (None,):
        args = [*argv, *([flag, value] if flag else []), "--dry-run"]
        code, out, err = invoke(entry, args, capsys)
        assert code == 0, (args, err)
        answers.append(json.loads(out))
        if key == "outputs":
            assert answers[-1][key] == [str(value)]
        elif key:
            assert answers[-1][key] == str(value)
        assert sorted(p.name for p in work.iterdir()) == before  # nothing written
    assert all(a == answers[0] for a in answers)  # every spelling means the same


@pytest.mark.parametrize("argv, key", [
    (["calibrate", "-o", "c.npz", "--dry-run"], "student"),
    (["export", "-o", "export", "--dry-run"], "student"),
])
def test_ckpt_is_a_hidden_alias_of_student(argv, key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a = nerfgan_([*argv, "--student", "s.safetensors"], capsys)
    b = nerfgan_([*argv, "--ckpt", "s.safetensors"], capsys)
    assert a[0] == b[0] == 0 and a[1] == b[1] and json.loads(a[1])[key] == "s.safetensors"
    c = invoke(export_main, ["--ckpt", "s.safetensors", "--dry-run"], capsys)
    assert c[0] == 0 and json.loads(c[1])["student"] == "s.safetensors"


def test_ckpt_is_a_hidden_alias_of_teacher_in_teacher_render(tmp_path, capsys):
    a = nerfgan_(["teacher", "render", "--teacher", "tiny", "-o", tmp_path / "v.png", "--dry-run"], capsys)
    b = nerfgan_(["teacher", "render", "--ckpt", "tiny", "-o", tmp_path / "v.png", "--dry-run"], capsys)
    assert a[0] == b[0] == 0 and a[1] == b[1]
    code, _, err = nerfgan_(["teacher", "render", "--ckpt", tmp_path / "nowhere.safetensors", "-o", tmp_path / "v.png"],
                            capsys)
    assert code == 1 and "nowhere.safetensors" in err and len(err.strip().splitlines()) == 1


def test_a_missing_option_names_its_visible_spellings(capsys):
    code, _, err = nerfgan_(["calibrate", "-o", "c.npz"], capsys)
    assert code == 2 and "'--student'" in err and "--ckpt" not in err
    code, _, err = nerfgan_(["teacher", "render"], capsys)
    assert code == 2 and "'-o' / '--out'" in err and "--output" not in err


# --- messages ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["teacher", "render", "-o", "v.png", "--seed", "-3"],
    ["teacher", "renders", "--teacher", "tiny", "--n", 2, "-o", "r", "--seed", "-3"],
    ["train", "-o", "run", "--steps", 1, "--seed", "-3"],
    ["calibrate", "--student", "s.safetensors", "-o", "c.npz", "--seed", "-3"],
    ["scene", "render", "-o", "v.png", "--seed", "-3"],
    ["teacher", "render", "-o", "v.png", "--seed", str(2**32)],
    ["teacher", "render", "-o", "v.png", "--seed", "1.5"],
])
def test_a_bad_seed_names_the_range(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = nerfgan_(argv, capsys)
    assert code == 2 and "the seed must be an integer in 0..4294967295" in err
    assert "e+09" not in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def _bad_calibration_files(tmp_path):
    pickled = tmp_path / "pickled.npz"  # an .npz whose arrays are pickles
    np.savez(pickled, meta=np.array({"format": "x"}, dtype=object), z=np.array([{"a": 1}], dtype=object))
    plain_pickle = tmp_path / "plain.npz"
    plain_pickle.write_bytes(pickle.dumps({"z": [1, 2, 3]}))
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    return {"pickled": (pickled, "holds Python objects"), "pickle": (plain_pickle, "a Python pickle"),
            "npy": (npy, "a single .npy array"), "text": (text, "not an .npz calibration file")}


@pytest.mark.parametrize("kind", ["pickled", "pickle", "npy", "text"])
def test_a_bad_calib_file_is_one_clear_line(kind, tmp_path, tiny_student_path, capsys):
    path, what = _bad_calibration_files(tmp_path)[kind]
    code, _, err = invoke(export_main, ["--student", tiny_student_path, "-o", tmp_path / "out", "--int8",
                                        "--calib", path], capsys)
    assert code == 1 and err.startswith(f"Error: {path}: ") and what in err
    assert "allow_pickle" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
