"""OpenVINO as a runtime backend for the ONNX files: held to ONNX Runtime's gates and contract (input checks,
threads, batch splitting), precision explicit (f32 unless bf16 is asked for), nerfgan-run and bench, and one
clear line when the [openvino] extra is missing."""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import UNTRAINED_INT8_MIN_PSNR, invoke

import nerfgan.runtime as nr
from nerfgan.cli import run_standalone
from nerfgan.errors import MissingDependencyError, TensorError, UsageError
from nerfgan.metrics import mean_psnr
from nerfgan.runtime.bench import bench_command
from nerfgan.runtime.run_cli import main as run_main

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install 'nerfgan[openvino]')")
FP32_MAX_ABS = 1e-4  # OpenVINO vs ONNX Runtime, same FP32 file, same inputs
SEEDS, YAWS = [0, 1, 2], [-25.0, 0.0, 30.0]


@pytest.fixture(scope="module")
def ort(export_dir):
    with nr.load(export_dir, device="cpu") as g:
        yield g


@pytest.fixture(scope="module")
def ov(export_dir):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed (pip install 'nerfgan[openvino]')")
    with nr.load(export_dir, backend="openvino") as g:
        yield g


def _hint(backend):
    import openvino.properties.hint as hints

    return backend._compiled.get_property(hints.inference_precision)


@needs_openvino
def test_fp32_matches_onnxruntime(ort, ov):
    assert ov.backend == "openvino-cpu-fp32" and ov.mapping is not None and ov.mapping.name == "openvino-cpu-fp32"
    w_ort, w_ov = ort.style(seed=SEEDS), ov.style(seed=SEEDS)
    assert np.abs(w_ov - w_ort).max() <= FP32_MAX_ABS
    a, b = ort.generate(w=w_ort, yaw=YAWS, pitch=5), ov.generate(w=w_ort, yaw=YAWS, pitch=5)
    for name in ("image", "image_raw"):
        assert np.abs(a[name] - b[name]).max() <= FP32_MAX_ABS, name
    full = ov.generate(seeds=SEEDS, yaw=YAWS, pitch=5)["image"]  # seeds -> images, mapping and student in OpenVINO
    assert np.abs(full - a["image"]).max() <= FP32_MAX_ABS
    ra, rb = ort.render(seeds=SEEDS, yaw=YAWS), ov.render(seeds=SEEDS, yaw=YAWS)
    assert ra.shape == rb.shape and ra.dtype == rb.dtype == np.uint8
    assert np.abs(ra.astype(int) - rb.astype(int)).max() <= 1  # a rounding boundary at most


@needs_openvino
def test_int8_file_as_exported_meets_the_int8_floor(export_dir, ort):
    w = ort.style(seed=list(range(6)))
    yaws = np.linspace(-30, 30, 6)
    fp32 = ort.generate(w=w, yaw=yaws)
    with nr.load(export_dir, precision="int8", backend="openvino") as g8, \
            nr.load(export_dir, precision="int8", device="cpu") as r8:
        assert g8.backend == "openvino-cpu-int8" and g8.student.path.name == "student_int8.onnx"
        assert g8.student.inference_precision == "fp32"  # Q/DQ read as exported, the rest in f32
        ov8, ort8 = g8.generate(w=w, yaw=yaws), r8.generate(w=w, yaw=yaws)
    for name in ("image", "image_raw"):
        got = mean_psnr(ov8[name], fp32[name])
        print(f"{name}: OpenVINO INT8 {got:.2f} dB, ONNX Runtime INT8 {mean_psnr(ort8[name], fp32[name]):.2f} dB "
              f"vs FP32; OpenVINO vs ONNX Runtime INT8 {mean_psnr(ov8[name], ort8[name]):.2f} dB")
        assert got >= UNTRAINED_INT8_MIN_PSNR, name


@needs_openvino
def test_precision_hint_is_f32_unless_asked(export_dir, ov):
    import openvino as ovm

    assert _hint(ov.student) == ovm.Type.f32 and _hint(ov.mapping) == ovm.Type.f32
    caps = ovm.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        with pytest.raises(UsageError, match="no bfloat16 support"):
            nr.load(export_dir, backend="openvino", openvino_precision="bf16")
        return
    from nerfgan.runtime.openvino_backend import BF16_MIN_PSNR

    with nr.load(export_dir, backend="openvino", openvino_precision="bf16") as g:
        assert _hint(g.student) == ovm.Type.bf16 and g.student.inference_precision == "bf16"
        assert _hint(g.mapping) == ovm.Type.f32  # the mapping stays fp32
        assert g.backend == "openvino-cpu-fp32-bf16"
        assert g.student.bf16_psnr is not None and g.student.bf16_psnr >= BF16_MIN_PSNR


@needs_openvino
def test_bf16_gate_refuses_below_its_floor(export_dir):
    from nerfgan.errors import ConfigError
    from nerfgan.runtime import openvino_backend as O

    import openvino as ovm

    if "BF16" not in ovm.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bfloat16 support")
    settings = O.OpenVinoSettings(inference_precision="bf16", bf16_min_psnr=200.0)  # a floor no bf16 run clears
    with pytest.raises(ConfigError, match="below the 200 dB gate"):
        O.OpenVinoBackend(export_dir / "student.onnx", settings)


@needs_openvino
def test_two_threads_render_at_once(ov, ort):
    want = {s: ort.render(seeds=[s], yaw=[-20, 20]) for s in (3, 4)}
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(seed: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                got[seed] = ov.render(seeds=[seed], yaw=[-20, 20])
        except BaseException as e:  # re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for s in want:
        assert np.abs(got[s].astype(int) - want[s].astype(int)).max() <= 1


@needs_openvino
def test_batch_beyond_the_limit_is_split(export_dir, ort, monkeypatch):
    with nr.load(export_dir, backend="openvino") as g:
        g.student.max_batch = 2
        calls: list[int] = []
        real = g.student._run

        def spy(feeds):
            calls.append(len(feeds["w"]))
            return real(feeds)

        monkeypatch.setattr(g.student, "_run", spy)
        w = ort.style(seed=list(range(5)))
        out = g.generate(w=w, yaw=0)["image"]
    assert calls == [2, 2, 1]
    assert np.abs(out - ort.generate(w=w, yaw=0)["image"]).max() <= FP32_MAX_ABS


@needs_openvino
def test_bad_inputs_name_the_tensor(ov):
    b = ov.student
    w, c = np.zeros((2, ov.w_dim), np.float32), ov.cameras(yaw=[0, 10])
    with pytest.raises(TensorError, match="input w has shape"):
        b.infer({"w": w[:, :-1], "c": c})
    with pytest.raises(TensorError, match="input c contains NaN"):
        b.infer({"w": w, "c": np.full_like(c, np.nan)})
    with pytest.raises(TensorError, match=r"missing \['c'\]"):
        b.infer({"w": w})
    with pytest.raises(TensorError, match="input c has batch 1"):
        b.infer({"w": w, "c": c[:1]})


@needs_openvino
def test_nerfgan_run_backend_openvino_writes_an_image(export_dir, tmp_path, capsys):
    out = tmp_path / "view.png"
    code, stdout, err = invoke(run_main, ["--engine", export_dir, "--backend", "openvino", "--seed", 7,
                                          "--pose", "20,-5", "-o", out], capsys)
    assert code == 0, err
    ref = tmp_path / "ref.png"
    assert invoke(run_main, ["--engine", export_dir, "--seed", 7, "--pose", "20,-5", "-o", ref], capsys)[0] == 0
    with Image.open(out) as a, Image.open(ref) as b:
        diff = np.abs(np.asarray(a, int) - np.asarray(b, int))
    assert diff.max() <= 1 and a.size == (128, 128)


@needs_openvino
def test_bench_two_backends_prints_which_is_faster(export_dir, capsys):
    code, out, err = invoke(lambda argv: run_standalone(bench_command, "nerfgan bench", argv),
                            ["--teacher", "tiny", "--engine", export_dir, "--engine", export_dir, "--backend",
                             "onnxruntime", "--backend", "openvino", "--batch", "1", "--runs", 1, "--warmup", 0,
                             "--device", "cpu"], capsys)
    assert code == 0, err
    assert "openvino-cpu-fp32" in out and "onnxruntime-cpu-fp32" in out
    line = next(ln for ln in out.splitlines() if " faster than " in ln)
    assert line.endswith("for student.onnx on this CPU (batch 1, images/s)")
    assert {"openvino", "onnxruntime"} == {line.split()[0], line.split(" than ")[1].split()[0]}


def test_missing_extra_is_one_line(export_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` does without the package
    with pytest.raises(MissingDependencyError, match=r"pip install 'nerfgan\[openvino\]'"):
        nr.load(export_dir, backend="openvino")
    code, out, err = invoke(run_main, ["--engine", export_dir, "--backend", "openvino", "-o", tmp_path / "v.png"],
                            capsys)
    assert code == 1 and out == "" and not (tmp_path / "v.png").exists()
    assert err.startswith("Error:") and "nerfgan[openvino]" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, needle", [
    (["--openvino-precision", "bf16"], "--openvino-precision works with --backend openvino only"),
    (["--backend", "openvino", "--device", "cuda"], "runs on the CPU"),
    (["--backend", "tensorflow"], "--backend")])
def test_bad_backend_options_exit_2(args, needle, export_dir, tmp_path, capsys):
    code, out, err = invoke(run_main, ["--engine", export_dir, *args, "-o", tmp_path / "v.png"], capsys)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_openvino_refuses_what_is_not_onnx(tiny_student_path):
    with pytest.raises(UsageError, match="runs ONNX files"):
        nr.load(tiny_student_path, backend="openvino")
    with pytest.raises(UsageError, match="openvino_precision works with backend='openvino' only"):
        nr.load(tiny_student_path, openvino_precision="bf16")


def test_bench_backend_count_must_fit_the_engines(export_dir, capsys):
    code, out, err = invoke(lambda argv: run_standalone(bench_command, "nerfgan bench", argv),
                            ["--teacher", "tiny", "--engine", export_dir, "--engine", export_dir, "--backend",
                             "onnxruntime", "--backend", "openvino", "--backend", "openvino"], capsys)
    assert code == 2 and out == "" and err.startswith("Error:") and "--backend" in err
    assert len(err.strip().splitlines()) == 1


@needs_openvino
def test_static_shapes_are_bounded_and_match_the_dynamic_compile(export_dir, ort):
    from nerfgan.runtime.openvino_backend import OpenVinoBackend, OpenVinoSettings

    w = ort.style(seed=list(range(6)))
    c = ort.cameras(yaw=np.linspace(-20, 20, 6))
    with OpenVinoBackend(export_dir / "student.onnx", OpenVinoSettings(static_shapes=2)) as s, \
            OpenVinoBackend(export_dir / "student.onnx", OpenVinoSettings(static_shapes=0)) as d:
        for b in (1, 2, 3, 6):
            a, e = s.infer({"w": w[:b], "c": c[:b]}), d.infer({"w": w[:b], "c": c[:b]})
            assert np.abs(a["image"] - e["image"]).max() <= FP32_MAX_ABS
        assert list(s._static) == [3, 6] and not d._static
    with pytest.raises(UsageError, match="static_shapes"):
        OpenVinoSettings(static_shapes=-1)
