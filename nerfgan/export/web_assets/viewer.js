// The static site's viewer: maps the seed to w (mapping.onnx) and renders the student (student*.onnx) in this
// page with ONNX Runtime Web. Drag the image to turn the object. At most one render runs at a time: changes made
// meanwhile collapse into the latest one.
//
// Page contract: index.html?seed=7&yaw=20&pitch=-5[&truncation=0.7][&precision=fp32|int8][&threads=N][&ep=wasm]
// renders that view; when the latest frame is shown, document.body.dataset.state is "rendered" and <img id="frame">
// holds it as a PNG data URL (its dataset: seed, yaw, pitch, truncation, frames). An error sets
// document.body.dataset.state = "error" and puts one line into #error, whose data-state is then "error".
// ?bench=N renders N frames after the first (yaw sweeping) and records frames/s in document.body.dataset.bench.
import { PageError, createRenderer } from "./nerfgan-web.js";

const $ = (id) => document.getElementById(id);
const img = $("frame"), seedBox = $("seed"), psiSlider = $("truncation"), precisionBox = $("precision");
const DEG_PER_PX = 0.4, SEED_MAX = 4294967295;
const params = new URLSearchParams(location.search);
const canvas = document.createElement("canvas");
let limits = { yaw: [-180, 180], pitch: [-89, 89] };
let renderer = null, wanted = null, busy = false, drag = null, frames = [], styles = new Map();
const view = { seed: 7, yaw: 0, pitch: 0, truncation: 0.7 };

const clamp = (v, [lo, hi]) => Math.min(hi, Math.max(lo, v));

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.dataset.state = "error";
  document.body.dataset.state = "error";
}

function clearError() {
  const box = $("error");
  box.textContent = "";
  delete box.dataset.state;
}

function number(name, fallback, check) {
  if (!params.has(name)) return fallback;
  const v = Number(params.get(name));
  if (params.get(name).trim() === "" || !check(v)) throw new PageError(`${name}=${params.get(name)}: ${check.what}`);
  return v;
}

const withWhat = (f, what) => Object.assign(f, { what });
const isSeed = withWhat((v) => Number.isInteger(v) && v >= 0 && v <= SEED_MAX, `an integer in 0..${SEED_MAX}`);
const isYaw = withWhat((v) => Number.isFinite(v) && Math.abs(v) <= 180, "degrees within [-180, 180]");
const isPitch = withWhat((v) => Number.isFinite(v) && Math.abs(v) < 90, "degrees strictly between -90 and 90");
const isPsi = withWhat((v) => Number.isFinite(v) && v >= 0 && v <= 1, "a number in [0, 1]");
const isCount = withWhat((v) => Number.isInteger(v) && v >= 1 && v <= 10000, "an integer in 1..10000");

function request() {
  $("pose").textContent = `yaw ${view.yaw.toFixed(1)}°, pitch ${view.pitch.toFixed(1)}°`;
  const s = Number(seedBox.value);
  if (seedBox.value.trim() === "" || !isSeed(s)) { showError(`seed: ${isSeed.what}`); return; }
  view.seed = s;
  view.truncation = Number(psiSlider.value);
  wanted = { ...view };
  document.body.dataset.state = "rendering";
  pump();
}

async function style(seed, psi) {
  const key = `${seed}/${psi}`;
  if (!styles.has(key)) {
    if (styles.size > 64) styles.clear();
    styles.set(key, await renderer.style(seed, psi));
  }
  return styles.get(key);
}

function paint(rgba) {
  canvas.width = canvas.height = renderer.size;
  canvas.getContext("2d").putImageData(new ImageData(rgba, renderer.size, renderer.size), 0, 0);
}

async function pump() {
  if (busy || wanted === null || renderer === null) return;
  const job = wanted;
  wanted = null;
  busy = true;
  try {
    const w = await style(job.seed, job.truncation);
    const { rgba, ms } = await renderer.render(w, job.yaw, job.pitch);
    paint(rgba);
    img.src = canvas.toDataURL("image/png");
    await img.decode();
    Object.assign(img.dataset, { seed: job.seed, yaw: job.yaw, pitch: job.pitch, truncation: job.truncation,
      precision: renderer.precision, frames: String(Number(img.dataset.frames || 0) + 1) });
    const now = performance.now();
    frames = frames.filter((t) => now - t < 2000).concat([now]);
    const span = (frames[frames.length - 1] - frames[0]) / 1000;
    $("fps").textContent = frames.length > 1 && span > 0 ? `${((frames.length - 1) / span).toFixed(1)} fps` : "– fps";
    $("latency").textContent = `${ms.toFixed(0)} ms`;
    clearError();
  } catch (e) {
    showError(e instanceof PageError ? e.message : `render failed: ${e.message || e}`);
    busy = false;
    return;
  }
  busy = false;
  if (wanted !== null) pump();
  else document.body.dataset.state = "rendered";
}

async function bench(n) {  // n frames back to back, yaw sweeping: frames/s of the student as this page runs it
  const w = await style(view.seed, view.truncation);
  const times = [];
  const start = performance.now();
  for (let k = 0; k < n; k++) {
    const { rgba, ms } = await renderer.render(w, -30 + 60 * (k / Math.max(1, n - 1)), view.pitch);
    paint(rgba);
    times.push(ms);
  }
  const wall = (performance.now() - start) / 1000;
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  const result = { frames: n, seconds: wall, fps: n / wall, median_ms: median, threads: renderer.threads,
    ep: renderer.ep, precision: renderer.precision, isolated: renderer.isolated };
  $("fps").textContent = `${result.fps.toFixed(1)} fps (${n} frames)`;
  return result;
}

img.addEventListener("pointerdown", (e) => {
  drag = { x: e.clientX, y: e.clientY, yaw: view.yaw, pitch: view.pitch };
  img.setPointerCapture(e.pointerId);
  img.classList.add("dragging");
  e.preventDefault();
});
img.addEventListener("pointermove", (e) => {
  if (!drag) return;
  // dragging right turns the object right: the camera moves to the image's left (negative yaw);
  // dragging down tips the object's top toward the viewer: the camera moves up (positive pitch)
  view.yaw = clamp(drag.yaw - (e.clientX - drag.x) * DEG_PER_PX, limits.yaw);
  view.pitch = clamp(drag.pitch + (e.clientY - drag.y) * DEG_PER_PX, limits.pitch);
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
precisionBox.addEventListener("change", () => {  // another student: a new page with the same view
  const next = new URLSearchParams({ seed: view.seed, yaw: view.yaw, pitch: view.pitch, truncation: view.truncation,
    precision: precisionBox.value });
  for (const k of ["threads", "ep"]) if (params.has(k)) next.set(k, params.get(k));
  location.search = next.toString();
});
window.addEventListener("unhandledrejection", (e) => showError(`error: ${e.reason && e.reason.message || e.reason}`));

async function main() {
  const r = await fetch("nerfgan-web.json").catch((e) => { throw new PageError(`nerfgan-web.json: cannot fetch it (${e.message})`); });
  if (!r.ok) throw new PageError(`nerfgan-web.json: HTTP ${r.status} (not a nerfgan web site?)`);
  const meta = await r.json();
  if (meta.format !== "nerfgan-web-1") throw new PageError("nerfgan-web.json: not a nerfgan web site description");
  const p = meta.pose_limits;
  limits = { yaw: p.yaw, pitch: [p.pitch[0] + 1, p.pitch[1] - 1] };  // a pole is out of bounds: one degree inside
  view.seed = number("seed", meta.defaults.seed, isSeed);
  view.yaw = number("yaw", 0, isYaw);
  view.pitch = number("pitch", 0, isPitch);
  view.truncation = number("truncation", meta.defaults.truncation, isPsi);
  const precision = params.get("precision") || "fp32";
  const threads = params.has("threads") ? number("threads", 1, isCount) : null;
  for (const name of Object.keys(meta.students)) precisionBox.add(new Option(`${name} (${meta.students[name].file})`, name));
  precisionBox.value = precision;
  seedBox.value = String(view.seed);
  psiSlider.value = String(view.truncation);
  $("psi").textContent = view.truncation.toFixed(2);
  let ort;
  try {
    ort = await import("./ort/ort.wasm.bundle.min.mjs");
  } catch (e) {
    throw new PageError(`ort/ort.wasm.bundle.min.mjs: cannot load ONNX Runtime Web (${e.message})`);
  }
  renderer = await createRenderer({ ort, meta, base: new URL(".", location.href), precision, threads,
    ep: params.get("ep") });
  img.width = img.height = renderer.size;
  const threading = renderer.threads > 1 ? `${renderer.threads} threads (cross-origin isolated)`
    : `1 thread${renderer.isolated ? "" : " (not cross-origin isolated)"}`;
  $("engine").textContent = `ONNX Runtime Web ${meta.onnxruntime_web.version} · ${renderer.ep === "wasm" ? "WebAssembly SIMD" : renderer.ep} · `
    + `${threading} · ${renderer.student} · ${renderer.size} px`;
  $("note").textContent = renderer.note;
  Object.assign(document.body.dataset, { ep: renderer.ep, threads: String(renderer.threads), precision });
  if (params.has("bench")) {
    const n = number("bench", 20, isCount);
    await renderer.render(await style(view.seed, view.truncation), view.yaw, view.pitch);  // warm-up
    document.body.dataset.bench = JSON.stringify(await bench(n));
  }
  request();
}

main().catch((e) => showError(e instanceof PageError ? e.message : `error: ${e.message || e}`));
