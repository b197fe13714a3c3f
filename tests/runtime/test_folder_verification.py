"""What nerfgan.runtime trusts in an export folder: manifest entries are plain names inside the folder, each file
used has the recorded size and sha256 and the manifest's checkpoint, the folder is read under its shared lock, a
file given alone is refused when its manifest does not list it, and ONNX external data stays in the model's folder.
Each case is refused by nr.load and by nerfgan-run with one error line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nerfgan.runtime as nr
from conftest import invoke
from nerfgan.errors import InputFileError, OutputError, UsageError
from nerfgan.io import file_sha256, folder_lock
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import check_external_data
from nerfgan.runtime.run_cli import main

OTHER_CKPT = "ab" * 32  # the sha256 of 'another checkpoint'


def copy_export(export_dir: Path, dest: Path, names=("manifest.json", "mapping.onnx", "student.onnx")) -> Path:
    dest.mkdir(parents=True)
    for n in names:
        shutil.copyfile(export_dir / n, dest / n)
    return dest


def edit_manifest(d: Path, change) -> None:
    m = json.loads((d / "manifest.json").read_text())
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))


def entry(m: dict, name: str) -> dict:
    return next(a for a in m["artifacts"] if a["file"] == name)


def relist(d: Path, name: str) -> None:
    """Record ``name``'s current size and sha256 in the manifest (what a concurrent export would have written)."""
    def change(m):
        entry(m, name).update(sha256=file_sha256(d / name), bytes=(d / name).stat().st_size)

    edit_manifest(d, change)


def set_metadata(path: Path, **props: str) -> None:
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key in props:
            p.value = props.pop(p.key)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def one_line_error(args, capsys, code=1) -> str:
    got, out, err = invoke(main, [str(a) for a in args], capsys)
    assert got == code, err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert out == ""
    return err


def run_args(engine: Path, tmp_path: Path) -> list:
    return ["--engine", engine, "--device", "cpu", "--seed", 1, "-o", tmp_path / "o.png"]


# --- 1. folders ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("file", ["../elsewhere/student.onnx", "/abs/student.onnx", "sub/student.onnx", "..", ""])
def test_manifest_entries_must_be_plain_names(export_dir, tmp_path, capsys, file):
    d = copy_export(export_dir, tmp_path / "e")
    (tmp_path / "elsewhere").mkdir()
    shutil.copyfile(export_dir / "student.onnx", tmp_path / "elsewhere" / "student.onnx")
    edit_manifest(d, lambda m: entry(m, "student.onnx").update(file=file))
    with pytest.raises(InputFileError, match="malformed manifest: artifacts.*file"):
        nr.load(d, device="cpu")
    err = one_line_error(run_args(d, tmp_path), capsys)
    assert "manifest.json: malformed manifest" in err
    assert not (tmp_path / "o.png").exists()


def test_a_symlink_out_of_the_folder_is_refused(export_dir, tmp_path, capsys):
    d = copy_export(export_dir, tmp_path / "e")
    outside = tmp_path / "outside.onnx"
    os.replace(d / "student.onnx", outside)
    (d / "student.onnx").symlink_to(outside)  # same bytes, same sha256: only where it lives is wrong
    with pytest.raises(InputFileError, match=r"student.onnx: listed in manifest.json resolves to .*outside"):
        nr.load(d, device="cpu")
    assert "outside" in one_line_error(run_args(d, tmp_path), capsys)


def test_a_symlink_within_the_folder_is_fine(export_dir, tmp_path):
    d = copy_export(export_dir, tmp_path / "e")
    os.replace(d / "student.onnx", d / "student.real")
    (d / "student.onnx").symlink_to("student.real")
    with nr.load(d, device="cpu") as g:
        assert g.render(seeds=0).shape == (1, 128, 128, 3)


def test_a_changed_file_is_refused_by_name(export_dir, tmp_path, capsys):
    d = copy_export(export_dir, tmp_path / "e")
    data = bytearray((d / "student.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    (d / "student.onnx").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=r"student.onnx: sha256 .* differs from .*manifest.json records"):
        nr.load(d, device="cpu")
    assert "student.onnx: sha256" in one_line_error(run_args(d, tmp_path), capsys)
    with open(d / "mapping.onnx", "ab") as f:  # the size is compared before anything is read
        f.write(b"\0")
    shutil.copyfile(export_dir / "student.onnx", d / "student.onnx")
    with pytest.raises(InputFileError, match=r"mapping.onnx: \d+ bytes, but .*manifest.json records \d+"):
        nr.load(d, device="cpu")


def test_a_folder_mixing_two_checkpoints_is_refused(export_dir, tmp_path, capsys):
    d = copy_export(export_dir, tmp_path / "e")
    set_metadata(d / "student.onnx", **{S.META_CHECKPOINT: OTHER_CKPT})  # a student of another export...
    relist(d, "student.onnx")  # ...whose size and sha256 the manifest records, as a racing export leaves it
    with pytest.raises(InputFileError, match=r"student.onnx: exported from checkpoint abababababab, .* mixes two"):
        nr.load(d, device="cpu")
    assert "mixes two exports" in one_line_error(run_args(d, tmp_path), capsys)


def test_the_folder_is_read_under_its_shared_lock(export_dir, tmp_path, monkeypatch):
    """While load() reads the files, an exporter cannot take the folder's lock (it installs under it)."""
    d = copy_export(export_dir, tmp_path / "e")
    with folder_lock(d):  # an export made the lock file
        pass
    real, seen = S.read_checked, []

    def read_while_probing(path, *args, **kwargs):
        with pytest.raises(OutputError, match="another nerfgan process"):
            with folder_lock(d, wait=False):  # what an install would try (exclusive)
                pass
        seen.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(S, "read_checked", read_while_probing)
    with nr.load(d, device="cpu"):
        pass
    assert sorted(seen) == ["mapping.onnx", "student.onnx"]
    with folder_lock(d, wait=False):  # released afterwards
        pass


# --- 2. a single file beside a manifest ----------------------------------------------------------------------
def test_an_unlisted_file_beside_a_manifest_is_a_leftover(export_dir, tmp_path, capsys):
    d = copy_export(export_dir, tmp_path / "e")
    shutil.copyfile(export_dir / "student_int8.onnx", d / "student_int8.onnx")
    edit_manifest(d, lambda m: m.update(artifacts=[a for a in m["artifacts"] if a["file"] != "student_int8.onnx"]))
    with pytest.raises(InputFileError, match="student_int8.onnx: not listed in .*manifest.json: a leftover of an "
                                             "earlier export"):
        nr.load(d / "student_int8.onnx", device="cpu")
    err = one_line_error(run_args(d / "student_int8.onnx", tmp_path), capsys)
    assert "a leftover of an earlier export" in err
    one_line_error(run_args(d / "student_int8.onnx", tmp_path) + ["--dry-run"], capsys)  # the cheap check too


def test_a_listed_file_given_alone_is_checked_too(export_dir, tmp_path):
    d = copy_export(export_dir, tmp_path / "e")
    with nr.load(d / "student.onnx", device="cpu") as g:
        assert g.mapping is not None  # listed, same checkpoint
    data = bytearray((d / "student.onnx").read_bytes())
    data[-1] ^= 0xFF
    (d / "student.onnx").write_bytes(bytes(data))
    with pytest.raises(InputFileError, match="student.onnx: sha256"):
        nr.load(d / "student.onnx", device="cpu")


def test_a_mapping_of_another_checkpoint_is_not_used(export_dir, gen, tmp_path, capsys):
    d = copy_export(export_dir, tmp_path / "lone", names=("mapping.onnx", "student.onnx"))  # no manifest
    set_metadata(d / "mapping.onnx", **{S.META_CHECKPOINT: OTHER_CKPT})
    with nr.load(d / "student.onnx", device="cpu") as g:
        assert g.mapping is None
        w = gen.style(seed=3)
        np.testing.assert_array_equal(g.render(w=w), gen.render(w=w))  # the student itself runs
        with pytest.raises(UsageError, match="mapping.onnx beside it was exported from another checkpoint"):
            g.render(seeds=3)
    err = one_line_error(run_args(d / "student.onnx", tmp_path), capsys, code=2)
    assert "another checkpoint" in err


def test_an_unlisted_mapping_beside_a_listed_student_is_not_used(export_dir, tmp_path):
    d = copy_export(export_dir, tmp_path / "e")
    edit_manifest(d, lambda m: m.update(artifacts=[a for a in m["artifacts"] if a["file"] != "mapping.onnx"]))
    with nr.load(d / "student.onnx", device="cpu") as g:
        assert g.mapping is None
        with pytest.raises(UsageError, match="mapping.onnx beside it is not listed"):
            g.style(seed=0)


# --- 3. ONNX external data -----------------------------------------------------------------------------------
def with_external_data(export_dir: Path, d: Path) -> Path:
    """student.onnx of the export re-saved with its weights in student.data beside it (no manifest)."""
    d.mkdir(parents=True)
    model = onnx.load(str(export_dir / "student.onnx"))
    onnx.save(model, str(d / "student.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="student.data", size_threshold=1024)
    return d / "student.onnx"


def relocate(model_path: Path, location: str) -> None:
    model = onnx.load(str(model_path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    model_path.write_bytes(model.SerializeToString())


def test_external_data_beside_the_model_loads(export_dir, gen, tmp_path):
    path = with_external_data(export_dir, tmp_path / "x")
    assert (tmp_path / "x" / "student.data").stat().st_size > 1e6
    assert path.stat().st_size < 1e6
    w = gen.style(seed=5)
    with nr.load(path, device="cpu") as g:
        np.testing.assert_array_equal(g.render(w=w), gen.render(w=w))


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink", "symlinked folder"])
def test_external_data_outside_the_folder_is_refused(export_dir, tmp_path, capsys, where):
    path = with_external_data(export_dir, tmp_path / "x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(tmp_path / "x" / "student.data", outside / "student.data")
    if where == "dotdot":
        relocate(path, "../outside/student.data")
        message = "'..' leaves the model's folder"
    elif where == "absolute":
        relocate(path, str(outside / "student.data"))
        message = "an absolute path"
    elif where == "symlink":
        (tmp_path / "x" / "student.data").symlink_to(outside / "student.data")
        message = "resolves to .*outside"
    else:
        (tmp_path / "x" / "sub").symlink_to(outside)
        relocate(path, "sub/student.data")
        message = "resolves to .*outside"
    with pytest.raises(InputFileError, match=message):
        nr.load(path, device="cpu")
    one_line_error(run_args(path, tmp_path), capsys)


def test_external_data_is_found_in_constants_and_subgraphs(tmp_path):
    """Not only initializers: a Constant's tensor inside an If branch is checked as well."""
    ext = numpy_helper.from_array(np.zeros(4, np.float32), "k")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="../../etc/passwd")
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=ext)], "then", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["out"], then_branch=branch, else_branch=branch)],
                              "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph)
    with pytest.raises(InputFileError, match="tensor 'k' keeps its data in '../../etc/passwd'"):
        check_external_data(model, tmp_path / "m.onnx")
