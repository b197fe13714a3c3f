// nerfgan viewer: drag the image to change yaw and pitch; every change asks /v1/render for a PNG, or, in the
// client-side mode ("render in this browser", or ?mode=client), renders it in this page with ONNX Runtime Web from
// the export's ONNX files (web/..., nerfgan.serve.client). Server-side stays the default, and the only mode for
// engines a browser cannot run (TensorRT plans, PyTorch checkpoints).
// At most one request is in flight: changes made meanwhile collapse into the latest one (stale poses are dropped).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const img = $("view"), seedBox = $("seed"), psiSlider = $("truncation"), clientBox = $("client");
  const DEG_PER_PX = 0.4;
  const SEED_MAX = 4294967295;
  let limits = { yaw: [-180, 180], pitch: [-89, 89] };
  let yaw = 0, pitch = 0;
  let wanted = null, inFlight = false, shown = null, frames = [], drag = null;
  let serverEngine = "", webMeta = null, client = null;  // client: {renderer, styles} once the browser can render

  const clamp = (v, [lo, hi]) => Math.min(hi, Math.max(lo, v));
  const showError = (text) => { $("error").textContent = text || ""; };

  function seed() {
    const s = Number(seedBox.value);
    return Number.isInteger(s) && s >= 0 && s <= SEED_MAX ? s : null;
  }

  function request() {
    $("pose").textContent = `yaw ${yaw.toFixed(1)}°, pitch ${pitch.toFixed(1)}°`;
    const s = seed();
    if (s === null) { showError(`seed: an integer in 0..${SEED_MAX}`); return; }
    wanted = { seed: s, yaw: yaw, pitch: pitch, truncation: Number(psiSlider.value) };
    pump();
  }

  async function pump() {
    if (inFlight || wanted === null) return;
    const body = wanted, start = performance.now();
    wanted = null;
    inFlight = true;
    img.dataset.busy = "1";
    let retryMs = 0;
    try {
      if (clientBox.checked && client !== null) {
        show(await renderHere(body), body, performance.now() - start);
        return;
      }
      const r = await fetch("v1/render", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      if (r.ok) {
        show(await r.blob(), body, performance.now() - start);
      } else {
        const e = await r.json().catch(() => ({ error: r.statusText }));
        showError(`${r.status}: ${e.error}`);
        if (r.status === 503) {
          retryMs = 1000 * Number(r.headers.get("retry-after") || 1);
          if (wanted === null) wanted = body;
        }
      }
    } catch (e) {
      showError(clientBox.checked && client !== null ? `rendering in this browser failed (${e.message || e})`
        : `no answer from the server (${e.message})`);
    } finally {
      inFlight = false;
      if (retryMs) setTimeout(pump, retryMs); else pump();
      if (!inFlight) img.dataset.busy = "0";  // nothing pending: the shown frame is the latest pose's
    }
  }

  function show(blob, body, ms) {
    const url = URL.createObjectURL(blob);
    img.src = url;
    if (shown) URL.revokeObjectURL(shown);  // the element has let go of it: free the previous frame
    shown = url;
    img.dataset.mode = clientBox.checked && client !== null ? "client" : "server";
    img.dataset.yaw = body.yaw;
    img.dataset.pitch = body.pitch;
    img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
    showError("");
    const now = performance.now();
    frames = frames.filter((t) => now - t < 2000).concat([now]);
    const span = (frames[frames.length - 1] - frames[0]) / 1000;
    $("fps").textContent = frames.length > 1 && span > 0 ? `${((frames.length - 1) / span).toFixed(1)} fps` : "– fps";
    $("latency").textContent = `${ms.toFixed(0)} ms`;
  }

  img.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, yaw: yaw, pitch: pitch };
    img.setPointerCapture(e.pointerId);
    img.classList.add("dragging");
    e.preventDefault();
  });
  img.addEventListener("pointermove", (e) => {
    if (!drag) return;
    // dragging right turns the object right: the camera moves to the image's left (negative yaw);
    // dragging down tips the object's top toward the viewer: the camera moves up (positive pitch)
    yaw = clamp(drag.yaw - (e.clientX - drag.x) * DEG_PER_PX, limits.yaw);
    pitch = clamp(drag.pitch + (e.clientY - drag.y) * DEG_PER_PX, limits.pitch);
    request();
  });
  const endDrag = () => { drag = null; img.classList.remove("dragging"); };
  img.addEventListener("pointerup", endDrag);
  img.addEventListener("pointercancel", endDrag);

  seedBox.addEventListener("input", request);
  psiSlider.addEventListener("input", () => {
    $("psi").textContent = Number(psiSlider.value).toFixed(2);
    request();
  });
  $("random").addEventListener("click", () => {
    seedBox.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
    request();
  });

  async function renderHere(body) {  // one frame in this page: seed -> w (mapping.onnx), w and pose -> image
    const key = `${body.seed}/${body.truncation}`;
    if (!client.styles.has(key)) {
      if (client.styles.size > 64) client.styles.clear();
      client.styles.set(key, await client.renderer.style(body.seed, body.truncation));
    }
    const { rgba } = await client.renderer.render(client.styles.get(key), body.yaw, body.pitch);
    const size = client.renderer.size, canvas = document.createElement("canvas");
    canvas.width = canvas.height = size;
    canvas.getContext("2d").putImageData(new ImageData(rgba, size, size), 0, 0);
    return await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  async function startClient() {  // load ONNX Runtime Web and the export's files, once
    if (client !== null) return;
    $("client-note").textContent = "loading ONNX Runtime Web and the model files…";
    const base = new URL("web/", document.baseURI);
    const [lib, ort] = await Promise.all([import(new URL("nerfgan-web.js", base).href),
      import(new URL("ort/ort.wasm.bundle.min.mjs", base).href)]);
    const renderer = await lib.createRenderer({ ort, meta: webMeta, base, precision: webMeta.served_precision });
    client = { renderer, styles: new Map() };
    const threads = `${renderer.threads} thread${renderer.threads > 1 ? "s" : ""}`;
    $("client-note").textContent = `in this browser: ONNX Runtime Web ${webMeta.onnxruntime_web.version}, `
      + `WebAssembly SIMD, ${threads}, ${renderer.student}` + (renderer.note ? ` (${renderer.note})` : "");
  }

  clientBox.addEventListener("change", async () => {
    if (clientBox.checked) {
      try {
        await startClient();
      } catch (e) {
        clientBox.checked = false;
        $("client-note").textContent = "";
        showError(`cannot render in this browser: ${e.message || e}`);
        return;
      }
    }
    $("engine").textContent = clientBox.checked ? `${serverEngine} · rendering in this browser` : serverEngine;
    request();
  });

  fetch("v1/info").then((r) => r.json()).then((info) => {
    const p = info.pose_limits;
    const inner = p.pitch_exclusive ? 1 : 0;  // a pole is out of bounds: stay one degree inside
    limits = { yaw: p.yaw, pitch: [p.pitch[0] + inner, p.pitch[1] - inner] };
    serverEngine = `${info.backend}, ${info.precision}, ${info.resolution} px`;
    $("engine").textContent = serverEngine;
    img.width = img.height = info.resolution;
    if (!info.seeds) { showError("this engine has no mapping: seeds cannot be rendered"); return; }
    request();
    return fetch("web/nerfgan-web.json").then(async (r) => {
      const answer = await r.json().catch(() => ({ error: r.statusText }));
      if (!r.ok) {  // an engine the browser cannot run: the toggle stays off, saying why
        clientBox.parentElement.title = answer.error;
        $("client-note").textContent = `server-side only: ${answer.error}`;
        return;
      }
      webMeta = answer;
      clientBox.disabled = false;
      clientBox.parentElement.title = "your browser renders every frame (ONNX Runtime Web, WebAssembly)";
      if (new URLSearchParams(location.search).get("mode") === "client") {
        clientBox.checked = true;
        clientBox.dispatchEvent(new Event("change"));
      }
    });
  }).catch((e) => showError(`cannot read /v1/info (${e.message})`));
})();
