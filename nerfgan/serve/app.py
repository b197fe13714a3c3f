"""The ASGI app of `nerfgan serve` (FastAPI): the viewer at /, a JSON API under /v1, one shared Generator.

    import nerfgan.runtime as nr
    from nerfgan.serve import create_app
    app = create_app(nr.load("qs/export"))          # mount it in your own ASGI server, or: uvicorn.run(app)

Endpoints (limits: nerfgan.serve.settings.Limits):

* ``GET /healthz`` -> {"status": "ok", ...counters}; ``GET /v1/info`` -> resolution, backend, precision, camera,
  pose limits, server limits, and the export manifest's validation figures of the files in use (None otherwise).
* ``POST /v1/render`` {seed | w, yaw, pitch, radius?, fov?, truncation?, format: png|jpeg|npy} -> the image; several
  poses give a PNG/JPEG strip (left to right) or an npy batch (N, H, W, 3) uint8.
* ``GET /v1/orbit?seed=&frames=[&truncation=&yaw_range=&pitch_range=&fps=]`` -> a looping GIF.
* ``POST /v1/style`` {seed, truncation?, fov?} -> {"seed", "truncation", "w": [w_dim floats]}.

Every engine job goes through one MicroBatcher (nerfgan.serve.batching): concurrent requests share engine calls in
its worker thread; image encoding runs in the thread pool; the event loop only awaits. Errors are JSON
{"error": one line, "field": the request field or null}: 400 malformed JSON, 404/405, 413 body too large, 415 not
JSON, 422 a field's value (and nerfgan's UsageError/TensorError/PoseError), 503 queue full (with Retry-After).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nerfgan import camera
from nerfgan.errors import EngineError, NerfganError
from nerfgan.runtime import Generator
from nerfgan.runtime.spec import MANIFEST, read_export
from nerfgan.serve.batching import BatcherClosed, MicroBatcher, QueueFull
from nerfgan.serve.encode import MEDIA_TYPES, encode_gif, encode_images
from nerfgan.serve.jobs import Job, Result, run_jobs
from nerfgan.serve.schemas import OrbitQuery, RenderRequest, StyleRequest
from nerfgan.serve.settings import FOV_RANGE, PITCH_LIMIT, RADIUS_MAX, YAW_LIMIT, Limits

M = TypeVar("M", bound=BaseModel)
STATIC = resources.files("nerfgan.serve") / "static"
log = logging.getLogger("nerfgan.serve")


class ApiError(Exception):
    """An answer other than 200: HTTP ``status``, a one-line ``message``, the request ``field`` at fault (or None)."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


def _error(status: int, message: str, field: str | None = None,
           headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _validation_error(e: ValidationError) -> ApiError:
    """The first problem pydantic found, as 'yaw[1]: Input should be ... (got 200)', naming its field."""
    first = e.errors()[0]
    loc = list(first.get("loc", ()))
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))
    got = first.get("input")
    shown = "" if first.get("type") == "missing" or isinstance(got, (dict, list)) else f" (got {repr(got)[:60]})"
    return ApiError(422, f"{path or 'body'}: {first.get('msg', 'invalid')}{shown}", str(loc[0]) if loc else None)


def _nerfgan_error(e: NerfganError, fields: tuple[str, ...]) -> ApiError:
    """nerfgan's own one-line message; its field when the message starts with one of the request's fields."""
    m = re.match(r"\s*(\w+)\s*:", str(e))
    return ApiError(422, str(e).splitlines()[0] if str(e) else type(e).__name__,
                    m.group(1) if m and m.group(1) in fields else None)


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 415 unless application/json, 413 beyond ``limit`` bytes (read no further), 400 if malformed."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, f"content-type: expected application/json, got {ctype or 'none'!r}", "content-type")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise ApiError(413, f"body: larger than the {limit} bytes a request may have", "body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body: larger than the {limit} bytes a request may have", "body")
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"body: not valid JSON ({str(e)[:80]})", "body") from None


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI entry of a JSON body the handler parses itself (with ``model``): what schema-driven clients and
    tests (schemathesis) read."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _query_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI parameters of a query string the handler parses itself (with ``model``)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return {"parameters": [{"name": name, "in": "query", "required": name in required, "schema": field}
                           for name, field in schema["properties"].items()]}


def _hostname(host: str) -> str:
    """'example.org:8000' -> 'example.org', '[::1]:8000' -> '::1' (lower case)."""
    h = host.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HostCheck:
    """ASGI middleware: a request whose Host header names none of ``allowed`` is answered 400 JSON, field "host"."""

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app, self.allowed = app, {_hostname(h) for h in allowed}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if _hostname(host) not in self.allowed:
                response = _error(400, f"host: {host[:80]!r} is not a name this server answers to (it answers "
                                       f"{', '.join(sorted(self.allowed))})", "host")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _client_gone(request: Request) -> None:
    """Returns once the client has closed the connection (the server's http.disconnect); the body is read already."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _parse(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ApiError(422, f"body: expected a JSON object, got {type(data).__name__}", "body")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e) from None


def _validation_figures(g: Generator) -> dict[str, Any] | None:
    """The manifest entries' validation figures of the files ``g`` runs, when they come from an export folder."""
    folder = g.student.path.parent
    if not (folder / MANIFEST).is_file():
        return None
    try:
        manifest = read_export(folder)
    except NerfganError:
        return None
    keep = ("kind", "precision", "format", "validation", "psnr_db_vs_fp32")
    out: dict[str, Any] = {}
    for backend in (g.student, g.mapping):
        entry = next((a for a in manifest.data["artifacts"] if backend is not None and a["file"] == backend.path.name),
                     None)
        if entry is not None:
            out[entry["file"]] = {k: entry[k] for k in keep if k in entry}
    return out or None


def _info(g: Generator, limits: Limits) -> dict[str, Any]:
    return {
        "resolution": g.img_resolution, "raw_resolution": g.resolution, "backend": g.backend,
        "precision": g.precision, "w_dim": g.w_dim, "z_dim": g.z_dim, "seeds": g.mapping is not None,
        "student": g.student.path.name, "mapping": g.mapping.path.name if g.mapping is not None else None,
        "camera": {"radius": g.radius, "focal": g.focal, "fov": camera.focal_to_fov(g.focal), "pivot": list(g.pivot)},
        "pose_limits": {"yaw": [-YAW_LIMIT, YAW_LIMIT], "pitch": [-PITCH_LIMIT, PITCH_LIMIT], "pitch_exclusive": True,
                        "radius": [0.0, RADIUS_MAX], "radius_exclusive_min": True, "fov": list(FOV_RANGE),
                        "truncation": [0.0, 1.0]},
        "limits": asdict(limits),
        "validation": _validation_figures(g),
    }


def create_app(generator: Generator, limits: Limits | None = None, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The app serving ``generator`` (shared by every request; its owner closes it after the server stops).

    ``allowed_hosts``: the host names a request's Host header may name (any port); another is answered 400 JSON
    (a page of another site that DNS rebinding points at this server cannot use it). None: any (as when mounted in
    an app that checks itself). `nerfgan serve` passes its --host and, on a loopback address, localhost's names.
    The OpenAPI schema is not served (no docs); ``app.openapi()`` gives it, with the request bodies and queries.

    The viewer uses relative URLs, so the app also works mounted under a prefix (``parent.mount("/nerfgan", app)``,
    the viewer then at /nerfgan/). Its batcher's worker thread starts with the first job and stops at the app's
    shutdown (a daemon thread: a mounted app, whose lifespan its parent does not run, needs no shutdown).
    """
    lim = limits or Limits()
    g = generator
    batcher: MicroBatcher[Job, Result] = MicroBatcher(lambda jobs: run_jobs(g, jobs), lambda j: j.size,
                                                      lim.max_batch, lim.max_wait_ms / 1000, lim.max_queue)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.reopen()  # (a second start of the same app: found by the HTTP fuzzing, whose calls each ran one)
        yield
        batcher.close()

    app = FastAPI(title="nerfgan serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.state.generator, app.state.batcher, app.state.limits = g, batcher, lim

    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, e.field, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}", None, e.headers)

    async def submit(job: Job, fields: tuple[str, ...], request: Request) -> Result:
        """The job's result; a client that hangs up while its job waits takes the job out of the queue (issue 22)."""
        try:
            fut = batcher.submit(job)
            done = asyncio.wrap_future(fut)
            gone: asyncio.Future[Any] = asyncio.ensure_future(_client_gone(request))
            waiters: set[asyncio.Future[Any]] = {done, gone}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
            if not done.done():
                batcher.abandon(fut)
                done.cancel()
                raise ApiError(499, "client: closed the connection before the answer")  # (nobody reads it)
            return done.result()
        except QueueFull as e:
            raise ApiError(503, str(e), None, {"Retry-After": str(e.retry_after_s)}) from None
        except BatcherClosed as e:
            raise ApiError(503, str(e)) from None
        except EngineError as e:  # the engine failed at run time (nerfgan.runtime.backends.Backend.infer)
            log.error("engine job failed: %s", e)
            raise ApiError(500, str(e).splitlines()[0]) from None
        except NerfganError as e:
            raise _nerfgan_error(e, fields) from None
        except Exception as e:  # a bug or an engine failure: logged with its traceback; the server keeps serving
            log.exception("engine job failed (seed %s, %d poses)", job.seed, len(job.yaw))
            raise ApiError(500, f"the engine failed ({type(e).__name__}); see the server's log") from None

    def check_w(w: list[float] | None) -> np.ndarray | None:
        if w is None:
            return None
        if len(w) != g.w_dim:
            raise ApiError(422, f"w: expected {g.w_dim} numbers (this engine's w_dim), got {len(w)}", "w")
        return np.asarray(w, np.float32)

    page, script = ((STATIC / name).read_text("utf-8") for name in ("index.html", "viewer.js"))

    from nerfgan.export.web import ISOLATION_HEADERS
    from nerfgan.serve.client import add_client_routes

    add_client_routes(app, g)  # /web/...: the viewer's client-side mode (ONNX Runtime Web in the page)

    @app.get("/", response_class=HTMLResponse)
    async def viewer() -> HTMLResponse:  # cross-origin isolated: the client-side mode may use WebAssembly threads
        return HTMLResponse(page, headers={"Cache-Control": "no-cache", **ISOLATION_HEADERS})

    @app.get("/viewer.js")
    async def viewer_js() -> Response:
        return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **asdict(batcher.stats())}

    info_body = _info(g, lim)  # fixed for the app's life: the manifest is read once

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return info_body

    @app.post("/v1/render", openapi_extra=_body_doc(RenderRequest))
    async def render(request: Request) -> Response:
        req = _parse(RenderRequest, await _read_json(request, lim.max_body_bytes))
        if (req.seed is None) == (req.w is None):
            raise ApiError(422, "seed, w: give exactly one of them", "seed")
        n = max(len(req.yaw), len(req.pitch))
        for name, values in (("yaw", req.yaw), ("pitch", req.pitch)):
            if len(values) > lim.max_poses:
                raise ApiError(422, f"{name}: {len(values)} poses, at most {lim.max_poses} per request", name)
            if len(values) not in (1, n):
                raise ApiError(422, f"{name}: {len(values)} values do not broadcast with {n} (give 1 or {n})", name)
        yaw, pitch = (tuple(np.broadcast_to(np.asarray(v, np.float64), (n,)).tolist()) for v in (req.yaw, req.pitch))
        job = Job(seed=req.seed, w=check_w(req.w), yaw=yaw, pitch=pitch, radius=req.radius, fov=req.fov,
                  truncation=req.truncation)
        result = await submit(job, tuple(RenderRequest.model_fields), request)
        body = await run_in_threadpool(encode_images, result.images, req.format, lim.jpeg_quality)
        return Response(body, media_type=MEDIA_TYPES[req.format], headers={"X-Images": str(len(result.images))})

    @app.post("/v1/style", openapi_extra=_body_doc(StyleRequest))
    async def style(request: Request) -> dict[str, Any]:
        req = _parse(StyleRequest, await _read_json(request, lim.max_body_bytes))
        job = Job(seed=req.seed, fov=req.fov, truncation=req.truncation)
        result = await submit(job, tuple(StyleRequest.model_fields), request)
        return {"seed": req.seed, "truncation": req.truncation, "w": result.w.tolist()}

    @app.get("/v1/orbit", openapi_extra=_query_doc(OrbitQuery))
    async def orbit(request: Request) -> Response:
        items = request.query_params.multi_items()
        repeated = sorted(k for k, n in Counter(k for k, _ in items).items() if n > 1)
        if repeated:
            raise ApiError(422, f"{repeated[0]}: given more than once", repeated[0])
        q = _parse(OrbitQuery, dict(items))
        if q.frames > lim.max_frames:
            raise ApiError(422, f"frames: {q.frames} frames, at most {lim.max_frames}", "frames")
        offsets = camera.orbit(q.frames, q.yaw_range, q.pitch_range, pitch_offset_deg=0.0).astype(np.float64)
        job = Job(seed=q.seed, yaw=tuple(np.round(offsets[:, 0], 4).tolist()),
                  pitch=tuple(np.round(offsets[:, 1], 4).tolist()), truncation=q.truncation)
        result = await submit(job, tuple(OrbitQuery.model_fields), request)
        body = await run_in_threadpool(encode_gif, result.images, q.fps)
        return Response(body, media_type=MEDIA_TYPES["gif"], headers={"X-Images": str(len(result.images))})

    return app
