"""Student files record their teacher's weights; calibrate, parity, scene score and bench refuse another teacher
(a teacher of the same architecture with other weights) unless --allow-other-teacher, which the report records."""

from __future__ import annotations

import json

import pytest

from conftest import invoke
from nerfgan.cli import main
from nerfgan.errors import ConfigError
from nerfgan.runtime.spec import META_TEACHER, read_manifest
from nerfgan.student.checkpoint import read_student_metadata
from nerfgan.teacher.checkpoint import load_teacher, save_teacher, weights_digest
from nerfgan.teacher.identity import TEACHER_KEY, check_same_teacher


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory, other_builtin_teacher):
    """The built-in teacher's architecture and config, other weights."""
    return save_teacher(other_builtin_teacher, tmp_path_factory.mktemp("other") / "other.safetensors")


def check(**kw):
    base = dict(teacher="t", teacher_config_json='{"a": 1}', teacher_digest="d" * 64, engine="e",
                engine_config_json='{"teacher": {"a": 1}}', engine_teacher_digest="d" * 64)
    return check_same_teacher(**{**base, **kw})


def test_check_same_teacher_both_ways():
    assert check()["same_weights"] is True and "note" not in check()
    with pytest.raises(ConfigError, match="e: was distilled from another teacher than --teacher t .*--allow-other"):
        check(engine_teacher_digest="f" * 64)
    assert "another teacher" in check(engine_teacher_digest="f" * 64, allow_other=True)["note"]
    assert check(engine_teacher_digest=None)["same_weights"] is None  # an older file: config checked only
    with pytest.raises(ConfigError, match="config value"):  # another config is never comparable
        check(engine_config_json='{"teacher": {"a": 2}}', allow_other=True)


def test_the_digest_does_not_depend_on_how_the_teacher_was_stored(tmp_path, builtin_teacher):
    copy = save_teacher(builtin_teacher, tmp_path / "copy.safetensors", {"note": "other metadata, same weights"})
    assert weights_digest(load_teacher(copy)) == weights_digest(builtin_teacher)


def test_exports_carry_the_record(tiny_student_path, tiny_export_dir, builtin_teacher):
    import onnx

    digest = weights_digest(builtin_teacher)
    assert read_student_metadata(tiny_student_path)[TEACHER_KEY] == digest
    assert read_manifest(tiny_export_dir)["teacher_weights_sha256"] == digest
    props = {p.key: p.value for p in onnx.load(str(tiny_export_dir / "student.onnx"), load_external_data=False).metadata_props}
    assert props[META_TEACHER] == digest


def test_parity_refuses_another_teacher_and_the_override_is_reported(tmp_path, tiny_export_dir, other_teacher, capsys):
    args = ["parity", "--teacher", other_teacher, "--engine", tiny_export_dir, "--n", 2, "-o", tmp_path / "p"]
    code, out, err = invoke(main, args, capsys)
    assert code == 1 and "--allow-other-teacher" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
    code, out, err = invoke(main, args + ["--allow-other-teacher"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["teacher_check"]["same_weights"] is False and "another teacher" in report["teacher_check"]["note"]
    assert "teacher check: compared with another teacher" in (tmp_path / "p" / "report.md").read_text()


def test_calibrate_scene_score_and_bench_refuse_another_teacher(tmp_path, tiny_student_path, tiny_export_dir,
                                                                other_teacher, capsys):
    for args in (["calibrate", "--teacher", other_teacher, "--ckpt", tiny_student_path, "--n", 2,
                  "-o", tmp_path / "c.npz"],
                 ["scene", "score", "--teacher", other_teacher, "--engine", tiny_export_dir, "--n", 1],
                 ["bench", "--teacher", other_teacher, "--engine", tiny_export_dir, "--batch", 1, "--runs", 1,
                  "--warmup", 0]):
        code, out, err = invoke(main, args, capsys)
        assert code == 1 and "distilled from another teacher" in err and "--allow-other-teacher" in err, args
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, args
    assert not (tmp_path / "c.npz").exists()
    code, _, err = invoke(main, ["calibrate", "--teacher", other_teacher, "--ckpt", tiny_student_path, "--n", 2,
                                 "-o", tmp_path / "c.npz", "--allow-other-teacher"], capsys)
    assert code == 0, err
    from nerfgan.calibrate.calibset import load_calibration_set

    assert load_calibration_set(tmp_path / "c.npz").meta["teacher_check"]["allow_other_teacher"] is True
