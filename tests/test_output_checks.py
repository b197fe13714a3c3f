"""Outputs that cannot be written, folders nerfgan did not make, and out-of-range seeds: one error line, before any
work, and nothing the user owns is touched."""

from __future__ import annotations

import os

import pytest

from conftest import invoke
from nerfgan.cli import main, run_main


@pytest.fixture
def afile(tmp_path):
    p = tmp_path / "afile"
    p.write_text("a file, not a folder")
    return p


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and err.startswith("Error") and "Traceback" not in err


@pytest.mark.parametrize("command", [["teacher", "render"], ["scene", "render"]])
def test_unwritable_image_outputs(command, tmp_path, afile, capsys):
    for target, needle in ((afile / "out.png", "is not a folder"), ("/proc/x.png", "cannot write")):
        code, out, err = invoke(main, command + ["-o", target], capsys)
        assert code in (1, 2) and one_line(err) and needle in err and str(target) in err, err
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, _, err = invoke(main, command + ["-o", ro / "x.png"], capsys)
        assert code == 1 and one_line(err) and "not writable" in err
    finally:
        os.chmod(ro, 0o755)


def test_teacher_import_checks_its_output_before_reading(afile, capsys):
    code, _, err = invoke(main, ["teacher", "import", "missing.pkl", "-o", afile / "t.safetensors"], capsys)
    assert code in (1, 2) and one_line(err) and "afile" in err


@pytest.mark.parametrize("command", [["teacher", "render", "-o", "x.png"], ["scene", "render", "-o", "x.png"],
                                     ["calibrate", "--ckpt", "s.safetensors", "-o", "c.npz"]])
def test_negative_seeds_are_refused(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(main, command + ["--seed", "-1"], capsys)
    assert code == 2 and "--seed" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_parity_never_writes_into_a_folder_of_the_users(tmp_path, tiny_export_dir, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own report")
    code, _, err = invoke(main, ["parity", "--teacher", "tiny", "--engine", tiny_export_dir, "--n", 1, "-o", mine],
                          capsys)
    assert code == 1 and one_line(err) and "did not write" in err
    assert sorted(os.listdir(mine)) == ["report.md"] and (mine / "report.md").read_text() == "my own report"


def test_a_fifo_planted_as_the_lock_file_is_refused_not_waited_on(tmp_path, tiny_export_dir, capsys):
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(tiny_export_dir, folder)
    (folder / ".nerfgan.lock").unlink()
    os.mkfifo(folder / ".nerfgan.lock")
    code, _, err = invoke(run_main, ["--engine", folder, "--seeds", "0", "-o", tmp_path / "x.png"], capsys)
    assert code == 1 and one_line(err) and "not a regular file" in err


def test_scene_dataset_under_a_file_is_one_line(afile, capsys):
    code, _, err = invoke(main, ["scene", "dataset", "--n", 1, "-o", afile / "x"], capsys)
    assert code == 2 and one_line(err) and "is not a folder" in err


@pytest.mark.parametrize("command", [["parity", "--teacher", "tiny", "--engine", "e", "-o", "p"],
                                     ["teacher", "renders", "--teacher", "tiny", "-o", "r", "--dry-run"],
                                     ["calibrate", "--ckpt", "s.safetensors", "-o", "c.npz"]])
def test_sample_counts_have_stated_limits(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(main, command + ["--n", "100000000"], capsys)
    assert code == 2 and "--n" in err and one_line(err)
