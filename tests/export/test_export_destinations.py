"""nerfgan-export never deletes or overwrites what nerfgan did not write; re-exports replace their own files only;
exports into one folder run one after another."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import UNTRAINED_INT8_MIN_PSNR, invoke
from nerfgan.cli import export_main
from nerfgan.errors import OutputError
from nerfgan.export.pipeline import EXPORT_LOCK, ExportConfig, export
from nerfgan.io import file_sha256, folder_lock
from nerfgan.runtime.spec import read_manifest


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_reported_repro_keeps_the_users_folder(tmp_path, tiny_student_path, capsys, monkeypatch):
    """mkdir p && cd p && echo keep > notes.txt && cp student.safetensors . && nerfgan-export ... -o export --triton ."""
    work = tmp_path / "p"
    work.mkdir()
    (work / "notes.txt").write_text("keep\n")
    shutil.copy(tiny_student_path, work / "student.safetensors")
    before = tree(work)
    monkeypatch.chdir(work)
    code, out, err = invoke(export_main, ["--ckpt", "student.safetensors", "-o", "export", "--triton", "."], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err  # (a usage error: the overlap)
    assert "--triton" in err and "Traceback" not in err
    assert tree(work) == before and sorted(os.listdir(work)) == ["notes.txt", "student.safetensors"]


@pytest.mark.parametrize("triton", ["out", "out/repo", "."])
def test_triton_overlapping_the_export_is_refused_before_any_work(tmp_path, tiny_student_path, triton, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = "." if triton == "." else "out"
    if triton == ".":
        triton = "repo/.."  # the export folder itself, spelt another way
    code, _, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", out_dir, "--triton", triton], capsys)
    assert code == 2 and "--triton" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_of_the_users_is_refused_and_untouched(tmp_path, tiny_student_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "student.onnx").write_bytes(b"my own model, not nerfgan's")
    before = tree(mine)
    code, _, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", mine], capsys)
    assert code == 1 and "-o" in err and "did not write" in err and len(err.strip().splitlines()) == 1
    assert tree(mine) == before


def test_reexport_replaces_its_own_files_and_keeps_the_users(tmp_path, tiny_student_path, tiny_calib_path):
    out = tmp_path / "export"
    log: list[str] = []
    export(tiny_student_path, out, ExportConfig(int8=True, calib=str(tiny_calib_path),
                                                int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR), log=log.append)
    assert (out / "student_int8.onnx").is_file()
    (out / "README.txt").write_text("the user's own notes beside the export")
    export(tiny_student_path, out, ExportConfig(), log=log.append)  # fewer precisions
    assert not (out / "student_int8.onnx").exists()  # listed by the old manifest, not by the new one: removed
    assert (out / "README.txt").read_text() == "the user's own notes beside the export"
    assert {a["file"] for a in read_manifest(out)["artifacts"]} == {"mapping.onnx", "student.onnx"}
    assert not [p.name for p in out.iterdir() if p.name.endswith("tmp")]


def test_reexport_keeps_a_listed_file_the_user_replaced(tmp_path, tiny_student_path, tiny_calib_path):
    out = tmp_path / "export"
    export(tiny_student_path, out, ExportConfig(int8=True, calib=str(tiny_calib_path),
                                                int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR), log=lambda s: None)
    (out / "student_int8.onnx").write_bytes(b"the user's own file under a name nerfgan once used")
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    assert (out / "student_int8.onnx").read_bytes() == b"the user's own file under a name nerfgan once used"


def test_an_export_from_before_owner_files_is_recognised(tmp_path, tiny_student_path):
    out = tmp_path / "export"
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    (out / ".nerfgan-owner.json").unlink()
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)  # its manifest.json says it is ours
    assert (out / ".nerfgan-owner.json").is_file()  # written again
    (out / ".nerfgan-owner.json").unlink()
    (out / "manifest.json").unlink()
    with pytest.raises(OutputError, match="did not write"):  # mapping.onnx and student.onnx, and nothing says whose
        export(tiny_student_path, out, ExportConfig(), log=lambda s: None)


def test_exports_into_one_folder_wait_for_each_other(tmp_path, tiny_student_path):
    out = tmp_path / "export"
    out.mkdir()
    log: list[str] = []
    waiting = threading.Event()
    done: list[object] = []

    def record(line: str) -> None:
        log.append(line)
        if "waiting" in line:
            waiting.set()

    with folder_lock(out, name=EXPORT_LOCK):  # another export holds the folder
        worker = threading.Thread(target=lambda: done.append(export(tiny_student_path, out, ExportConfig(), log=record)))
        worker.start()
        assert waiting.wait(60), log
        assert not (out / "manifest.json").exists()  # nothing written while the other export runs
    worker.join(300)
    assert done and (out / "manifest.json").is_file()
    assert any("another nerfgan process is using this export folder; waiting" in line for line in log)


def test_a_crafted_manifest_cannot_make_a_reexport_delete_files(tmp_path, tiny_student_path):
    """Old-manifest entries of format 'tensorrt' named so that NAME.json is a user's file, the manifest or the
    owner file: a re-export removes none of them (a sidecar goes only when it is a nerfgan engine sidecar)."""
    import json

    out = tmp_path / "export"
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    (out / "config.json").write_text("the user's")
    m = json.loads((out / "manifest.json").read_text())
    m["artifacts"] += [{**m["artifacts"][0], "file": name, "format": "tensorrt", "sha256": "0" * 64, "bytes": 1}
                       for name in ("config", "manifest", ".nerfgan-owner", "config.plan")]
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "config.plan.json").write_text('{"not": "a sidecar"}')
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    assert (out / "config.json").read_text() == "the user's"
    assert (out / "config.plan.json").read_text() == '{"not": "a sidecar"}'
    assert read_manifest(out)["artifacts"] and (out / ".nerfgan-owner.json").is_file()


def test_links_are_resolved_before_the_overlap_check_and_a_linked_repository_is_refused(tmp_path, tiny_student_path,
                                                                                          capsys):
    (tmp_path / "t").mkdir()
    (tmp_path / "tl").symlink_to(tmp_path / "t")
    code, _, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "tl" / "exp",
                                        "--triton", tmp_path / "t"], capsys)
    assert code == 2 and "must be a folder of its own" in err  # before the export, not after it
    (tmp_path / "e").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "e")
    code, _, err = invoke(export_main, ["--ckpt", tiny_student_path, "-o", tmp_path / "out",
                                        "--triton", tmp_path / "link"], capsys)
    assert code == 2 and "symbolic link" in err
    assert (tmp_path / "link").is_symlink() and not (tmp_path / "out").exists()


# --- issue 22: one rule for what an export may replace (nerfgan.io.may_replace) ----------------------------------
def test_reexport_refuses_to_replace_a_file_the_manifest_never_listed(tmp_path, tiny_student_path, capsys):
    out = tmp_path / "e2"
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    (out / "student_fp16.onnx").write_text("mine\n")
    before = tree(out)
    code, _, err = invoke(export_main, ["--student", tiny_student_path, "-o", out, "--fp16"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "student_fp16.onnx" in err and "nothing was changed" in err
    assert tree(out) == before  # the user's bytes, and the old export, as they were


def test_reexport_refuses_to_replace_a_listed_file_the_user_edited(tmp_path, tiny_student_path):
    out = tmp_path / "e"
    export(tiny_student_path, out, ExportConfig(fp16=True), log=lambda s: None)
    edited = (out / "student_fp16.onnx").read_bytes() + b"the user's edit"
    (out / "student_fp16.onnx").write_bytes(edited)
    with pytest.raises(OutputError, match="student_fp16.onnx"):
        export(tiny_student_path, out, ExportConfig(fp16=True), log=lambda s: None)
    assert (out / "student_fp16.onnx").read_bytes() == edited
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)  # not written by this export: kept as it is
    assert (out / "student_fp16.onnx").read_bytes() == edited


def test_an_install_killed_part_way_is_replaced_by_the_next_export(tmp_path, tiny_student_path, monkeypatch):
    """The files an interrupted install renamed into place are in its install record, so the next export may
    replace them (they are nerfgan's), though the old manifest records other sha256s."""
    import nerfgan.export.pipeline as P

    out = tmp_path / "e"
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    other = P.ExportConfig(opset=18)  # other bytes under the same names
    real_replace = os.replace

    def killed(src, dst):
        if Path(dst) == out / "student.onnx":  # mapping.onnx renamed into place, then the kill
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(P.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        export(tiny_student_path, out, other, log=lambda s: None)
    monkeypatch.setattr(P.os, "replace", real_replace)
    assert (out / P.INSTALLING).is_file()
    listed = {a["file"]: a["sha256"] for a in read_manifest(out)["artifacts"]}
    assert file_sha256(out / "mapping.onnx") != listed["mapping.onnx"]  # the new file under the old manifest
    export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    assert not (out / P.INSTALLING).exists()
    assert {a["file"] for a in read_manifest(out)["artifacts"]} == {"mapping.onnx", "student.onnx"}


def test_triton_warns_when_its_folder_hides_an_importable_module(tmp_path, tiny_student_path):
    """Issue 22 item 11: README's old `--triton triton` made a triton/ folder that hides the triton package torch
    imports from Python started there; the export says so (and README names the repository model_repository)."""
    from nerfgan.export.pipeline import check_destinations, shadowed_module

    assert shadowed_module(tmp_path / "json") == "json"  # the standard library
    assert shadowed_module(tmp_path / "numpy") == "numpy"  # installed
    assert shadowed_module(tmp_path / "model_repository") is None
    assert shadowed_module(tmp_path / "not-an-identifier") is None
    log: list[str] = []
    check_destinations(Path(tiny_student_path), tmp_path / "e", ExportConfig(triton=str(tmp_path / "numpy")), log.append)
    assert len(log) == 1 and "hides the Python module numpy" in log[0] and "model_repository" in log[0]
    log.clear()
    check_destinations(Path(tiny_student_path), tmp_path / "e", ExportConfig(triton=str(tmp_path / "model_repository")),
                       log.append)
    assert log == []
