"""The student in the browser: `nerfgan-export --web` / `nerfgan web` write a static site that renders the export
with ONNX Runtime Web; nerfgan serve's viewer gains the same client-side mode.

The browser tests drive Debian's headless Chromium with Selenium (system chromedriver), against servers on loopback
that each test stops; every wait is bounded. They skip, saying why, where selenium, chromium or chromedriver is
missing (Debian: apt-get install chromium chromium-driver). Screenshots go under tmp_path, and are copied into
$NERFGAN_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import UNTRAINED_INT8_MIN_PSNR, invoke

from nerfgan.cli import export_main, main, run_main
from nerfgan.errors import InputFileError, OutputError, UsageError

from chromium_driver import CHROMEDRIVER, CHROMIUM, chromium
try:
    import selenium.webdriver as webdriver
except ImportError:
    webdriver = None
needs_browser = [
    pytest.mark.slow,
    pytest.mark.skipif(webdriver is None, reason="needs selenium (the dev extra)"),
    pytest.mark.skipif(not os.path.isfile(CHROMEDRIVER), reason="needs chromedriver (apt-get install chromium-driver)"),
    pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)"),
]
WAIT_S = 120  # every wait is bounded; ONNX Runtime Web compiles and renders on 2 busy cores here
SEED, YAW, PITCH = 7, 20.0, -5.0


def browser_test(f):
    for mark in needs_browser:
        f = mark(f)
    return f


# --- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web_export(tmp_path_factory, tiny_student_path, tiny_calib_path):
    """`nerfgan-export --student S -o export --int8 --calib C --web site` (the INT8 floor of an untrained student,
    as conftest explains) -> (export folder, site folder)."""
    root = tmp_path_factory.mktemp("web")
    export, site = root / "export", root / "site"
    with pytest.raises(SystemExit) as e:
        export_main(["--student", str(tiny_student_path), "-o", str(export), "--int8", "--calib", str(tiny_calib_path),
                     "--int8-min-psnr", str(UNTRAINED_INT8_MIN_PSNR), "--web", str(site)])
    assert e.value.code == 0
    return export, site


@pytest.fixture(scope="module")
def reference(web_export, tmp_path_factory):
    """`nerfgan-run --engine EXPORT --seed 7 --pose 20,-5 -o ...` for both precisions -> {precision: (H, W, 3) uint8}."""
    export, _ = web_export
    out = tmp_path_factory.mktemp("reference")
    frames = {}
    for precision in ("fp32", "int8"):
        path = out / f"{precision}.png"
        with pytest.raises(SystemExit) as e:
            run_main(["--engine", str(export), "--precision", precision, "--seed", str(SEED),
                      "--pose", f"{YAW:g},{PITCH:g}", "-o", str(path)])
        assert e.value.code == 0
        frames[precision] = np.asarray(Image.open(path).convert("RGB"))
    return frames


@pytest.fixture
def browser():
    with chromium("900,1000", WAIT_S) as driver:
        yield driver


@pytest.fixture
def site_url(web_export):
    from nerfgan.export.web import serving

    with serving(web_export[1], isolated=True) as url:
        yield url


def settle(driver, condition: str = "true", *args) -> str:
    """Wait (bounded) until the page's state is 'rendered' and ``condition`` (JS) holds, or it is 'error'."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = f"const s = document.body.dataset.state; return s === 'error' ? s : (s === 'rendered' && ({condition}) ? s : null);"
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: d.execute_script(script, *args))


def frame(driver) -> np.ndarray:
    src = driver.find_element("id", "frame").get_attribute("src")
    assert src.startswith("data:image/png;base64,"), src[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def page_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    if os.environ.get("NERFGAN_SCREENSHOT_DIR"):
        out = Path(os.environ["NERFGAN_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / name)
    return shot


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images on the [-1, 1] scale the export's gates use (peak-to-peak 2)."""
    x, y = (v.astype(np.float64) / 127.5 - 1 for v in (a, b))
    return float(10 * np.log10(4.0 / max(np.mean((x - y) ** 2), 1e-12)))


# --- the site folder (no browser) ------------------------------------------------------------------------------
def test_the_site_holds_the_page_the_models_and_the_vendored_runtime(web_export):
    from nerfgan.export.web import ORT_FILES, ORT_WEB_VERSION, asset
    from nerfgan.io import file_sha256
    from nerfgan.runtime.spec import read_export

    export, site = web_export
    meta = json.loads((site / "nerfgan-web.json").read_text())
    manifest = read_export(export)
    assert meta["format"] == "nerfgan-web-1" and meta["onnxruntime_web"]["version"] == ORT_WEB_VERSION == "1.31.1"
    assert set(meta["students"]) == {"fp32", "int8"} and meta["mapping"]["file"] == "mapping.onnx"
    for entry in [meta["mapping"], *meta["students"].values()]:  # the export's very files
        assert entry["sha256"] == manifest.find(entry["file"]).sha256 == file_sha256(site / entry["file"])
    assert meta["students"]["int8"]["gate"]["int8_min_psnr_vs_fp32"] == UNTRAINED_INT8_MIN_PSNR
    written = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert written == set(meta["files"]) | {"nerfgan-web.json"}
    assert all(file_sha256(site / name) == sha for name, sha in meta["files"].items())
    assert set(ORT_FILES) <= written and "MIT License" in (site / "ort/LICENSE").read_text()
    assert "onnxruntime-web@1.31.1" in (site / "ort/VENDOR.txt").read_text()
    assert (site / "ort/ort-wasm-simd-threaded.wasm").read_bytes()[:4] == b"\0asm" == asset(
        "ort/ort-wasm-simd-threaded.wasm")[:4]
    assert meta["model"]["camera"] == {"radius": 2.7, "pivot": [0.0, 0.0, 0.2], "focal": 4.2647}
    assert "calib" not in meta["export"]["export_config"]  # no local paths of the exporter's machine in a public site
    assert str(export) not in (site / "nerfgan-web.json").read_text()


def test_serving_a_site_isolates_it_and_keeps_nerfgans_records_out(web_export):
    import urllib.error
    import urllib.request

    from nerfgan.export.web import serving

    site = web_export[1]
    with serving(site) as url:
        with urllib.request.urlopen(url + "/index.html", timeout=WAIT_S) as r:
            assert r.read() == (site / "index.html").read_bytes()
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(url + "/ort/ort.wasm.bundle.min.mjs", timeout=WAIT_S) as r:
            assert r.headers["Content-Type"] == "text/javascript"
        for path in ("/.nerfgan-owner.json", "/ort/../.nerfgan-web.lock", "/%2enerfgan-owner.json"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(url + path, timeout=WAIT_S)
            assert e.value.code == 404, path
    with serving(site, isolated=False) as url, urllib.request.urlopen(url + "/", timeout=WAIT_S) as r:
        assert "Cross-Origin-Embedder-Policy" not in r.headers and b'id="frame"' in r.read()


def test_a_site_is_written_again_in_place_and_files_nerfgan_did_not_write_are_kept(web_export, tmp_path):
    from nerfgan.export.web import write_site

    export, _ = web_export
    site = tmp_path / "site"
    write_site(export, site, log=lambda s: None)
    (site / "notes.txt").write_text("mine")
    (site / "student_int8.onnx").unlink()  # listed: written again
    record = json.loads((site / ".nerfgan-owner.json").read_text())
    assert record["kind"] == "web" and record["files"] == json.loads((site / "nerfgan-web.json").read_text())["files"]
    record["files"]["old_student.onnx"] = hashlib.sha256(b"old").hexdigest()
    (site / ".nerfgan-owner.json").write_text(json.dumps(record))
    (site / "old_student.onnx").write_bytes(b"old")  # recorded by the old site, unchanged: removed
    write_site(export, site, log=lambda s: None)
    assert (site / "notes.txt").read_text() == "mine" and (site / "student_int8.onnx").is_file()
    assert not (site / "old_student.onnx").exists()

    (site / "index.html").write_text("edited by hand")  # changed since nerfgan wrote it: refused, nothing changed
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match=r"would replace index\.html, which nerfgan did not write there or which "
                                          "changed since"):
        write_site(export, site, log=lambda s: None)
    assert (site / "index.html").read_text() == "edited by hand"
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()} == before


def test_the_site_goes_only_where_nerfgan_may_write(web_export, tmp_path, capsys):
    from nerfgan.export.web import write_site

    export, _ = web_export
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "index.html").write_text("someone's page")
    with pytest.raises(OutputError, match="files nerfgan did not write"):
        write_site(export, foreign, log=lambda s: None)
    assert os.listdir(foreign) == ["index.html"]
    with pytest.raises(UsageError, match="not the export folder"):
        write_site(export, export / "site", log=lambda s: None)
    with pytest.raises(InputFileError, match="expected an export folder"):
        write_site(export / "student.onnx", tmp_path / "s2", log=lambda s: None)

    code, out, err = invoke(main, ["web", "--engine", tmp_path / "nothing", "-o", tmp_path / "s3"], capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("Error: ") and "nothing" in err
    assert "Traceback" not in err and not (tmp_path / "s3").exists()
    code, out, err = invoke(export_main, ["--student", export / "x.safetensors", "-o", export, "--web", foreign],
                            capsys)  # checked before any work
    assert code == 1 and "--web" in err and "files nerfgan did not write" in err and err.count("\n") == 1


def test_the_serve_app_hands_the_browser_the_export_or_says_why_not(web_export, tmp_path):
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'nerfgan[serve]'")
    from fastapi.testclient import TestClient

    import nerfgan.runtime as nr
    from nerfgan.export.web import asset
    from nerfgan.serve import create_app

    export, _ = web_export
    with nr.load(export, precision="int8") as g, TestClient(create_app(g)) as client:
        page = client.get("/")
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert 'id="client"' in page.text
        meta = client.get("/web/nerfgan-web.json").json()
        assert meta["served_precision"] == "int8" and set(meta["students"]) == {"fp32", "int8"}
        onnx = client.get("/web/student_int8.onnx")
        assert onnx.status_code == 200 and onnx.content == (export / "student_int8.onnx").read_bytes()
        wasm = client.get("/web/ort/ort-wasm-simd-threaded.wasm", headers={"accept-encoding": "identity"})
        assert wasm.headers["content-type"] == "application/wasm" and wasm.content == asset(
            "ort/ort-wasm-simd-threaded.wasm")
        packed = client.get("/web/ort/ort-wasm-simd-threaded.wasm", headers={"accept-encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip" and int(packed.headers["content-length"]) < 5_000_000
        assert packed.content == wasm.content  # (httpx decodes it)
        assert wasm.headers["cross-origin-embedder-policy"] == "require-corp"  # the threads' workers need it too
        for missing in ("/web/manifest.json", "/web/ort/ort.webgpu.min.mjs", "/web/calib.npz"):
            assert client.get(missing).status_code == 404, missing
    loose = tmp_path / "loose"  # ONNX files outside an export folder: the browser gets the reason, the server renders
    loose.mkdir()
    for name in ("student.onnx", "mapping.onnx"):
        shutil.copy(export / name, loose / name)
    with nr.load(loose / "student.onnx") as g, TestClient(create_app(g)) as client:
        r = client.get("/web/nerfgan-web.json")
        assert r.status_code == 404 and "not in an export folder" in r.json()["error"]
        assert client.get("/web/student.onnx").status_code == 404
        assert client.post("/v1/render", json={"seed": 7, "yaw": 0, "pitch": 0}).status_code == 200


# --- in Chromium ------------------------------------------------------------------------------------------------
@browser_test
def test_a_seeds_z_the_camera_and_the_uint8_conversion_match_nerfgan_in_chromium(browser, site_url):
    from nerfgan import camera
    from nerfgan.io import to_uint8
    from nerfgan.sampling import z_from_seed

    browser.get(site_url + "/nerfgan-web.json")  # a page of the site's origin, without the viewer
    seeds = list(range(100)) + [2**32 - 1, 2**31, 123456789, 987654321, 4000000000]
    poses = [(0, 0), (20, -5), (-20, 5), (45, 30), (-90, -60), (180, 0), (-180, 89.9), (13.37, -7.7), (0.1, 0.01)]
    halves = ((np.arange(-130, 130) + 0.5 - 128) / 127.5).astype(np.float32)  # x * 127.5 + 128 = k + 0.5: to even
    floats = np.concatenate([halves, np.random.default_rng(0).uniform(-1.3, 1.3, 3 * 36 * 36 - len(halves))])
    floats = floats.astype(np.float32)
    got = browser.execute_async_script("""
        const [seeds, poses, floats, done] = arguments;
        import(new URL('nerfgan-web.js', location.href).href).then((m) => done({
            z: seeds.map((s) => Array.from(m.latent(s, 512))),
            c: poses.map(([y, p]) => Array.from(m.camera(y, p, 2.7, [0, 0, 0.2], 4.2647))),
            frontal: Array.from(m.frontal(2.7, [0, 0, 0.2], 4.2647)),
            rgba: Array.from(m.toRGBA(Float32Array.from(floats), Math.sqrt(floats.length / 3))),
        }), (e) => done({ error: String(e) }));""", seeds, poses, floats.tolist())
    assert "error" not in got, got
    for seed, z in zip(seeds, got["z"]):  # exactly numpy's RandomState(seed).randn, as float32
        np.testing.assert_array_equal(np.asarray(z, np.float32), z_from_seed(seed, 512)[0], err_msg=f"seed {seed}")
    for (yaw, pitch), c in zip(poses, got["c"]):
        np.testing.assert_array_equal(np.asarray(c, np.float32), camera.pose(yaw, pitch, 2.7, (0, 0, 0.2), 4.2647),
                                      err_msg=f"pose {yaw},{pitch}")
    np.testing.assert_array_equal(np.asarray(got["frontal"], np.float32), camera.frontal(2.7, (0, 0, 0.2), 4.2647))
    chw = floats.reshape(3, 36, 36)
    rgba = np.asarray(got["rgba"], np.uint8).reshape(36, 36, 4)
    np.testing.assert_array_equal(rgba[..., :3], to_uint8(chw))
    assert (rgba[..., 3] == 255).all()


@browser_test
def test_the_page_renders_seed_7_at_20_minus_5_as_nerfgan_run_does(browser, site_url, reference, tmp_path):
    browser.get(f"{site_url}/index.html?seed={SEED}&yaw={YAW:g}&pitch={PITCH:g}")
    state = settle(browser)
    assert state == "rendered", browser.find_element("id", "error").text
    got = frame(browser)
    diff = max_diff(got, reference["fp32"])
    print(f"max |browser - nerfgan-run| (fp32, seed 7, pose 20,-5): {diff} levels; "
          f"{np.mean(got != reference['fp32']):.5f} of the values differ")
    assert diff <= 2
    body = browser.find_element("tag name", "body")
    assert (body.get_attribute("data-ep"), body.get_attribute("data-threads")) == ("wasm", "2")  # isolated: threads
    engine = browser.find_element("id", "engine").text
    assert "WebAssembly SIMD" in engine and "2 threads (cross-origin isolated)" in engine and "student.onnx" in engine
    img = browser.find_element("id", "frame")
    assert [img.get_attribute(f"data-{k}") for k in ("seed", "yaw", "pitch")] == ["7", "20", "-5"]
    assert "fps" in browser.find_element("id", "fps").text and browser.find_element("id", "error").text == ""
    screenshot(browser, tmp_path, "web_seed7.png")
    assert page_errors(browser) == []


@browser_test
def test_the_int8_student_runs_in_the_page_within_the_exports_gate(browser, site_url, reference, web_export):
    meta = json.loads((web_export[1] / "nerfgan-web.json").read_text())
    floor = meta["students"]["int8"]["gate"]["int8_min_psnr_vs_fp32"]
    browser.get(f"{site_url}/index.html?seed={SEED}&yaw={YAW:g}&pitch={PITCH:g}&precision=int8&threads=1")
    assert settle(browser) == "rendered", browser.find_element("id", "error").text
    got = frame(browser)
    assert "student_int8.onnx" in browser.find_element("id", "engine").text
    vs_fp32, python_vs_fp32 = psnr_db(got, reference["fp32"]), psnr_db(reference["int8"], reference["fp32"])
    print(f"int8 in the browser: {vs_fp32:.2f} dB against nerfgan-run's fp32 frame (gate {floor} dB; nerfgan-run "
          f"--precision int8: {python_vs_fp32:.2f} dB); max {max_diff(got, reference['int8'])} levels from "
          "nerfgan-run --precision int8 (ONNX Runtime Web's quantized kernels are not x86's)")
    assert vs_fp32 >= floor  # the export's INT8 gate, held in the browser
    assert vs_fp32 < 45  # and it is the INT8 file that ran, not the FP32 one
    assert page_errors(browser) == []


@browser_test
def test_dragging_the_frame_turns_the_object(browser, site_url):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(f"{site_url}/index.html?seed={SEED}")
    assert settle(browser) == "rendered"
    before = frame(browser)
    img = browser.find_element("id", "frame")
    frames = int(img.get_attribute("data-frames"))
    chain = ActionChains(browser).move_to_element(img).click_and_hold()
    for _ in range(10):  # left and down: the object turns left (camera to +yaw) and tips toward us (+pitch)
        chain.move_by_offset(-8, 3).pause(0.05)
    chain.release().perform()
    assert settle(browser, "Math.abs(Number(document.getElementById('frame').dataset.yaw) - 32) < 1.5") == "rendered"
    yaw, pitch = float(img.get_attribute("data-yaw")), float(img.get_attribute("data-pitch"))
    assert yaw == pytest.approx(32, abs=1.5) and pitch == pytest.approx(12, abs=1.5)
    assert int(img.get_attribute("data-frames")) > frames and max_diff(frame(browser), before) > 10
    assert f"yaw {yaw:.1f}°" in browser.find_element("id", "pose").text
    assert page_errors(browser) == []


@browser_test
def test_a_missing_onnx_file_shows_the_error_element(browser, web_export, tmp_path):
    from nerfgan.export.web import serving

    site = tmp_path / "site"
    shutil.copytree(web_export[1], site)
    (site / "student.onnx").unlink()
    with serving(site) as url:
        browser.get(url + "/index.html?seed=7")
        assert settle(browser) == "error"
        error = browser.find_element("id", "error")
        assert error.get_attribute("data-state") == "error"
        assert re.search(r"student\.onnx: HTTP 404", error.text), error.text
        assert not browser.find_element("id", "frame").get_attribute("src")
        browser.get(url + "/index.html?seed=7&pitch=95")  # a bad view in the URL: the same element, naming it
        assert settle(browser) == "error"
        assert browser.find_element("id", "error").text.startswith("pitch=95:")


@browser_test
def test_the_site_works_from_a_plain_python_http_server(browser, web_export, reference, tmp_path):
    site = web_export[1]
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                             str(site)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        first = lines.get(timeout=WAIT_S)  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = int(re.search(r"port (\d+)", first).group(1))
        browser.get(f"http://127.0.0.1:{port}/index.html?seed={SEED}&yaw={YAW:g}&pitch={PITCH:g}")
        assert settle(browser) == "rendered", browser.find_element("id", "error").text
        assert browser.find_element("tag name", "body").get_attribute("data-threads") == "1"  # not isolated
        assert "1 thread (not cross-origin isolated)" in browser.find_element("id", "engine").text
        assert max_diff(frame(browser), reference["fp32"]) <= 2
        assert page_errors(browser) == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@browser_test
def test_the_serve_viewer_renders_in_the_browser_when_toggled(browser, web_export, tmp_path):
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'nerfgan[serve]'")
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'nerfgan[serve]'")
    import nerfgan.runtime as nr
    from nerfgan.serve import create_app
    from nerfgan.serve.server import running

    with nr.load(web_export[0]) as g, running(create_app(g), timeout_s=WAIT_S) as url:
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(mode: str):
            def ok(d):
                return d.execute_script("""const img = document.getElementById('view');
                    return img.dataset.mode === arguments[0] && img.dataset.busy === '0' && img.complete
                        && img.naturalWidth > 0 || !!document.getElementById('error').textContent;""", mode)
            WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until(ok)
            assert browser.find_element("id", "error").text == ""
            return np.asarray(Image.open(io.BytesIO(base64.b64decode(browser.execute_script("""
                const img = document.getElementById('view'), c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                c.getContext('2d').drawImage(img, 0, 0);
                return c.toDataURL('image/png');""").split(",", 1)[1]))).convert("RGB"))

        browser.get(url + "/")
        server_frame = shown("server")  # server-side is the default
        toggle = browser.find_element("id", "client")
        WebDriverWait(browser, WAIT_S).until(lambda d: toggle.is_enabled())
        toggle.click()
        client_frame = shown("client")
        note = browser.find_element("id", "client-note").text
        print(f"serve viewer, seed 7 at 0,0: max |browser - server| {max_diff(client_frame, server_frame)} levels")
        assert max_diff(client_frame, server_frame) <= 2
        assert "in this browser: ONNX Runtime Web 1.31.1, WebAssembly SIMD" in note and "student.onnx" in note
        screenshot(browser, tmp_path, "serve_client_mode.png")
        toggle.click()  # and back to the server: its frame again, byte for byte
        assert max_diff(shown("server"), server_frame) == 0
        assert page_errors(browser) == []
