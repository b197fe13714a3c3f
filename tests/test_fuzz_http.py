"""Property-based tests of nerfgan serve's HTTP API from its own OpenAPI schema (issue 22), with schemathesis: cases
that fit the schema and cases that break it (negative mode), sent to the app served by uvicorn on a loopback port. Every answer is
below 500, and every answer that is not a 200 is JSON {"error": one line, "field": ...}. The engine is the tiny
export under ONNX Runtime; the server's limits are small so that a case renders at most a few images.
Budgets: tests/fuzzing.py (NERFGAN_FUZZ=ci|release).
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'nerfgan[serve]'")
schemathesis = pytest.importorskip("schemathesis", reason="needs the dev extra (schemathesis)")

from fuzzing import budget, count  # noqa: E402
from nerfgan.serve import Limits, create_app  # noqa: E402

FUZZ_LIMITS = Limits(max_poses=4, max_frames=3, max_queue=8)


OPERATIONS = [("POST", "/v1/render"), ("POST", "/v1/style"), ("GET", "/v1/orbit"), ("GET", "/v1/info"),
              ("GET", "/healthz")]


@pytest.fixture(scope="module")
def api_schema(gen):
    """The app's schema, its calls sent to the app served by uvicorn on a loopback port (one server for the module:
    an ASGI call per case would run the app's lifespan, whose end closes its batcher, each time)."""
    from nerfgan.serve.server import running

    app = create_app(gen, FUZZ_LIMITS, allowed_hosts=["127.0.0.1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.openapi.from_dict(app.openapi())
    with running(app) as url:
        schema.config.update(base_url=url)
        yield schema


def test_every_api_operation_is_fuzzed(api_schema):
    listed = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert {op for op in listed if op[1].startswith("/v1/")} <= set(OPERATIONS), listed


def check_answer(case, response) -> None:
    status = response.status_code
    assert status < 500, f"{case.method} {case.path}: {status} {response.text[:300]}"
    if status != 200:
        ctype = response.headers.get("content-type") or [""]  # (schemathesis gives each header as a list)
        assert (ctype[0] if isinstance(ctype, list) else ctype).startswith("application/json"), response.text[:200]
        body = response.json()
        assert set(body) == {"error", "field"}, body
        assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"].strip(), body
        assert body["field"] is None or isinstance(body["field"], str)


CASES = [(m, p, mode) for m, p in OPERATIONS for mode in ("positive", "negative") if p.startswith("/v1/")
         and (mode == "positive" or p != "/v1/info")]  # (an operation without inputs has no negative case)


@pytest.mark.parametrize("method, path, mode", CASES + [("GET", "/healthz", "positive")])
def test_fuzz_http_api(api_schema, method, path, mode):
    """Cases that fit the schema (positive) and cases that break it (negative) for one operation."""
    from hypothesis import given
    from schemathesis.generation import GenerationMode

    strategy = api_schema[path][method].as_strategy(GenerationMode(mode))

    @budget(100 if path in ("/v1/render", "/v1/orbit", "/v1/style") else 10)
    @given(case=strategy)
    def run(case):
        count(f"http {mode} {method} {path}")
        check_answer(case, case.call())

    run()
