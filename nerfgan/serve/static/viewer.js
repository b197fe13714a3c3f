// nerfgan viewer: drag the image to change yaw and pitch; every change asks /v1/render for a PNG.
// At most one request is in flight: changes made meanwhile collapse into the latest one (stale poses are dropped).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const img = $("view"), seedBox = $("seed"), psiSlider = $("truncation");
  const DEG_PER_PX = 0.4;
  const SEED_MAX = 4294967295;
  let limits = { yaw: [-180, 180], pitch: [-89, 89] };
  let yaw = 0, pitch = 0;
  let wanted = null, inFlight = false, shown = null, frames = [], drag = null;

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
      showError(`no answer from the server (${e.message})`);
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

  fetch("v1/info").then((r) => r.json()).then((info) => {
    const p = info.pose_limits;
    const inner = p.pitch_exclusive ? 1 : 0;  // a pole is out of bounds: stay one degree inside
    limits = { yaw: p.yaw, pitch: [p.pitch[0] + inner, p.pitch[1] - inner] };
    $("engine").textContent = `${info.backend}, ${info.precision}, ${info.resolution} px`;
    img.width = img.height = info.resolution;
    if (!info.seeds) { showError("this engine has no mapping: seeds cannot be rendered"); return; }
    request();
  }).catch((e) => showError(`cannot read /v1/info (${e.message})`));
})();
