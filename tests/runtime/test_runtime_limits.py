"""Bounds and one-line errors of nerfgan.runtime and nerfgan-run: batches run in chunks within a memory budget,
seed/frame counts have limits, malformed values, manifests and metadata are typed errors, outputs are checked
writable before any rendering, and close() while other threads render is a typed error in those threads."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import nerfgan.runtime as nr
from conftest import invoke
from nerfgan.errors import ConfigError, InputFileError, PoseError, TensorError, UsageError
from nerfgan.runtime import Generator, run_cli
from nerfgan.runtime import spec as S
from nerfgan.runtime.backends import Backend
from nerfgan.runtime.generator import ACTIVATION_FACTOR, CALL_BUDGET_BYTES
from nerfgan.runtime.run_cli import main

CAMERA = json.dumps({"radius": 2.7, "pivot": [0, 0, 0.2], "focal": 4.2647})


class Zeros(Backend):
    """A backend that records its batch sizes and answers zeros (the 128 px student's shapes by default)."""

    def __init__(self, spec: S.ModelSpec) -> None:
        super().__init__(Path(f"{spec.kind}.fake"), spec, {S.META_CAMERA: CAMERA}, max_batch=None)
        self.batches: list[int] = []

    def _run(self, feeds):
        b = len(next(iter(feeds.values())))
        self.batches.append(b)
        return {t.name: np.zeros(t.concrete(b), np.float32) for t in self.spec.outputs}


def fake_generator(**kwargs) -> Generator:
    return Generator(Zeros(S.student_spec(512, 64, 128)), Zeros(S.mapping_spec(512, 512)), **kwargs)


def one_line_error(args, capsys, code) -> str:
    got, out, err = invoke(main, [str(a) for a in args], capsys)
    assert got == code, err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- 4. memory: chunks and limits ----------------------------------------------------------------------------
def test_a_large_batch_runs_in_chunks_within_the_budget():
    g = fake_generator()
    per_image = ACTIVATION_FACTOR * 4 * (3 * 128 * 128 + 3 * 64 * 64)  # ~31 MB estimated (21.5 MB measured)
    n = g.images_per_call(g.student)
    assert n == CALL_BUDGET_BYTES // per_image == 34 and n * per_image <= 1 << 30
    images = g.render(seeds=range(1024))
    assert images.shape == (1024, 128, 128, 3) and images.dtype == np.uint8
    assert max(g.student.batches) == 34 and sum(g.student.batches) == 1024 and len(g.student.batches) == 31
    assert sum(g.mapping.batches) == 1024


def test_chunks_give_the_same_images(gen):
    w = gen.style(seed=[1, 2, 3, 4, 5])
    whole = gen.render(w=w, yaw=[-20, -10, 0, 10, 20])
    saved = gen.call_budget_bytes
    gen.call_budget_bytes = 1  # one image per call
    try:
        assert gen.images_per_call(gen.student) == 1
        np.testing.assert_array_equal(gen.render(w=w, yaw=[-20, -10, 0, 10, 20]), whole)
    finally:
        gen.call_budget_bytes = saved


def test_cli_limits_the_images_of_one_command(export_dir, tmp_path, capsys):
    err = one_line_error(["--engine", export_dir, "--seeds", "0-1023", "--orbit", 3600, "-o", tmp_path / "o.gif",
                          "--dry-run"], capsys, code=2)
    assert "--orbit 3600 with 1024 seeds is 3686400 images; at most 3600" in err
    one_line_error(["--engine", export_dir, "--seeds", "0-1", "--orbit", 3601, "-o", tmp_path / "o.gif"], capsys, 2)
    code, out, err = invoke(main, ["--engine", str(export_dir), "--seeds", "0-1", "--orbit", "1800", "-o",
                                   str(tmp_path / "o.gif"), "--dry-run"], capsys)
    assert code == 0, err  # 2 x 1800 = 3600: the limit itself is allowed
    assert os.listdir(tmp_path) == []


def test_cli_limits_the_memory_one_output_holds(export_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_cli, "MAX_HELD_BYTES", 3 * 128 * 128 * 3)  # three 128 px images
    err = one_line_error(["--engine", export_dir, "--device", "cpu", "--seeds", "0-3", "--grid", "-o",
                          tmp_path / "g.png"], capsys, code=2)
    assert "4 images of 128x128 would hold" in err
    assert os.listdir(tmp_path) == []


# --- 5. one error line ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"seeds": 1.5}, UsageError, "seeds: expected an integer"),
    ({"seeds": True}, UsageError, "seeds: expected an integer"),
    ({"seeds": "12"}, UsageError, "seeds: expected an integer"),
    ({"seeds": -1}, UsageError, "seeds"),
    ({"seeds": 0, "yaw": "abc"}, PoseError, "yaw: expected a number"),
    ({"seeds": 0, "yaw": [[0, 10], [20, 30]]}, PoseError, "yaw: expected a number or a 1-D sequence"),
    ({"seeds": 0, "radius": "x"}, PoseError, "radius: expected a number"),
    ({"seeds": 0, "fov": "wide"}, PoseError, "fov: expected a number"),
    ({"seeds": 0, "truncation": "x"}, UsageError, "truncation: expected a number"),
    ({"w": "abc"}, TensorError, "w: expected a float array"),
    ({"z": [["a"]]}, TensorError, "z: expected a float array"),
])
def test_api_values_are_typed_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        fake_generator().render(**kwargs)


def test_cli_negative_seed_is_one_line(export_dir, tmp_path, capsys):
    err = one_line_error(["--engine", export_dir, "--seed", -1, "-o", tmp_path / "o.png"], capsys, code=2)
    assert "--seed: expected an integer >= 0 and <= 4294967295, got '-1'" in err


def manifest_copy(export_dir: Path, d: Path) -> Path:
    d.mkdir()
    for n in ("manifest.json", "mapping.onnx", "student.onnx"):
        shutil.copyfile(export_dir / n, d / n)
    return d


@pytest.mark.parametrize("change, message", [
    (lambda m: "{not json", "unreadable manifest"),
    (lambda m: [m], "not a nerfgan export manifest"),
    (lambda m: {**m, "artifacts": {"file": "student.onnx"}}, "artifacts must be a non-empty list"),
    (lambda m: {**m, "artifacts": [5]}, r"artifacts\[0\] must be an object"),
    (lambda m: {**m, "checkpoint": "x"}, "checkpoint.sha256 must be 64"),
    (lambda m: {k: v for k, v in m.items() if k != "checkpoint"}, "checkpoint.sha256 must be 64"),
    (lambda m: {**m, "artifacts": [{**a, "file": 7} for a in m["artifacts"]]}, r"artifacts\[0\].file must be"),
    (lambda m: {**m, "artifacts": [{**a, "bytes": "many"} for a in m["artifacts"]]}, r"artifacts\[0\].bytes"),
    (lambda m: {**m, "artifacts": [{k: v for k, v in a.items() if k != "sha256"} for a in m["artifacts"]]},
     r"artifacts\[0\].sha256 must be 64"),
    (lambda m: {**m, "artifacts": [{k: v for k, v in a.items() if k != "kind"} for a in m["artifacts"]]},
     r"artifacts\[0\].kind must be"),
])
def test_malformed_manifests_are_one_line(export_dir, tmp_path, capsys, change, message):
    d = manifest_copy(export_dir, tmp_path / "e")
    new = change(json.loads((d / "manifest.json").read_text()))
    (d / "manifest.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(InputFileError, match=message):
        nr.load(d, device="cpu")
    for engine in (d, d / "student.onnx"):
        err = one_line_error(["--engine", engine, "--device", "cpu", "-o", tmp_path / "o.png"], capsys, code=1)
        assert "manifest.json" in err
    assert sorted(os.listdir(tmp_path)) == ["e"]


def with_metadata(export_dir: Path, d: Path, **props: str) -> Path:
    d.mkdir()
    model = onnx.load(str(export_dir / "student.onnx"))
    for p in model.metadata_props:
        if p.key in props:
            p.value = props[p.key]
    onnx.save(model, str(d / "student.onnx"))
    return d / "student.onnx"


def io_spec(change) -> str:
    spec = json.loads(S.student_spec(512, 64, 128).to_json())
    change(spec)
    return json.dumps(spec)


@pytest.mark.parametrize("props, message", [
    ({S.META_IO: "{bad json"}, "malformed input/output spec"),
    ({S.META_IO: "[]"}, "malformed input/output spec"),
    ({S.META_IO: io_spec(lambda s: s["outputs"][0].update(shape=["B", 3, "x", 128]))}, r"outputs\[0\].shape"),
    ({S.META_IO: io_spec(lambda s: s["inputs"][0].update(shape=5))}, r"inputs\[0\].shape"),
    ({S.META_IO: io_spec(lambda s: s["outputs"][1].update(name="raw"))}, "do not match its nerfgan.io metadata"),
    ({S.META_CAMERA: "{]"}, "nerfgan.camera incomplete or malformed"),
    ({S.META_CAMERA: json.dumps({"radius": 2.7, "pivot": [0, 0], "focal": 4.2})}, "pivot three numbers"),
])
def test_malformed_onnx_metadata_is_one_line(export_dir, tmp_path, capsys, props, message):
    path = with_metadata(export_dir, tmp_path / "m", **props)
    with pytest.raises(ConfigError, match=message):
        nr.load(path, device="cpu")
    err = one_line_error(["--engine", path, "--device", "cpu", "-o", tmp_path / "o.png"], capsys, code=1)
    assert "student.onnx" in err


def test_unwritable_outputs_fail_before_loading_or_rendering(export_dir, tmp_path, capsys, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the engine was loaded before the outputs were checked")

    monkeypatch.setattr(run_cli, "load", no_load)
    (tmp_path / "afile").write_text("keep")
    err = one_line_error(["--engine", export_dir, "--seed", 1, "-o", tmp_path / "afile" / "out.png"], capsys, 2)
    assert "afile is not a folder" in err
    err = one_line_error(["--engine", export_dir, "--seeds", "0-2", "-o", "/proc/x.png"], capsys, 1)
    assert "/proc/x-0.png: cannot write" in err
    assert (tmp_path / "afile").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["afile"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_fails_before_loading(export_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_cli, "load", lambda *a, **k: pytest.fail("loaded"))
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    err = one_line_error(["--engine", export_dir, "--seed", 1, "-o", ro / "o.png"], capsys, 1)
    assert "cannot write the output" in err


class Gate:
    """An ONNX Runtime session stand-in whose first run() waits until released (the rest pass through)."""

    def __init__(self, session) -> None:
        self.session, self.entered, self.release, self.calls = session, threading.Event(), threading.Event(), 0

    def run(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(10)
        return self.session.run(*args, **kwargs)


def test_close_while_other_threads_render(export_dir):
    """A thread waiting for the engine when close() runs gets UsageError 'closed', not an AttributeError; the call
    in flight finishes first."""
    g = nr.load(export_dir, device="cpu")
    w = g.style(seed=[1, 2])
    gate = Gate(g.student._session)
    g.student._session = gate
    results: dict[str, object] = {}

    def render(name: str) -> None:
        try:
            results[name] = g.render(w=w[:1])
        except BaseException as e:  # collected, checked below
            results[name] = e

    first = threading.Thread(target=render, args=("first",))
    first.start()
    assert gate.entered.wait(10)  # the first render is inside the engine
    second = threading.Thread(target=render, args=("second",))
    second.start()
    time.sleep(0.3)  # the second render waits for the engine's lock
    closer = threading.Thread(target=g.close)
    closer.start()
    time.sleep(0.3)
    gate.release.set()
    for t in (first, second, closer):
        t.join(20)
        assert not t.is_alive()
    assert isinstance(results["first"], np.ndarray) and results["first"].shape == (1, 128, 128, 3)
    assert isinstance(results["second"], UsageError) and "closed" in str(results["second"])
    with pytest.raises(UsageError, match="closed"):
        g.render(w=w)


# --- issue 22: run-time failures of every backend are typed errors (Backend.infer) ----------------------------
class _FailingSession:
    """Stands for an ONNX Runtime session whose run fails as ONNX Runtime fails (its own exception type)."""

    def __init__(self, real):
        self.real = real

    def run(self, names, feeds):
        from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

        raise RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
                               "running ConstantOfShape node. Failed to allocate memory for 34359738368 bytes\nmore")


def test_an_onnx_runtime_failure_is_one_engine_error_line(export_dir, tmp_path, capsys, monkeypatch):
    from nerfgan.errors import EngineError
    from nerfgan.runtime.backends import OnnxBackend

    with nr.load(export_dir, device="cpu") as g:
        g.student._session = _FailingSession(g.student._session)
        with pytest.raises(EngineError, match=r"student.onnx: onnxruntime-cpu-fp32 failed while running it "
                                              r"\(RuntimeException: .*ConstantOfShape.*34359738368 bytes\)$"):
            g.render(seeds=[1])
    real_init = OnnxBackend.__init__

    def failing_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if self.spec.kind == "student":
            self._session = _FailingSession(self._session)

    monkeypatch.setattr(OnnxBackend, "__init__", failing_init)
    err = one_line_error(["--engine", export_dir, "--device", "cpu", "-o", tmp_path / "o.png"], capsys, code=1)
    assert "ConstantOfShape" in err and not (tmp_path / "o.png").exists()


def test_a_w_so_large_that_the_image_is_nan_is_a_tensor_error(gen):
    """{"w": [3e38, ...]} is finite, but the student's output is NaN (an all-black image before): refused."""
    with pytest.raises(TensorError, match="output image has NaN or inf values"):
        gen.render(w=np.full((1, gen.w_dim), 3e38, np.float32))
    assert gen.render(w=gen.style(seed=1)).shape == (1, gen.img_resolution, gen.img_resolution, 3)  # still serving


def test_an_fps_below_what_a_gif_holds_is_one_line_before_rendering(export_dir, tmp_path, capsys):
    """Issue 22 item 7: Pillow's GIF writer overflowed below about 0.0015 fps, after rendering (a traceback)."""
    err = one_line_error(["--engine", export_dir, "--orbit", 2, "--fps", 0.001, "-o", tmp_path / "o.gif"], capsys, code=2)
    assert "--fps: expected a number >= 0.01 and <= 100, got '0.001'" in err and not (tmp_path / "o.gif").exists()
    from nerfgan.io import frame_ms

    assert frame_ms(0.01) == 100_000 and frame_ms(100) == 10
    with pytest.raises(UsageError, match="fps"):
        frame_ms(0.001, "fps")


def test_o_in_a_missing_folder_is_one_line_and_makes_no_folder(export_dir, tmp_path, capsys):
    """Issue 22: nerfgan-run -o nodir/x.png made the folder, though README says a missing folder is an error."""
    err = one_line_error(["--engine", export_dir, "--seed", 1, "-o", tmp_path / "nodir" / "x.png"], capsys, code=2)
    assert "nodir does not exist" in err and not (tmp_path / "nodir").exists()


def test_help_says_which_engine_files_run_native_code(capsys):
    code, out, _ = invoke(main, ["--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "A .pt2 package and a TensorRT plan are native code" in text
