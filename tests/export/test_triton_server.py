"""A real Triton server loads the repositories nerfgan writes and serves what nerfgan.runtime computes.

The server is the ``tritonserver`` (core + Python backend) inside the ``nvidia-pytriton`` wheel (the dev
extra); without it the module is skipped. One server for the module, on loopback ports chosen at run
time, with ``--model-control-mode=none`` (it loads everything at start-up), stopped by the fixture.
It serves two repositories:

* ``python/``: what ``nerfgan-export --triton REPO --triton-backend python`` (run in-process) writes for the
  tiny student (both composing models in the Python backend running nerfgan.runtime), exactly as written;
* ``ort/``: the ``onnxruntime`` repository of the same files (model names prefixed ``ort_`` so the two can be
  served side by side; a 50 ms batching window so concurrent requests meet reliably) with its composing
  model folders swapped for Python-backend ones; its ensemble file is left as written, so it loading and
  serving shows the ONNX Runtime variant's ensemble is right too.

The export is FP32 only (no INT8): only mapping.onnx and student.onnx are served here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nerfgan import camera
from nerfgan.export.triton import TritonNames, write_triton_repository
from nerfgan.runtime.backends import OnnxBackend

START_TIMEOUT_S = 90  # the server loads 6 models (4 Python-backend processes) on 2 cores
REQUEST_TIMEOUT_S = 30
ATOL = 1e-4
ORT_NAMES = TritonNames(mapping="ort_nerfgan_mapping", student="ort_nerfgan_student", ensemble="ort_nerfgan")
QUEUE_DELAY_US = 50_000  # long enough that concurrent requests reliably meet in one batch on a busy machine


def _triton_wheel() -> tuple[Path, Path, Path, Path]:
    """(tritonserver binary, backends/python folder, this Python's backend stub, shared libraries folder) from the
    installed nvidia-pytriton package; skips the module when it is not installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        pytest.skip("the nvidia-pytriton wheel (tritonserver inside) is not installed: pip install -e '.[dev]'",
                    allow_module_level=True)
    package = Path(spec.origin).parent
    root = package / "tritonserver"
    binary = root / "bin" / "tritonserver"
    python_backend = root / "backends" / "python"
    stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
        "triton_python_backend_stub"
    libs = package.parent / "nvidia_pytriton.libs"
    missing = [str(p) for p in (binary, python_backend, stub, libs) if not p.exists()]
    if missing:
        pytest.skip(f"the nvidia-pytriton wheel lacks {', '.join(missing)}", allow_module_level=True)
    return binary, python_backend, stub, libs


BINARY, PYTHON_BACKEND, STUB, LIBS = _triton_wheel()
if int(np.__version__.split(".")[0]) >= 2:  # nvidia-pytriton pins numpy < 2; something upgraded it since
    pytest.skip(f"numpy {np.__version__}: Triton 2.51's Python backend answers with empty tensors under numpy 2 "
                "(pip install 'numpy<2', as the dev extra's nvidia-pytriton requires)", allow_module_level=True)
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
triton_utils = pytest.importorskip("tritonclient.utils")


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    http: str  # host:port
    grpc: str
    metrics: str  # URL of the metrics endpoint
    log: Path
    started_s: float  # seconds from launch to ready

    def metric(self, name: str, model: str) -> float:
        with urllib.request.urlopen(self.metrics, timeout=REQUEST_TIMEOUT_S) as r:
            text = r.read().decode()
        m = re.search(rf'^{name}{{model="{re.escape(model)}",version="1"}} (\S+)$', text, re.MULTILINE)
        assert m, f"{name} for {model} not in the metrics:\n{text[:2000]}"
        return float(m.group(1))


def _python_repo(root: Path, export: Path, names: TritonNames) -> Path:
    return write_triton_repository(root, mapping_file=export / "mapping.onnx", student_file=export / "student.onnx",
                                   mapping_spec=_spec(export, "mapping"), student_spec=_spec(export, "student"),
                                   student_backend="python", max_batch_size=8, instance_kind="KIND_CPU",
                                   max_queue_delay_us=QUEUE_DELAY_US, names=names)


def _spec(export: Path, kind: str) -> Any:
    with OnnxBackend(export / f"{kind}.onnx") as b:
        return b.spec


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_student_path: Path) -> tuple[Path, Path]:
    """(export folder, Python-backend repository) written by one nerfgan-export run of the tiny student."""
    from nerfgan.cli import export_cli

    root = tmp_path_factory.mktemp("triton")
    export_cli.main(["--ckpt", str(tiny_student_path), "-o", str(root / "export"), "--triton", str(root / "python"),
                     "--triton-backend", "python", "--batch", "1,1,8"], standalone_mode=False)
    return root / "export", root / "python"


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, tiny_export: tuple[Path, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("triton")
    export, python = tiny_export
    ort = write_triton_repository(root / "ort", mapping_file=export / "mapping.onnx",
                                  student_file=export / "student.onnx", mapping_spec=_spec(export, "mapping"),
                                  student_spec=_spec(export, "student"), student_backend="onnxruntime",
                                  max_batch_size=8, instance_kind="KIND_CPU", max_queue_delay_us=QUEUE_DELAY_US,
                                  names=ORT_NAMES)
    written = root / "ort_ensemble.pbtxt"  # the ensemble file as written, to show it is served untouched
    shutil.copyfile(ort / ORT_NAMES.ensemble / "config.pbtxt", written)
    swap = _python_repo(root / "swap", export, ORT_NAMES)
    for model in (ORT_NAMES.mapping, ORT_NAMES.student):  # composing models only; the ensemble stays as written
        assert 'platform: "onnxruntime_onnx"' in (ort / model / "config.pbtxt").read_text()
        shutil.rmtree(ort / model)
        shutil.move(str(swap / model), str(ort / model))
    return {"python": python, "ort": ort, "ort_ensemble": written}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, repos: dict[str, Path]) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tritonserver")
    backends = root / "backends"
    shutil.copytree(PYTHON_BACKEND, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(STUB, backends / "python" / STUB.name)
    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               LD_LIBRARY_PATH=f"{LIBS}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}")
    log = root / "tritonserver.log"
    cmd = [str(BINARY), f"--model-repository={repos['python']}", f"--model-repository={repos['ort']}",
           "--model-control-mode=none", f"--backend-directory={backends}", "--strict-readiness=true",
           "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
           "--allow-metrics=true", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
           "--metrics-address=127.0.0.1", f"--metrics-port={metrics}", "--exit-timeout-secs=10"]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        ready = f"http://127.0.0.1:{http}/v2/health/ready"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"tritonserver exited ({proc.returncode}) before it was ready:\n{_tail(log)}")
            if time.monotonic() - t0 > START_TIMEOUT_S:
                pytest.fail(f"tritonserver not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(ready, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        yield Server(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics", log,
                     time.monotonic() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _tail(log: Path, n: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture(scope="module")
def reference(tiny_export: tuple[Path, Path]) -> Iterator[Any]:
    """feeds -> {image, image_raw} computed by nerfgan.runtime on the export's mapping.onnx and student.onnx."""
    export = tiny_export[0]
    with OnnxBackend(export / "mapping.onnx") as mapping, OnnxBackend(export / "student.onnx") as student:
        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            w = mapping.infer({k: feeds[k] for k in ("z", "c_cond")} | {"psi": feeds["psi"].reshape(-1)})["w"]
            return student.infer({"w": w, "c": feeds["c"]})
        yield run


def _feeds(batch: int, seed: int, z_dim: int) -> dict[str, np.ndarray]:
    """Client feeds (psi as (B, 1), as the ensemble declares it) for ``batch`` different samples."""
    rng = np.random.default_rng(seed)
    return {
        "z": rng.standard_normal((batch, z_dim)).astype(np.float32),
        "c_cond": np.repeat(camera.frontal()[None], batch, axis=0),
        "psi": rng.uniform(0.5, 1.0, (batch, 1)).astype(np.float32),
        "c": camera.pose(rng.uniform(-30, 30, batch), rng.uniform(-10, 10, batch)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def z_dim(tiny_export: tuple[Path, Path]) -> int:
    return int(_spec(tiny_export[0], "mapping").input("z").shape[1])


def _infer(module: Any, url: str, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    kw = {"network_timeout": REQUEST_TIMEOUT_S, "connection_timeout": REQUEST_TIMEOUT_S} if module is httpclient else {}
    client = module.InferenceServerClient(url, **kw)
    try:
        inputs = []
        for k, v in feeds.items():
            i = module.InferInput(k, list(v.shape), triton_utils.np_to_triton_dtype(v.dtype))
            i.set_data_from_numpy(v)
            inputs.append(i)
        outputs = [module.InferRequestedOutput(n) for n in ("image", "image_raw")]
        if module is grpcclient:
            result = client.infer(model, inputs, outputs=outputs, client_timeout=REQUEST_TIMEOUT_S)
        else:
            result = client.infer(model, inputs, outputs=outputs)
        return {n: result.as_numpy(n) for n in ("image", "image_raw")}
    finally:
        client.close()


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in ("image", "image_raw"):
        assert got[name].shape == want[name].shape, name
        assert float(np.max(np.abs(got[name] - want[name]))) <= ATOL, name


# --- tests ------------------------------------------------------------------------------------------------------------


def test_every_model_loads(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http)
    try:
        for model in ("nerfgan", "nerfgan_mapping", "nerfgan_student", *vars(ORT_NAMES).values()):
            assert client.is_model_ready(model), f"{model}:\n{_tail(server.log)}"
    finally:
        client.close()
    print(f"tritonserver ready after {server.started_s:.1f} s")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_images_equal_the_runtime(server: Server, reference: Any, z_dim: int, protocol: str) -> None:
    feeds = _feeds(3, seed=7, z_dim=z_dim)
    module, url = (httpclient, server.http) if protocol == "http" else (grpcclient, server.grpc)
    _assert_close(_infer(module, url, "nerfgan", feeds), reference(feeds))


def test_readme_client_example_works_as_written(server: Server, repos: dict[str, Path], reference: Any) -> None:
    text = (repos["python"] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert code is not None and '"localhost:8000"' in code.group(1)
    scope: dict[str, Any] = {}
    exec(compile(code.group(1).replace('"localhost:8000"', repr(server.http)), "README.md", "exec"), scope)
    _assert_close({"image": scope["image"], "image_raw": scope["result"].as_numpy("image_raw")},
                  reference(scope["feeds"]))


def test_concurrent_requests_are_batched(server: Server, reference: Any, z_dim: int) -> None:
    n = 8
    model = ORT_NAMES.student  # (the repository with the 50 ms batching window)
    before = {k: server.metric(k, model) for k in ("nv_inference_request_success", "nv_inference_count",
                                                               "nv_inference_exec_count")}
    feeds = [_feeds(1, seed=100 + i, z_dim=z_dim) for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda f: _infer(httpclient, server.http, ORT_NAMES.ensemble, f), feeds, timeout=60))
    for got, f in zip(results, feeds):  # every request got its own sample back from the merged batch
        _assert_close(got, reference(f))
    delta = {k: server.metric(k, model) - v for k, v in before.items()}
    assert delta["nv_inference_request_success"] == n
    assert delta["nv_inference_count"] == n  # samples
    assert 1 <= delta["nv_inference_exec_count"] < n, delta  # fewer model executions than requests: batched
    print(f"{n} concurrent requests: {delta}")


def test_onnxruntime_ensemble_loads_with_python_composing_models(server: Server, repos: dict[str, Path],
                                                                 reference: Any, z_dim: int) -> None:
    served = repos["ort"] / ORT_NAMES.ensemble / "config.pbtxt"
    assert served.read_bytes() == repos["ort_ensemble"].read_bytes()  # the ensemble file as the exporter wrote it
    assert 'backend: "python"' in (repos["ort"] / ORT_NAMES.student / "config.pbtxt").read_text()
    feeds = _feeds(2, seed=11, z_dim=z_dim)
    _assert_close(_infer(grpcclient, server.grpc, ORT_NAMES.ensemble, feeds), reference(feeds))
