"""nerfgan.serve's HTTP API through FastAPI's TestClient: every endpoint, bad input, equality with nerfgan.runtime,
micro-batching and the full-queue answer."""

from __future__ import annotations

import io
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import invoke, wait_until

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'nerfgan[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
with warnings.catch_warnings():  # starlette >= 1.x suggests httpx2 for its TestClient (a UserWarning); httpx works
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

import nerfgan.runtime as nr  # noqa: E402
from nerfgan.errors import MissingDependencyError, TensorError  # noqa: E402
from nerfgan.serve import Limits, create_app  # noqa: E402
from nerfgan.serve.app import _nerfgan_error  # noqa: E402
from nerfgan.serve.encode import encode_gif  # noqa: E402


def png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))


@pytest.fixture(scope="module")
def client(gen):
    with TestClient(create_app(gen)) as c:
        yield c


def count_engine_calls(monkeypatch, g, gate: threading.Event | None = None, entered: threading.Event | None = None):
    """Wrap g.student.infer: returns the list of batch sizes it was called with; ``gate`` blocks each call."""
    calls: list[int] = []
    real = g.student.infer

    def infer(feeds):
        calls.append(len(feeds["w"]))
        if entered is not None:
            entered.set()
        if gate is not None:
            assert gate.wait(60), "the test never opened the gate"
        return real(feeds)

    monkeypatch.setattr(g.student, "infer", infer)
    return calls


# --- endpoints ---------------------------------------------------------------------------------------------------
def test_healthz_and_info(client, gen):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/info").json()
    assert info["resolution"] == gen.img_resolution == 128
    assert (info["backend"], info["precision"], info["w_dim"], info["seeds"]) == (gen.backend, "fp32", gen.w_dim, True)
    assert info["pose_limits"]["yaw"] == [-180, 180] and info["pose_limits"]["pitch"] == [-90, 90]
    assert info["limits"]["max_batch"] == Limits().max_batch
    checks = info["validation"]["student.onnx"]["validation"]  # the manifest's figures of the file in use
    assert checks and all(c["ok"] for c in checks) and {c["output"] for c in checks} == {"image", "image_raw"}
    assert "mapping.onnx" in info["validation"]


def test_viewer_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="viewer.js"' in page.text and "http" not in page.text.split("<body>")[1]  # no CDN
    js = client.get("/viewer.js")
    assert js.status_code == 200 and "v1/render" in js.text and js.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("body, kwargs", [
    ({"seed": 7, "yaw": 20, "pitch": -5}, dict(seeds=7, yaw=20, pitch=-5)),
    ({"seed": 3}, dict(seeds=3)),
    ({"seed": 11, "yaw": -35.5, "pitch": 12, "radius": 3.1, "fov": 25, "truncation": 0.4},
     dict(seeds=11, yaw=-35.5, pitch=12, radius=3.1, fov=25, truncation=0.4)),
])
def test_render_png_equals_the_runtime(client, gen, body, kwargs):
    r = client.post("/v1/render", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(png(r.content), gen.render(**kwargs)[0])


def test_render_from_w_and_style_equal_the_runtime(client, gen):
    r = client.post("/v1/style", json={"seed": 5, "truncation": 0.6})
    assert r.status_code == 200 and r.json()["seed"] == 5
    w = np.asarray(r.json()["w"], np.float32)
    assert np.array_equal(w, gen.style(seed=5, truncation=0.6)[0])  # float32 -> JSON -> float32 is exact
    r = client.post("/v1/render", json={"w": w.tolist(), "yaw": 10, "pitch": 4})
    assert np.array_equal(png(r.content), gen.render(w=w, yaw=10, pitch=4)[0])


def test_several_poses_give_a_strip_or_a_batch(client, gen):
    want = gen.render(seeds=2, yaw=[-20, 0, 20], pitch=5)
    r = client.post("/v1/render", json={"seed": 2, "yaw": [-20, 0, 20], "pitch": 5})
    assert r.headers["x-images"] == "3" and np.array_equal(png(r.content), np.concatenate(list(want), axis=1))
    r = client.post("/v1/render", json={"seed": 2, "yaw": [-20, 0, 20], "pitch": [5, 5, 5], "format": "npy"})
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert r.headers["content-type"] == "application/x-npy" and got.dtype == np.uint8 and np.array_equal(got, want)
    r = client.post("/v1/render", json={"seed": 2, "yaw": [0, 20], "format": "jpeg"})
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG" and img.size == (256, 128)


def test_orbit_gif_is_what_nerfgan_run_writes(client, tiny_export_dir, tmp_path, capsys):
    from nerfgan.cli import run_main

    code, _, err = invoke(run_main, ["--engine", tiny_export_dir, "--seed", 7, "--orbit", 8, "-o", tmp_path / "o.gif"],
                          capsys)
    assert code == 0, err
    r = client.get("/v1/orbit?seed=7&frames=8")
    assert r.status_code == 200 and r.content == (tmp_path / "o.gif").read_bytes()


def test_orbit_frames_equal_the_runtime(client, gen):
    from nerfgan import camera

    r = client.get("/v1/orbit", params={"seed": 7, "frames": 6})
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.headers["x-images"] == "6"
    off = camera.orbit(6, 20.0, 14.0, pitch_offset_deg=0.0).astype(np.float64)
    frames = gen.render(seeds=7, yaw=np.round(off[:, 0], 4), pitch=np.round(off[:, 1], 4))
    assert r.content == encode_gif(frames, 24.0)
    assert Image.open(io.BytesIO(r.content)).n_frames == 6


# --- bad input: 4xx with the field named, and the server keeps serving --------------------------------------------
BAD_BODIES = [
    ({"seed": 7, "yaw": 181}, "yaw"),
    ({"seed": 7, "yaw": [0, -500]}, "yaw"),
    ({"seed": 7, "pitch": 90}, "pitch"),
    ({"seed": 7, "pitch": -95}, "pitch"),
    ({"seed": 7, "radius": 0}, "radius"),
    ({"seed": 7, "radius": 1e9}, "radius"),
    ({"seed": 7, "fov": 0.5}, "fov"),
    ({"seed": 7, "truncation": 1.5}, "truncation"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"seed": "7"}, "seed"),
    ({"seed": 7.0}, "seed"),
    ({"seed": True}, "seed"),
    ({"seed": 7, "yaw": "left"}, "yaw"),
    ({"seed": 7, "yaw": [[1, 2]]}, "yaw"),
    ({"seed": 7, "yaw": []}, "yaw"),
    ({"seed": 7, "format": "gif"}, "format"),
    ({"seed": 7, "colour": "red"}, "colour"),
    ({}, "seed"),
    ({"seed": 7, "w": [0.0] * 512}, "seed"),
    ({"w": [0.0] * 3}, "w"),
    ({"w": [0.0] * 2000}, "w"),
    ({"seed": 7, "yaw": [0, 1, 2], "pitch": [0, 1]}, "pitch"),
    ({"seed": 7, "yaw": list(range(65))}, "yaw"),
]


@pytest.mark.parametrize("body, field", BAD_BODIES, ids=[str(i) for i in range(len(BAD_BODIES))])
def test_bad_render_bodies_name_their_field(client, body, field):
    r = client.post("/v1/render", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["error"].startswith(field)
    assert "\n" not in r.json()["error"]


@pytest.mark.parametrize("raw, field", [(b'{"seed": 7, "yaw": NaN}', "yaw"),
                                        (b'{"seed": 7, "pitch": Infinity}', "pitch"),
                                        (b'{"seed": 7, "yaw": -Infinity}', "yaw")])
def test_non_finite_numbers_are_refused(client, raw, field):
    r = client.post("/v1/render", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == field and "finite" in r.json()["error"]


def test_malformed_bodies(client):
    json_type = {"content-type": "application/json"}
    r = client.post("/v1/render", content=b'{"seed": 7', headers=json_type)
    assert r.status_code == 400 and r.json()["field"] == "body"
    r = client.post("/v1/render", content=b"[7]", headers=json_type)
    assert r.status_code == 422 and "JSON object" in r.json()["error"]
    r = client.post("/v1/render", content=b'{"seed": 7}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["field"] == "content-type"
    r = client.post("/v1/render", content=b'{"seed": 7, "w": [' + b"0.0," * 20000 + b"0.0]}", headers=json_type)
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks():  # no content-length: the limit holds while streaming
        yield b'{"seed": 7, "pad": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    r = client.post("/v1/render", content=chunks(), headers=json_type)
    assert r.status_code == 413
    r = client.post("/v1/render", content=b"[" * 100_000 + b"]" * 100_000, headers=json_type)
    assert r.status_code == 413
    assert client.post("/v1/style", content=b'{"seed": 1, "z": 3}', headers=json_type).json()["field"] == "z"


@pytest.mark.parametrize("query, field", [
    ("seed=7&frames=0", "frames"), ("seed=7&frames=100000", "frames"), ("seed=-1", "seed"), ("seed=abc", "seed"),
    ("frames=3", "seed"), ("seed=7&frames=2&speed=3", "speed"), ("seed=7&seed=8", "seed"),
    ("seed=7&pitch_range=90", "pitch_range"), ("seed=7&yaw_range=200", "yaw_range"), ("seed=7&fps=0", "fps"),
    ("seed=7&truncation=nan", "truncation"),
    ("seed=7&frames=2&fps=0.001", "fps"),  # issue 22: below what a GIF's 16-bit frame time holds (was a 500)
])
def test_bad_orbit_queries(client, query, field):
    r = client.get(f"/v1/orbit?{query}")
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/v2/render").json()["error"].startswith("GET /v2/render")
    r = client.get("/v1/render")
    assert r.status_code == 405 and "error" in r.json()


def test_the_server_keeps_serving_after_bad_requests(client, gen):
    for body, _ in BAD_BODIES:
        client.post("/v1/render", json=body)
    r = client.post("/v1/render", json={"seed": 1, "yaw": 5})
    assert r.status_code == 200 and np.array_equal(png(r.content), gen.render(seeds=1, yaw=5)[0])
    assert client.get("/healthz").json()["queued"] == 0


def test_nerfgan_errors_are_4xx_with_their_message(tiny_export_dir, tmp_path):
    shutil.copy(tiny_export_dir / "student.onnx", tmp_path / "student.onnx")  # no mapping, no manifest beside it
    with nr.load(tmp_path / "student.onnx", device="cpu") as g, TestClient(create_app(g)) as c:
        assert c.get("/v1/info").json()["validation"] is None and c.get("/v1/info").json()["seeds"] is False
        r = c.post("/v1/render", json={"seed": 7})
        assert r.status_code == 422 and "pass w instead" in r.json()["error"]
        assert c.post("/v1/render", json={"w": [0.1] * g.w_dim}).status_code == 200
    e = _nerfgan_error(TensorError("w: expected shape (B, 512), got (3,)"), ("seed", "w"))
    assert (e.status, e.field) == (422, "w")


# --- batching and back-pressure ----------------------------------------------------------------------------------
def test_concurrent_requests_share_engine_calls(gen, monkeypatch):
    calls = count_engine_calls(monkeypatch, gen)
    bodies = [{"seed": s, "yaw": 5.0 * s, "pitch": -2.0 * s} for s in range(6)]
    with TestClient(create_app(gen, Limits(max_wait_ms=400))) as c, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda b: c.post("/v1/render", json=b), bodies))
        stats = c.get("/healthz").json()
    assert all(a.status_code == 200 for a in answers)
    assert len(calls) < len(bodies) and sum(calls) == len(bodies) and stats["batches"] < len(bodies), calls
    for b, a in zip(bodies, answers):
        assert np.array_equal(png(a.content), gen.render(seeds=b["seed"], yaw=b["yaw"], pitch=b["pitch"])[0])


def test_a_full_queue_answers_503_and_the_loop_stays_free(gen, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    count_engine_calls(monkeypatch, gen, gate, entered)
    with TestClient(create_app(gen, Limits(max_batch=1, max_wait_ms=0, max_queue=1))) as c, \
            ThreadPoolExecutor(2) as pool:
        try:
            first = pool.submit(c.post, "/v1/render", json={"seed": 1})
            assert entered.wait(30)  # the worker is inside the engine call
            second = pool.submit(c.post, "/v1/render", json={"seed": 2})
            wait_until(lambda: c.get("/healthz").json()["queued"] >= 1,  # the loop answers while the engine is busy
                       "the second request queued", hang_after_s=30)
            r = c.post("/v1/render", json={"seed": 3})
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue is full" in r.json()["error"]
            assert c.get("/healthz").json()["refused"] == 1
        finally:
            gate.set()
        assert first.result(60).status_code == 200 and second.result(60).status_code == 200
        assert c.post("/v1/render", json={"seed": 3}).status_code == 200


def test_create_app_without_the_extra_says_what_to_install(gen, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'nerfgan\[serve\]'"):
        create_app(gen)


def test_an_engine_failure_is_a_json_500_and_the_server_recovers(gen, monkeypatch):
    real = gen.student.infer
    monkeypatch.setattr(gen.student, "infer", lambda feeds: (_ for _ in ()).throw(RuntimeError("device lost")))
    with TestClient(create_app(gen)) as c:
        r = c.post("/v1/render", json={"seed": 1})
        assert r.status_code == 500 and "RuntimeError" in r.json()["error"]
        monkeypatch.setattr(gen.student, "infer", real)
        assert c.post("/v1/render", json={"seed": 1}).status_code == 200


def test_the_app_mounts_under_a_prefix(gen):
    from fastapi import FastAPI

    parent = FastAPI()
    parent.mount("/nerfgan", create_app(gen))
    with TestClient(parent) as c:
        page = c.get("/nerfgan/")
        assert page.status_code == 200 and 'src="viewer.js"' in page.text  # relative: /nerfgan/viewer.js
        assert c.get("/nerfgan/viewer.js").status_code == 200 and c.get("/nerfgan/v1/info").json()["resolution"] == 128
        r = c.post("/nerfgan/v1/render", json={"seed": 7, "yaw": 20, "pitch": -5})
        assert np.array_equal(png(r.content), gen.render(seeds=7, yaw=20, pitch=-5)[0])


# --- issue 22 -----------------------------------------------------------------------------------------------------
def test_the_schema_is_not_served_with_the_docs_off_but_documents_the_bodies(client):
    r = client.get("/openapi.json")
    assert r.status_code == 404 and r.json()["error"].startswith("GET /openapi.json")
    schema = client.app.openapi()
    body = schema["paths"]["/v1/render"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"seed", "w", "yaw", "pitch", "format"} <= set(body["properties"])
    assert "fps" in {p["name"] for p in schema["paths"]["/v1/orbit"]["get"]["parameters"]}


def test_a_host_header_of_another_name_is_refused(gen):
    from nerfgan.serve.settings import ServeSettings

    hosts = ServeSettings("e", host="127.0.0.1").allowed_hosts
    assert hosts is not None and "localhost" in hosts and ServeSettings("e", host="0.0.0.0").allowed_hosts is None
    with TestClient(create_app(gen, allowed_hosts=hosts), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200
        r = c.post("/v1/render", json={"seed": 1}, headers={"host": "attacker.example:8000"})
        assert r.status_code == 400 and r.json()["field"] == "host" and "attacker.example" in r.json()["error"]


def test_a_request_whose_client_hangs_up_is_never_rendered(gen, monkeypatch):
    """10 requests whose clients hang up while they wait are taken out of the queue: the engine runs only the one
    that was already running (issue 22 item 5: they all ran before, and held the queue while others got 503)."""
    import json
    import socket
    import urllib.request

    from nerfgan.serve.server import running

    gate, entered = threading.Event(), threading.Event()
    calls = count_engine_calls(monkeypatch, gen, gate, entered)
    app = create_app(gen, Limits(max_batch=1, max_wait_ms=0, max_queue=16))
    with running(app) as url, ThreadPoolExecutor(1) as pool:
        host, port = url.removeprefix("http://").rsplit(":", 1)

        def post(seed: int) -> int:
            req = urllib.request.Request(f"{url}/v1/render", data=json.dumps({"seed": seed}).encode(),
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status

        def stats() -> dict:
            with urllib.request.urlopen(f"{url}/healthz", timeout=30) as r:
                return json.loads(r.read())

        try:
            first = pool.submit(post, 1)
            assert entered.wait(30)
            socks = []
            for seed in range(2, 12):
                body = json.dumps({"seed": seed, "yaw": [0.0] * 8}).encode()
                s = socket.create_connection((host, int(port)), timeout=30)
                s.sendall(b"POST /v1/render HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
                socks.append(s)
            wait_until(lambda: stats()["queued"] == 10, "ten requests queued", hang_after_s=30)
            for s in socks:
                s.close()
            wait_until(lambda: stats()["queued"] == 0, "the abandoned requests left the queue", hang_after_s=30)
            assert stats()["abandoned"] == 10
        finally:
            gate.set()
        assert first.result(60) == 200
        assert calls == [1]  # the engine ran the first request only


def test_the_same_app_serves_again_after_its_lifespan_ended(gen):
    """Found by the HTTP fuzzing: the app's shutdown closed its batcher for good, so an app started a second time
    (a second TestClient, an ASGI transport per call) answered every job 503 'shutting down'."""
    app = create_app(gen)
    for _ in range(2):
        with TestClient(app) as c:
            assert c.post("/v1/style", json={"seed": 1}).status_code == 200
