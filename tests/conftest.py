"""Shared fixtures: the upstream reference file and the tiny teacher built from its weights."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE_NPZ = FIXTURES / "eg3d_tiny_sr128.npz"
UPSTREAM_PKL = FIXTURES / "eg3d_tiny_sr128.pkl"
OFFICIAL_CONFIGS = sorted((FIXTURES / "eg3d").glob("*.json"))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def invoke(entry, args, capsys):
    """Run a CLI entry point in-process -> (exit code, stdout, stderr); arguments are str()-ed."""
    with pytest.raises(SystemExit) as e:
        entry([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def wait_until(condition, what: str, hang_after_s: float = 60.0, poll_s: float = 0.01) -> None:
    """Poll ``condition()`` until it is true. ``hang_after_s`` only guards against a hang (the test then fails
    saying ``what`` never happened); no test measures how fast anything happens."""
    import time

    give_up = time.monotonic() + hang_after_s
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"{what}: not after {hang_after_s:g} s (hung)")
        time.sleep(poll_s)


def saturate_int8_scales(monkeypatch, factor: float = 0.1) -> None:
    """Make nerfgan-export's INT8 step write activation scales ``factor`` times the calibrated ones: a
    realistic bad quantization (what a wrong calibration range gives) that the INT8 gate must refuse."""
    import onnx
    from onnx import numpy_helper

    from nerfgan.calibrate import int8

    real = int8.quantize

    def saturating(fp32_path, out_path, inputs, *args, **kwargs):
        result = real(fp32_path, out_path, inputs, *args, **kwargs)
        model = onnx.load(str(out_path))
        scales = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
        for t in model.graph.initializer:
            if t.name in scales:
                a = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array((a * factor).astype(a.dtype), t.name))
        onnx.save(model, str(out_path))
        return result

    monkeypatch.setattr(int8, "quantize", saturating)


UNTRAINED_INT8_MIN_PSNR = 25.0
"""dB: the INT8 floor against FP32 for exports of `tiny_student_path`. That student's synthesis is untrained
(random): its good INT8 file is only ~28-30 dB from its FP32 graph, under the default 30 dB floor, which a
distilled student clears by ~12 dB (tests/export/test_int8_builtin_teacher.py)."""


def real_tensorrt_installed() -> bool:
    """True when a usable TensorRT is importable (here only its type stubs are, which do not count)."""
    import importlib

    try:
        return hasattr(importlib.import_module("tensorrt"), "Builder")
    except (ImportError, OSError):
        return False


@pytest.fixture(scope="session")
def reference():
    """The shared upstream fixture, parsed (config, weights, inputs, upstream outputs)."""
    from nerfgan.teacher.reference import read_reference

    return read_reference(REFERENCE_NPZ)


@pytest.fixture(scope="session")
def tiny_teacher(reference):
    """The fixture's EG3D (128px output, 64px rendering) in eval mode on CPU."""
    from nerfgan.teacher.checkpoint import build_teacher

    return build_teacher(reference.config, reference.state, source=str(REFERENCE_NPZ))


@pytest.fixture(scope="session")
def builtin_teacher():
    """The built-in `tiny` teacher shipped in the package (fitted to the scene family), eval mode, CPU.
    `tiny_teacher`'s architecture with a wider backbone, other weights: what `--teacher tiny` loads."""
    from nerfgan.teacher.checkpoint import load_teacher

    return load_teacher("tiny")


@pytest.fixture(scope="session")
def other_builtin_teacher(builtin_teacher):
    """The built-in teacher's config with other weights (its decoder's first layer perturbed): another teacher
    that the config checks cannot tell apart, only the weights digest. (The upstream fixture's teacher was
    that before the built-in teacher's backbone was widened; its config now differs.)"""
    import copy

    other = copy.deepcopy(builtin_teacher)
    with torch.no_grad():
        w = other.decoder.net[0].weight
        w.add_(0.05 * w.std() * torch.randn(w.shape, generator=torch.Generator().manual_seed(7)))
    return other.eval()


@pytest.fixture(scope="session")
def tiny_student_path(tmp_path_factory, builtin_teacher):
    """A tiny student file of the built-in teacher (its mapping and super-resolution, seeded random synthesis),
    recording that teacher's weights digest as the trainer does."""
    from nerfgan.student.checkpoint import save_student
    from nerfgan.student.config import student_preset
    from nerfgan.student.generator import StudentGenerator
    from nerfgan.teacher.checkpoint import weights_digest
    from nerfgan.teacher.identity import TEACHER_KEY

    torch.manual_seed(0)
    student = StudentGenerator.from_teacher(student_preset("tiny", builtin_teacher.config), builtin_teacher).eval()
    return save_student(student, tmp_path_factory.mktemp("student") / "student.safetensors",
                        extra={TEACHER_KEY: weights_digest(builtin_teacher)})


@pytest.fixture(scope="session")
def tiny_calib_path(tmp_path_factory, tiny_student_path):
    """A calibration file of 8 teacher renders for the tiny student (seed 0)."""
    from nerfgan.calibrate.calibset import make_calibration_set

    return make_calibration_set("tiny", tiny_student_path, 8, tmp_path_factory.mktemp("calib") / "calib.npz", seed=0)


@pytest.fixture(scope="session")
def tiny_export_dir(tmp_path_factory, tiny_student_path, tiny_calib_path):
    """nerfgan-export of the tiny student: mapping.onnx, student.onnx, student_int8.onnx, manifest.json.
    Shared by the runtime tests, which only read it."""
    from nerfgan.export.pipeline import ExportConfig, export

    out = tmp_path_factory.mktemp("export") / "export"
    export(tiny_student_path, out, ExportConfig(int8=True, calib=str(tiny_calib_path),
                                                int8_min_psnr_vs_fp32=UNTRAINED_INT8_MIN_PSNR), log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def export_dir(tiny_export_dir):
    return tiny_export_dir


@pytest.fixture(scope="module")
def gen(tiny_export_dir):
    """A Generator over the shared tiny export (ONNX Runtime, CPU)."""
    import nerfgan.runtime as nr

    with nr.load(tiny_export_dir, device="cpu") as g:
        yield g


@contextlib.contextmanager
def bounded(extra_bytes: int = 256 << 20, seconds: int = 60) -> Iterator[None]:
    """Cap this process's address space at its current size + ``extra_bytes`` and its time at ``seconds``."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra_bytes if hard == resource.RLIM_INFINITY else min(hard, size + extra_bytes)

    def timeout(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


class Reduce:
    """Pickles as func(*args): the way tests plant arbitrary REDUCE records in hostile pickles."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


LAST_MODULES = ("test_openvino_backend.py",)
"""Modules run after every other test. Once OpenVINO has compiled a model in a process, a SIGINT delivered to that
process during training crashed it (SIGSEGV) in tests/student/test_run_dir.py's signal tests (OpenVINO 2026.4,
torch 2.13; cause not found yet, see README "Backends"). OpenVINO's tests therefore run when no test that signals
the process is left."""


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: Path(str(item.fspath)).name in LAST_MODULES)  # stable: the order is kept otherwise


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many examples each fuzz test ran (tests/fuzzing.py counts them), for the CI log and release notes."""
    import sys

    fuzzing = sys.modules.get("fuzzing")
    if fuzzing is not None and fuzzing.CASES:
        terminalreporter.write_line(f"fuzz examples run (profile {fuzzing.PROFILE}): "
                                    + ", ".join(f"{k} {v}" for k, v in sorted(fuzzing.CASES.items()))
                                    + f"; {sum(fuzzing.CASES.values())} in all")
