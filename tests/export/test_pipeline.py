"""nerfgan-export end to end on the tiny student: files, metadata, manifest, gates both ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import UNTRAINED_INT8_MIN_PSNR, saturate_int8_scales
from nerfgan.errors import ExportMismatchError
from nerfgan.export import pipeline
from nerfgan.export.pipeline import ExportConfig, export
from nerfgan.export.to_onnx import read_metadata
from nerfgan.io import file_sha256, mark_dir
from nerfgan.runtime import spec as S
from nerfgan.runtime.spec import read_manifest
from nerfgan.student.checkpoint import load_student
from nerfgan.student.config import StudentConfig


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_student_path, tiny_calib_path):
    out = tmp_path_factory.mktemp("export")
    repo = out / "triton"
    manifest = export(tiny_student_path, out / "onnx", ExportConfig(fp16=True, int8=True, calib=str(tiny_calib_path),
                                                                   int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR,
                                                                   triton=str(repo)), log=lambda s: None)
    return out / "onnx", repo, manifest


def test_files_manifest_and_metadata(exported, tiny_student_path):
    out, _, manifest = exported
    names = sorted(p.name for p in out.iterdir())
    assert names == [".nerfgan-export.lock", ".nerfgan-owner.json", ".nerfgan.lock", "manifest.json", "mapping.onnx",
                     "student.onnx", "student_fp16.onnx", "student_int8.onnx"]
    assert read_manifest(out) == manifest
    ckpt_sha = file_sha256(tiny_student_path)
    assert manifest["checkpoint"]["sha256"] == ckpt_sha
    precisions = {a["file"]: a["precision"] for a in manifest["artifacts"]}
    assert precisions == {"mapping.onnx": "fp32", "student.onnx": "fp32", "student_fp16.onnx": "fp16",
                          "student_int8.onnx": "int8"}
    for a in manifest["artifacts"]:
        assert a["sha256"] == file_sha256(out / a["file"])
        assert a["validation"] and all(c["ok"] for c in a["validation"])
        meta = read_metadata(out / a["file"])
        assert meta[S.META_FORMAT] == S.FORMAT and meta[S.META_KIND] == a["kind"]
        assert meta[S.META_PRECISION] == a["precision"] and meta[S.META_CHECKPOINT] == ckpt_sha
        assert StudentConfig.from_json(meta[S.META_CONFIG]) == load_student(tiny_student_path).config
        spec = S.ModelSpec.from_json(meta[S.META_IO])
        model = onnx.load(str(out / a["file"]))
        assert [i.name for i in model.graph.input] == spec.input_names
        assert [o.name for o in model.graph.output] == spec.output_names
        assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
        assert json.loads(meta[S.META_BATCH]) == [1, 16, 16]  # exported with a Triton repository: opt = max
    fp32 = {c["output"]: c["value"] for c in manifest["artifacts"][1]["validation"]}
    assert set(fp32) == {"image", "image_raw"} and max(fp32.values()) <= 1e-4
    assert not list(out.glob(".nerfgan-export-*")), "staging folder left behind"


def test_onnx_chain_matches_pytorch_at_any_batch(exported, tiny_student_path):
    out, _, _ = exported
    student = load_student(tiny_student_path)
    mapping, synth = session(out / "mapping.onnx"), session(out / "student.onnx")
    from nerfgan import camera

    for b in (1, 5):
        rng = np.random.default_rng(b)
        z = rng.standard_normal((b, 512)).astype(np.float32)
        c_cond = np.repeat(camera.frontal()[None], b, 0).astype(np.float32)
        c = camera.pose(np.linspace(-30, 30, b), np.zeros(b)).reshape(b, 25).astype(np.float32)
        psi = np.linspace(0.5, 1.0, b).astype(np.float32)
        (w,) = mapping.run(None, {"z": z, "c_cond": c_cond, "psi": psi})
        image, image_raw = synth.run(None, {"w": w, "c": c})
        with torch.no_grad():
            ref = student.generate(torch.from_numpy(z), torch.from_numpy(c_cond), torch.from_numpy(c), torch.from_numpy(psi))
        assert image.shape == (b, 3, 128, 128) and image_raw.shape == (b, 3, 64, 64)
        assert np.abs(image - ref.image.numpy()).max() < 1e-4
        assert np.abs(image_raw - ref.image_raw.numpy()).max() < 1e-4


def test_fp16_and_int8_files_are_what_they_claim(exported):
    out, _, _ = exported
    fp16 = onnx.load(str(out / "student_fp16.onnx"))
    half = [t for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) > 10, "no float16 weights in the FP16 file"
    int8 = onnx.load(str(out / "student_int8.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QuantizeLinear") > 5 and ops.count("DequantizeLinear") > 5


def test_triton_repository_from_export(exported):
    _, repo, _ = exported
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    student = text_format.Parse((repo / "nerfgan_student" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert student.platform == "onnxruntime_onnx" and student.max_batch_size == 16
    served = repo / "nerfgan_student" / "1" / "model.onnx"
    assert read_metadata(served)[S.META_PRECISION] == "int8"  # the lowest precision exported
    assert (repo / "nerfgan_mapping" / "1" / "model.onnx").is_file()


# --- each gate fails on a deliberately broken artifact, and nothing final is left ------------------
def _assert_nothing_installed(out: Path, before: set[str]) -> None:
    assert {p.name for p in out.iterdir()} == before | {pipeline.EXPORT_LOCK}  # the lock file stays, as lock files do


def test_fp32_gate_fails_on_wrong_weights(tmp_path, tiny_student_path, monkeypatch):
    from nerfgan.export import to_onnx

    real = to_onnx.export_onnx

    def broken(student, kind, path, opset=17):
        if kind == "student":
            student = load_student(tiny_student_path)
            with torch.no_grad():
                student.synthesis.b64.conv1.bias.add_(0.01)  # (a weight scale would be demodulated away)
        return real(student, kind, path, opset)

    monkeypatch.setattr(to_onnx, "export_onnx", broken)
    out = tmp_path / "out"
    out.mkdir()
    mark_dir(out, pipeline.OWNER_KIND)  # an export folder nerfgan made earlier ...
    (out / "keep.txt").write_text("mine")  # ... where the user keeps a file of their own
    with pytest.raises(ExportMismatchError) as e:
        export(tiny_student_path, out, ExportConfig(), log=lambda s: None)
    assert "student.onnx:image max_abs_error" in str(e.value) and "student.onnx:image_raw" in str(e.value)
    assert "mapping.onnx" not in str(e.value)
    _assert_nothing_installed(out, {"keep.txt", ".nerfgan-owner.json"})


def test_fp16_gate_fails_on_a_damaged_conversion(tmp_path, tiny_student_path, monkeypatch):
    from nerfgan.calibrate import fp16

    real = fp16.to_fp16

    def damaged(model, extra_fp32_scopes=()):
        converted, kept, total = real(model, extra_fp32_scopes)
        conv = next(n for n in converted.graph.node  # not demodulated (onnxslim may rename the node within its scope)
                    if n.op_type == "Conv" and n.name.startswith("/g/superresolution/block1/torgb/"))
        init = next(t for t in converted.graph.initializer if t.name in conv.input)
        w = onnx.numpy_helper.to_array(init)
        init.CopyFrom(onnx.numpy_helper.from_array((w * 1.1).astype(w.dtype), init.name))
        return converted, kept, total

    monkeypatch.setattr(fp16, "to_fp16", damaged)
    out = tmp_path / "out"
    with pytest.raises(ExportMismatchError) as e:
        export(tiny_student_path, out, ExportConfig(fp16=True), log=lambda s: None)
    assert "student_fp16.onnx:image psnr_db_vs_fp32" in str(e.value)
    assert "student.onnx" not in str(e.value).replace("student_fp16.onnx", "")
    _assert_nothing_installed(out, set())


@pytest.fixture(scope="module")
def near_calib(tmp_path_factory, tiny_student_path, tiny_calib_path):
    """The tiny calibration file with its 'teacher renders' replaced by this student's images plus noise,
    ~20 dB PSNR after clipping to [-1, 1]: where a distilled student is. (This student's synthesis is
    untrained, far from any teacher; tests/export/test_int8_builtin_teacher.py checks the gate with a
    distilled student and real renders of the built-in teacher.)"""
    from nerfgan.calibrate.calibset import load_calibration_set, write_npz

    cs = load_calibration_set(tiny_calib_path)
    student = load_student(tiny_student_path)
    with torch.no_grad():
        out = student(torch.from_numpy(cs.arrays["w"]), torch.from_numpy(cs.arrays["c"]))
    rng = np.random.default_rng(0)
    arrays = dict(cs.arrays, meta=np.array(json.dumps(cs.meta)))
    for name, img in (("image", out.image), ("image_raw", out.image_raw)):
        arrays[name] = (img.numpy() + 0.25 * rng.standard_normal(img.shape)).astype(np.float16)
    return write_npz(tmp_path_factory.mktemp("near") / "near.npz", arrays)


def test_int8_gate_passes_for_a_good_quantization(tmp_path, tiny_student_path, near_calib):
    lines: list[str] = []
    manifest = export(tiny_student_path, tmp_path / "out", ExportConfig(int8=True, calib=str(near_calib),
                                                                        int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR),
                      log=lines.append)
    int8 = manifest["artifacts"][-1]
    checks = {(c["metric"], c["output"]): c for c in int8["validation"]}
    assert set(checks) == {(m, o) for m in ("psnr_db_vs_fp32", "psnr_drop_db_vs_teacher") for o in ("image", "image_raw")}
    assert all(c["ok"] for c in checks.values())
    assert checks["psnr_drop_db_vs_teacher", "image"]["value"] < 2.0
    assert checks["psnr_db_vs_fp32", "image"]["threshold"] == UNTRAINED_INT8_MIN_PSNR
    fp32_psnr = float(checks["psnr_drop_db_vs_teacher", "image"]["detail"].split("fp32 ")[1].split(" dB")[0])
    assert 17.0 < fp32_psnr < 23.0  # the premise of the fixture
    # calibrated on the file's first 4 samples, judged on the other 4, and the manifest says which
    assert int8["calibration_samples"] == 4
    assert int8["judged_on"] == {"rows": [4, 8], "sample_index": [4, 5, 6, 7]}
    assert all("held-out rows 4-7 of near.npz" in c["detail"] for c in checks.values())
    assert any(line.startswith("ok   student_int8.onnx:image psnr_db_vs_fp32") for line in lines)


def test_int8_gate_fails_on_saturating_scales(tmp_path, tiny_student_path, near_calib, monkeypatch):
    saturate_int8_scales(monkeypatch)
    out = tmp_path / "out"
    with pytest.raises(ExportMismatchError) as e:
        export(tiny_student_path, out, ExportConfig(int8=True, calib=str(near_calib),
                                                    int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR), log=lambda s: None)
    for gate in ("psnr_db_vs_fp32", "psnr_drop_db_vs_teacher"):
        assert f"student_int8.onnx:image {gate}" in str(e.value)
        assert f"student_int8.onnx:image_raw {gate}" in str(e.value)
    _assert_nothing_installed(out, set())


def test_int8_gate_needs_samples_to_calibrate_and_to_judge(tmp_path, tiny_student_path, tiny_calib_path):
    from nerfgan.calibrate.calibset import load_calibration_set, write_npz
    from nerfgan.errors import InputFileError

    cs = load_calibration_set(tiny_calib_path)
    arrays = {k: v[:3] for k, v in cs.arrays.items()}
    arrays["meta"] = np.array(json.dumps(dict(cs.meta, n=3)))
    small = write_npz(tmp_path / "small.npz", arrays)
    out = tmp_path / "out"
    with pytest.raises(InputFileError, match=r"small.npz: 3 sample\(s\); --int8 needs at least 4") as e:
        export(tiny_student_path, out, ExportConfig(int8=True, calib=str(small)), log=lambda s: None)
    assert "\n" not in str(e.value)
    assert not out.exists()  # refused before any work: OUT not even made


def test_calibration_for_another_teacher_is_refused(tmp_path, tiny_student_path, tiny_calib_path):
    from nerfgan.calibrate.calibset import load_calibration_set, write_npz
    from nerfgan.errors import InputFileError

    cs = load_calibration_set(tiny_calib_path)
    meta = dict(cs.meta, teacher_config={"other": True})
    arrays = dict(cs.arrays, meta=np.array(json.dumps(meta)))
    bad = write_npz(tmp_path / "other.npz", arrays)
    with pytest.raises(InputFileError, match="another teacher config"):
        export(tiny_student_path, tmp_path / "out", ExportConfig(int8=True, calib=str(bad)), log=lambda s: None)


def test_trt_without_tensorrt_writes_nothing(tmp_path, tiny_student_path):
    from nerfgan.errors import MissingDependencyError, NerfganError

    out = tmp_path / "out"
    with pytest.raises((MissingDependencyError, NerfganError), match=r"nerfgan\[tensorrt\]|no CUDA GPU"):
        export(tiny_student_path, out, ExportConfig(trt=True), log=lambda s: None)
    assert not out.exists()  # refused before any work


def test_config_refuses_bad_options():
    from nerfgan.errors import UsageError

    for kwargs in ({"batch": (4, 2, 8)}, {"batch": (0, 1, 1)}, {"int8": True}, {"opset": 7},
                   {"triton_precision": "fp16"}, {"int8_backend": "magic"}, {"int8_holdout": 0.0},
                   {"int8_holdout": 1.0}):
        with pytest.raises(UsageError):
            ExportConfig(**kwargs)
    assert pipeline.ExportConfig().to_json()


def test_a_student_without_pose_input_exports_and_loads(tmp_path, builtin_teacher):
    """The exporter drops the camera input such a student never reads; the runtime still takes (w, c) for it."""
    import nerfgan.runtime as nr
    from nerfgan.student.checkpoint import save_student
    from nerfgan.student.config import student_preset
    from nerfgan.student.generator import StudentGenerator

    torch.manual_seed(0)
    cfg = student_preset("tiny", builtin_teacher.config).replace(pose_input=False)
    path = save_student(StudentGenerator.from_teacher(cfg, builtin_teacher).eval(), tmp_path / "nopose.safetensors")
    export(path, tmp_path / "out", ExportConfig(), log=lambda s: None)
    assert [i.name for i in session(tmp_path / "out" / "student.onnx").get_inputs()] == ["w"]
    with nr.load(tmp_path / "out") as g:
        left, right = g.render(seeds=0, yaw=[-30, 30])
    np.testing.assert_array_equal(left, right)  # no pose input: the same picture from every side


def test_batch_default_is_tuned_for_what_serves_it():
    assert ExportConfig().batch == (1, 1, 16)  # one image at a time (nerfgan-run, an app)
    assert ExportConfig(triton="repo").batch == (1, 16, 16)  # Triton's dynamic batcher forms batches up to 16
    assert ExportConfig(triton="repo", batch=(1, 2, 8)).batch == (1, 2, 8)  # as asked
