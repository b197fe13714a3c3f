"""``nerfgan web`` and ``nerfgan-export --web``: a static folder that renders an export's student in the browser.

    nerfgan web --engine export -o site            # then host site/ with any web server
    python -m http.server -d site 8000             # e.g.; open http://127.0.0.1:8000/?seed=7&yaw=20&pitch=-5

SITE_DIR/
    index.html, viewer.js          the page: drag to turn, seed, truncation, student precision, fps
    nerfgan-web.js                 seed -> z (numpy's RandomState, exactly), pose -> 25-value camera, frame -> RGBA
    mapping.onnx, student.onnx     copied from the export (sha256 checked against its manifest)
    student_int8.onnx              when the export has one
    nerfgan-web.json               what the page needs: files and their sha256, sizes, camera, gates, export record
    ort/                           onnxruntime-web (ORT_WEB_VERSION) as vendored in nerfgan: the WebAssembly build
                                   (SIMD, threads), LICENSE, VENDOR.txt (where it came from)

Nothing is fetched from elsewhere at run time. The page renders on one WebAssembly thread anywhere; it uses more
where the site is served cross-origin isolated (ISOLATION_HEADERS, as :func:`serving` and ``nerfgan web --serve``
send them). The folder is written like every nerfgan output: staged inside it, renamed into place (nerfgan-web.json
last), only into a new or empty folder or one nerfgan wrote as a site, and a file there that nerfgan did not write
(or that changed since) is never replaced.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nerfgan
from nerfgan.errors import InputFileError, OutputError, UsageError
from nerfgan.io import (OWNER_FILE, atomic_dir, atomic_path, check_may_replace, check_writable_dir, claim_dir,
                        folder_lock, mark_dir, may_replace, owner_record)
from nerfgan.runtime import spec as S

ORT_WEB_VERSION = "1.31.1"  # the npm package onnxruntime-web, pinned (web_assets/ort/VENDOR.txt)
SITE_FORMAT = "nerfgan-web-1"
SITE_JSON = "nerfgan-web.json"
OWNER_KIND = "web"  # nerfgan.io owner-file kind of a site folder
SITE_LOCK = ".nerfgan-web.lock"
PAGE_FILES = ("index.html", "viewer.js", "nerfgan-web.js")
# site name -> (file under web_assets, sha256 of the bytes written): the vendored runtime, checked when read
ORT_FILES = {
    "ort/ort.wasm.bundle.min.mjs": ("ort/ort.wasm.bundle.min.mjs",
                                    "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd"),
    "ort/ort-wasm-simd-threaded.wasm": ("ort/ort-wasm-simd-threaded.wasm.gz",
                                        "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d"),
    "ort/LICENSE": ("ort/LICENSE", None),
    "ort/VENDOR.txt": ("ort/VENDOR.txt", None),
}
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
"""Headers that make a page cross-origin isolated, which WebAssembly threads (SharedArrayBuffer) need."""
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
               ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
               ".txt": "text/plain; charset=utf-8", "": "text/plain; charset=utf-8"}
WEB_PRECISIONS = ("fp32", "int8")  # students the page runs (ONNX Runtime Web's CPU kernels have no float16 path)
DEFAULT_SEED, DEFAULT_TRUNCATION = 7, 0.7


def asset(name: str) -> bytes:
    """The bytes of a packaged page or runtime file (``ort/...wasm`` decompressed), checked where a sha256 is pinned.
    InputFileError naming the file when the installation lacks it or it differs (a damaged install)."""
    source, sha = ORT_FILES.get(name, (name, None))
    try:
        raw = (resources.files("nerfgan.export") / "web_assets" / source).read_bytes()
    except OSError as e:
        raise InputFileError(f"nerfgan/export/web_assets/{source}: missing from this installation of nerfgan "
                             f"({e.strerror or e}); reinstall it") from None
    data = gzip.decompress(raw) if source.endswith(".gz") else raw
    if sha is not None and hashlib.sha256(data).hexdigest() != sha:
        raise InputFileError(f"nerfgan/export/web_assets/{source}: not the onnxruntime-web {ORT_WEB_VERSION} file "
                             "nerfgan vendors (sha256 differs); reinstall nerfgan")
    return data


@dataclass(frozen=True)
class WebModels:
    """What a site (or nerfgan serve's client-side mode) serves of an export: ``meta`` (nerfgan-web.json without its
    ``files`` record) and the checked bytes of each ONNX file by name."""

    meta: dict[str, Any]
    models: dict[str, bytes]


def describe_export(engine: str | os.PathLike[str], option: str = "--engine") -> WebModels:
    """The mapping and the FP32 (and INT8) student of export folder ``engine``, read once and checked against its
    manifest (size, sha256, external data), with what the page needs to know of them. InputFileError naming
    ``option`` when ``engine`` is not an export folder a browser can run."""
    from nerfgan.runtime.backends import _tensors, read_onnx_checked, spec_from_metadata
    from nerfgan.teacher.identity import TEACHER_KEY

    folder = Path(engine)
    if not folder.is_dir():
        raise InputFileError(f"{option} {engine}: expected an export folder (manifest.json, mapping.onnx, "
                             "student.onnx), as nerfgan-export writes it")
    manifest = S.read_export(folder)

    def find(kind: str, precision: str) -> S.Artifact | None:
        return next((a for a in manifest.artifacts if a.kind == kind and a.precision == precision
                     and a.format == "onnx"), None)

    wanted = {"mapping": find("mapping", "fp32")} | {p: find("student", p) for p in WEB_PRECISIONS}
    for key, what in (("mapping", "mapping"), ("fp32", "FP32 student")):
        if wanted[key] is None:
            raise InputFileError(f"{option} {engine}: {S.MANIFEST} lists no {what} ONNX file; the page needs the "
                                 "mapping and the FP32 student (export again with nerfgan-export)")
    models: dict[str, bytes] = {}
    entries: dict[str, dict[str, Any]] = {}
    metadata: dict[str, dict[str, str]] = {}
    listed = {a["file"]: a for a in manifest.data["artifacts"] if isinstance(a, dict)}
    for key, art in wanted.items():
        if art is None:
            continue
        path = S.artifact_path(manifest, art)
        data, proto = read_onnx_checked(path, art, manifest.path)
        if any(t.data_location == 1 or len(t.external_data) for t in _tensors(proto)):
            raise InputFileError(f"{path}: keeps weights in external data files; a web site carries single-file "
                                 "ONNX models only")
        metadata[key] = {p.key: p.value for p in proto.metadata_props}
        del proto
        models[art.file] = data
        record = listed.get(art.file, {})
        entries[key] = {"file": art.file, "sha256": art.sha256, "bytes": art.bytes, "precision": art.precision,
                        "validation": record.get("validation", [])}
    spec = spec_from_metadata(metadata["fp32"], Path(folder / entries["fp32"]["file"]))
    mspec = spec_from_metadata(metadata["mapping"], Path(folder / entries["mapping"]["file"]))
    try:
        cam = json.loads(metadata["fp32"][S.META_CAMERA])
        camera = {"radius": float(cam["radius"]), "pivot": [float(v) for v in cam["pivot"]],
                  "focal": float(cam["focal"])}
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise InputFileError(f"{folder / entries['fp32']['file']}: nerfgan metadata {S.META_CAMERA} incomplete or "
                             f"malformed ({str(e)[:120]})") from None
    image, raw = spec.output("image"), spec.output("image_raw")
    config = manifest.data.get("export_config") or {}
    gate = {k: config[k] for k in ("int8_min_psnr_vs_fp32", "int8_max_drop") if k in config}
    if "int8" in entries:
        entries["int8"]["gate"] = gate
    meta = {
        "format": SITE_FORMAT, "nerfgan_version": nerfgan.__version__,
        "onnxruntime_web": {"version": ORT_WEB_VERSION, "build": "wasm (SIMD, threads)",
                            "files": sorted(ORT_FILES)},
        "model": {"z_dim": int(mspec.input("z").shape[1]), "w_dim": int(spec.input("w").shape[1]),
                  "resolution": int(image.shape[2]), "raw_resolution": int(raw.shape[2]), "camera": camera,
                  "student_inputs": spec.input_names},
        "mapping": entries["mapping"],
        "students": {k: entries[k] for k in WEB_PRECISIONS if k in entries},
        "pose_limits": {"yaw": [-180.0, 180.0], "pitch": [-90.0, 90.0], "pitch_exclusive": True},
        "defaults": {"seed": DEFAULT_SEED, "truncation": DEFAULT_TRUNCATION},
        "export": {"checkpoint_sha256": manifest.checkpoint_sha256, TEACHER_KEY: manifest.data.get(TEACHER_KEY),
                   "nerfgan_version": manifest.data.get("nerfgan_version"),
                   "student_config": manifest.data.get("student_config"),
                   "export_config": {k: v for k, v in config.items() if k not in ("calib", "triton")},
                   "int8_gate": gate or None},
    }
    return WebModels(meta, models)


def site_files(models: WebModels) -> dict[str, bytes]:
    """Every file of the site but nerfgan-web.json: the page, the models, the vendored runtime."""
    files = {name: asset(name) for name in PAGE_FILES}
    files.update(models.models)
    files.update({name: asset(name) for name in ORT_FILES})
    return files


def check_destination(out_dir: str | os.PathLike[str], option: str = "-o",
                      export_dir: str | os.PathLike[str] | None = None) -> Path:
    """Before any work: ``out_dir`` may be written as a site (new, empty, or a site nerfgan wrote) and is not the
    export folder, inside it or around it."""
    out = Path(out_dir)
    if export_dir is not None:
        here, there = Path(os.path.realpath(out)), Path(os.path.realpath(export_dir))
        if here == there or there in here.parents or here in there.parents:
            raise UsageError(f"{option} {out_dir}: must be a folder of its own, not the export folder {export_dir}, "
                             "inside it or around it")
    claim_dir(out, OWNER_KIND, option, _is_site)
    check_writable_dir(out, "web site folder")
    return out


def _is_site(folder: Path) -> bool:
    """A folder a nerfgan site was written into (its nerfgan-web.json), for claim_dir."""
    return _read_site_json(folder) is not None


def _read_site_json(folder: Path) -> dict[str, Any] | None:
    path = folder / SITE_JSON
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > S.MANIFEST_MAX_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("format") == SITE_FORMAT else None


def _listed(folder: Path) -> dict[str, str]:
    """The files (name -> sha256) the site's current nerfgan-web.json records, each a checked relative name."""
    data = _read_site_json(folder)
    files = data.get("files") if data else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str) and _site_name_ok(k)}


def _site_name_ok(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(S.plain_name_problem(p) is None and not p.startswith(".") for p in parts) \
        and name != SITE_JSON


def _recorded(folder: Path) -> dict[str, str | None]:
    """What nerfgan wrote into the site folder: its owner file's record of files, else its nerfgan-web.json's."""
    record = owner_record(folder)
    files = record.get("files") if record is not None else None
    if isinstance(files, dict):
        return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str) and _site_name_ok(k)}
    return dict(_listed(folder))


def write_site(engine: str | os.PathLike[str], out_dir: str | os.PathLike[str], option: str = "-o",
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the site of export folder ``engine`` into ``out_dir``; returns its nerfgan-web.json."""
    out = check_destination(out_dir, option, engine)
    models = describe_export(engine)
    files = site_files(models)
    meta = dict(models.meta)
    meta["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{option} {out}: cannot make the folder ({e.strerror})") from None
    with folder_lock(out, name=SITE_LOCK, what="web site folder", on_wait=log):
        claim_dir(out, OWNER_KIND, option, _is_site)  # again, now that no other writer can be changing it
        old = _recorded(out)
        check_may_replace(out, sorted(files), old, option)  # a file nerfgan did not write, or one changed since
        for sub in sorted({out / name.split("/")[0] for name in files if "/" in name}):
            if sub.is_symlink() or (os.path.lexists(sub) and not sub.is_dir()):
                raise OutputError(f"{option} {out}: {sub.name} is there and is not a folder; move it away - nothing "
                                  "was changed")
        with atomic_dir(out / "staging") as stage:
            for name, data in files.items():
                (stage / name).parent.mkdir(exist_ok=True)
                (stage / name).write_bytes(data)
            mark_dir(stage, OWNER_KIND, meta["files"])
            for name in files:
                (out / name).parent.mkdir(exist_ok=True)
                os.replace(stage / name, out / name)
            os.replace(stage / OWNER_FILE, out / OWNER_FILE)
            with atomic_path(out / SITE_JSON) as tmp:
                tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        for name, sha in sorted(old.items()):  # files the previous site listed and this one does not, if unchanged
            if name not in files and os.path.lexists(out / name) and may_replace(out / name, old, name):
                (out / name).unlink()
    total = sum(len(d) for d in files.values())
    log(f"wrote {out}: {', '.join(sorted(models.models))}, the page and onnxruntime-web {ORT_WEB_VERSION} "
        f"({total / 1e6:.1f} MB)")
    return meta


# --- serving a site (tests, benchmarks, nerfgan web --serve) ------------------------------------------------
@contextlib.contextmanager
def serving(folder: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0,
            isolated: bool = True) -> Iterator[str]:
    """Serve ``folder`` over HTTP from a background thread for the ``with`` block; yields its base URL. ``isolated``
    sends ISOLATION_HEADERS (WebAssembly threads); only files under ``folder`` are served (the standard library's
    handler), with the media types a browser needs for modules and WebAssembly."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = str(Path(folder).resolve())

    class Handler(SimpleHTTPRequestHandler):
        extensions_map = MEDIA_TYPES

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=root, **kwargs)

        def send_head(self) -> Any:  # nerfgan's own records (owner file, lock) are not part of the site
            from urllib.parse import unquote, urlsplit

            if any(part.startswith(".") for part in unquote(urlsplit(self.path).path).split("/")):
                self.send_error(404)
                return None
            return super().send_head()

        def end_headers(self) -> None:
            if isolated:
                for k, v in ISOLATION_HEADERS.items():
                    self.send_header(k, v)
            self.send_header("Cache-Control", "no-cache")
            super().end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="nerfgan-web", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def check_site(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The nerfgan-web.json of a site folder; InputFileError naming it when the folder is not a nerfgan site."""
    data = _read_site_json(Path(folder))
    if data is None:
        raise InputFileError(f"{folder}: no {SITE_JSON} of a nerfgan site (write one with nerfgan web)")
    return data


__all__ = ["ISOLATION_HEADERS", "ORT_WEB_VERSION", "SITE_JSON", "WebModels", "asset", "check_destination",
           "check_site", "describe_export", "serving", "site_files", "write_site"]
