"""The viewer's client-side mode: the files the browser needs to render the served export itself (ONNX Runtime Web).

Routes, under the app's root (relative URLs, so a mounted app works too):

* ``GET /web/nerfgan-web.json`` -> what the page needs (nerfgan.export.web.describe_export, plus ``served_precision``),
  or 404 {"error": why} when the engine is not one a browser can run (a TensorRT plan, an AOTInductor package, a
  PyTorch checkpoint, an ONNX file outside an export folder): the viewer then keeps rendering on the server.
* ``GET /web/nerfgan-web.js`` and ``GET /web/ort/<file>`` -> the page's module and the vendored onnxruntime-web
  (the .wasm gzip-encoded where the browser accepts it).
* ``GET /web/<file>.onnx`` -> the export's mapping and students, checked against its manifest when first asked for.

Every answer carries nerfgan.export.web.ISOLATION_HEADERS (as does the viewer page), so the page is cross-origin
isolated and ONNX Runtime Web may use WebAssembly threads.
"""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from nerfgan.errors import NerfganError
from nerfgan.runtime import Generator
from nerfgan.runtime.spec import MANIFEST

PREFIX = "/web"


def browser_engine(g: Generator) -> tuple[Path | None, str]:
    """(the export folder a browser can run, '') for ``g``, or (None, why not)."""
    path = g.student.path
    if path.suffix != ".onnx":
        kind = {".plan": "a TensorRT plan", ".pt2": "an AOTInductor package",
                ".safetensors": "a PyTorch checkpoint"}.get(path.suffix, f"a {path.suffix} file")
        return None, f"{path.name} is {kind}, which ONNX Runtime Web cannot run: rendering stays on the server"
    if not (path.parent / MANIFEST).is_file():
        return None, f"{path.name} is not in an export folder ({MANIFEST}): rendering stays on the server"
    return path.parent, ""


def add_client_routes(app: FastAPI, g: Generator) -> None:
    """Register the client-side mode's routes on ``app`` for the engine ``g`` serves."""
    from nerfgan.export import web as W

    folder, why = browser_engine(g)
    lock = threading.Lock()
    cache: dict[str, Any] = {}

    def models() -> W.WebModels | str:
        """The export's files for the browser, read and checked once (the first time a page asks); or why not."""
        with lock:
            if "models" not in cache:
                if folder is None:
                    cache["models"] = why
                else:
                    try:
                        cache["models"] = W.describe_export(folder, "--engine")
                    except NerfganError as e:
                        cache["models"] = f"{e}: rendering stays on the server"
            return cache["models"]  # type: ignore[no-any-return]

    def asset(name: str) -> bytes:
        with lock:
            if name not in cache:
                data = W.asset(name)
                cache[name] = gzip.compress(data, 6) if name.endswith(".wasm") else data
            return cache[name]  # type: ignore[no-any-return]

    headers = dict(W.ISOLATION_HEADERS, **{"Cache-Control": "no-cache"})

    def not_found(message: str) -> JSONResponse:
        return JSONResponse({"error": message, "field": None}, status_code=404, headers=headers)

    @app.get(PREFIX + "/nerfgan-web.json")
    async def site_json() -> Response:
        m = await run_in_threadpool(models)
        if isinstance(m, str):
            return not_found(m)
        served = g.precision if g.precision in m.meta["students"] else "fp32"
        return JSONResponse(dict(m.meta, served_precision=served), headers=headers)

    @app.get(PREFIX + "/{name}")
    async def page_file(name: str) -> Response:
        if name == "nerfgan-web.js":
            return Response(asset(name), media_type=W.MEDIA_TYPES[".js"], headers=headers)
        m = await run_in_threadpool(models)
        if isinstance(m, str) or name not in m.models:
            return not_found(f"GET {PREFIX}/{name}: no such file" + (f" ({m})" if isinstance(m, str) else ""))
        return Response(m.models[name], media_type=W.MEDIA_TYPES[".onnx"], headers=headers)

    @app.get(PREFIX + "/ort/{name}")
    async def runtime_file(name: str, request: Request) -> Response:
        key = f"ort/{name}"
        if key not in W.ORT_FILES:
            return not_found(f"GET {PREFIX}/{key}: no such file")
        data = await run_in_threadpool(asset, key)
        suffix = Path(name).suffix
        if suffix == ".wasm":  # held gzip-compressed (3.8 MB instead of 14.8)
            if "gzip" in request.headers.get("accept-encoding", ""):
                return Response(data, media_type=W.MEDIA_TYPES[".wasm"],
                                headers=dict(headers, **{"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}))
            data = gzip.decompress(data)
        return Response(data, media_type=W.MEDIA_TYPES.get(suffix, W.MEDIA_TYPES[""]), headers=headers)
