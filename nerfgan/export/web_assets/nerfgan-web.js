// nerfgan in the browser: a seed's z, the 25-value camera and the student's frame, computed exactly as nerfgan's
// Python runtime computes them (nerfgan.sampling.z_from_seed, nerfgan.camera.pose, nerfgan.io.to_uint8), then run
// through ONNX Runtime Web. Shared by the static site (`nerfgan web`) and the client-side mode of `nerfgan serve`.
//
// z: nerfgan draws a seed's z with numpy's legacy generator, RandomState(seed).randn(z_dim) cast to float32:
// MT19937 seeded with the 32-bit seed, doubles of 53 random bits, and the polar (Marsaglia) Gaussian method, which
// hands out its pair second value first. The same steps in IEEE double arithmetic give the same numbers here, for
// every seed in [0, 2**32) (tests/export/test_web_browser.py compares them with numpy in Chromium).
"use strict";

// --- numpy.random.RandomState(seed).randn ---------------------------------------------------------------
const N = 624, M = 397;

export class MT19937 {
  constructor(seed) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed: an integer in [0, 2**32), got ${seed}`);
    this.mt = new Uint32Array(N);
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < N; i++) {
      const p = this.mt[i - 1] ^ (this.mt[i - 1] >>> 30);
      this.mt[i] = (Math.imul(1812433253, p) + i) >>> 0;  // init_genrand, modulo 2**32
    }
    this.pos = N;
    this.gauss = null;  // the polar method's second value, handed out on the next call
  }

  _twist() {
    const mt = this.mt;
    for (let i = 0; i < N; i++) {
      const y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff);
      mt[i] = mt[(i + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.pos = 0;
  }

  uint32() {
    if (this.pos >= N) this._twist();
    let y = this.mt[this.pos++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  double() {  // [0, 1) with 53 random bits: (a * 2**26 + b) / 2**53
    const a = this.uint32() >>> 5, b = this.uint32() >>> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }

  gaussian() {
    if (this.gauss !== null) {
      const g = this.gauss;
      this.gauss = null;
      return g;
    }
    let x1, x2, r2;
    do {
      x1 = 2.0 * this.double() - 1.0;
      x2 = 2.0 * this.double() - 1.0;
      r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 === 0.0);
    const f = Math.sqrt(-2.0 * Math.log(r2) / r2);
    this.gauss = f * x1;
    return f * x2;
  }
}

/** z (n float32 values) of a seed: numpy's RandomState(seed).randn(n).astype(float32), as nerfgan draws it. */
export function latent(seed, n) {
  const rng = new MT19937(seed), z = new Float32Array(n);
  for (let i = 0; i < n; i++) z[i] = rng.gaussian();
  return z;
}

// --- nerfgan.camera.pose ---------------------------------------------------------------------------------
const PITCH_EPS = 1e-5;
const f32 = Math.fround;

function normalize(v) {  // as torch.nn.functional.normalize: divide by max(norm, 1e-12)
  const n = Math.max(Math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), 1e-12);
  return [v[0] / n, v[1] / n, v[2] / n];
}

const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

/** cam2world (16 values, row-major) of nerfgan.camera.look_at: absolute angles in radians. */
function lookAt(yaw, pitch, radius, target) {
  const theta = f32(yaw), r = f32(radius), t = target.map(f32);
  const p = Math.min(Math.max(f32(pitch), PITCH_EPS), Math.PI - PITCH_EPS) / Math.PI;
  const phi = Math.acos(1.0 - 2.0 * p);
  const origin = [r * Math.sin(phi) * Math.cos(Math.PI - theta), r * Math.cos(phi),
    r * Math.sin(phi) * Math.sin(Math.PI - theta)];
  const forward = normalize([t[0] - origin[0], t[1] - origin[1], t[2] - origin[2]]);
  const right = normalize(cross([0.0, 1.0, 0.0], forward)).map((x) => -x);
  const down = normalize(cross(forward, right));
  return [right[0], down[0], forward[0], origin[0],
    right[1], down[1], forward[1], origin[1],
    right[2], down[2], forward[2], origin[2],
    0, 0, 0, 1];
}

/** The 25-value camera (float32) of a pose: yaw and pitch in degrees from the frontal view, as nerfgan.camera.pose. */
export function camera(yawDeg, pitchDeg, radius, pivot, focal) {
  if (!Number.isFinite(yawDeg) || Math.abs(yawDeg) > 180) throw new RangeError(`yaw: within [-180, 180] degrees, got ${yawDeg}`);
  if (!Number.isFinite(pitchDeg) || Math.abs(pitchDeg) >= 90) throw new RangeError(`pitch: strictly between -90 and 90 degrees, got ${pitchDeg}`);
  const yaw = Math.PI / 2 + yawDeg * (Math.PI / 180), pitch = Math.PI / 2 - pitchDeg * (Math.PI / 180);
  return Float32Array.from([...lookAt(yaw, pitch, radius, pivot), focal, 0, 0.5, 0, focal, 0.5, 0, 0, 1]);
}

/** The conditioning camera of the mapping: the frontal camera (nerfgan.camera.frontal). */
export function frontal(radius, pivot, focal) {
  return Float32Array.from([...lookAt(Math.PI / 2, Math.PI / 2, radius, pivot), focal, 0, 0.5, 0, focal, 0.5, 0, 0, 1]);
}

// --- nerfgan.io.to_uint8 ----------------------------------------------------------------------------------
/** RGBA bytes of a (3, H, W) float image about [-1, 1]: clip(rint(x * 127.5 + 128)) in float32, half to even. */
export function toRGBA(chw, size) {
  const plane = size * size, out = new Uint8ClampedArray(plane * 4);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const t = f32(f32(chw[c * plane + i] * 127.5) + 128.0);
      let r = Math.round(t);
      if (r - t === 0.5 && r % 2 !== 0) r -= 1;  // numpy's rint rounds halves to even, Math.round up
      out[i * 4 + c] = r;  // Uint8ClampedArray clips to [0, 255]
    }
  }
  for (let i = 0; i < plane; i++) out[i * 4 + 3] = 255;
  return out;
}

// --- the renderer -----------------------------------------------------------------------------------------
/** An error whose message is meant for the page's error line. */
export class PageError extends Error {}

async function digest(buffer) {
  if (!globalThis.crypto || !crypto.subtle) return null;  // outside a secure context: the size is checked only
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bytes of one listed model file, checked against the site's record (size, and sha256 where the page can). */
export async function fetchModel(base, entry) {
  let r;
  try {
    r = await fetch(new URL(entry.file, base));
  } catch (e) {
    throw new PageError(`${entry.file}: cannot fetch it (${e.message})`);
  }
  if (!r.ok) throw new PageError(`${entry.file}: HTTP ${r.status} ${r.statusText} (missing from the site? write it again with nerfgan web)`);
  const buffer = await r.arrayBuffer();
  if (buffer.byteLength !== entry.bytes) {
    throw new PageError(`${entry.file}: ${buffer.byteLength} bytes, but nerfgan-web.json records ${entry.bytes}; write the site again`);
  }
  const sha = await digest(buffer);
  if (sha !== null && sha !== entry.sha256) {
    throw new PageError(`${entry.file}: sha256 ${sha.slice(0, 16)}... differs from the ${entry.sha256.slice(0, 16)}... nerfgan-web.json records; write the site again`);
  }
  return new Uint8Array(buffer);
}

/** Whether this browser offers WebGPU: navigator.gpu gives an adapter. */
export async function webgpuOffered() {
  if (typeof navigator === "undefined" || !navigator.gpu) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch (e) {
    return false;
  }
}

/** Which execution provider runs: "wasm" (the build this page carries), with a visible note where WebGPU is
 * offered; ep=webgpu asked for explicitly is refused with the reason. */
export async function chooseProvider(asked) {
  if (asked && asked !== "wasm" && asked !== "webgpu") throw new PageError(`ep=${asked}: choose wasm or webgpu`);
  if (asked === "webgpu") {
    throw new PageError("ep=webgpu: this page carries ONNX Runtime Web's WebAssembly build only (its WebGPU build "
      + "would add 29 MB); use ep=wasm");
  }
  const note = await webgpuOffered()
    ? "this browser offers WebGPU; the page carries ONNX Runtime Web's WebAssembly build only, so it renders on the CPU"
    : "";
  return { ep: "wasm", note };
}

/**
 * Load the mapping and a student from ``base`` (a URL folder holding them) as ``meta`` (nerfgan-web.json) lists
 * them. ``ort``: the onnxruntime-web module. ``threads``: WebAssembly threads (more than 1 only where the page is
 * cross-origin isolated). Returns {style(seed, psi) -> w, render(w, yaw, pitch) -> {rgba, ms}, ...}.
 */
export async function createRenderer({ ort, meta, base, precision = "fp32", threads = null, ep = null }) {
  const student = meta.students[precision];
  if (!student) {
    throw new PageError(`precision=${precision}: this site has ${Object.keys(meta.students).join(", ")}`);
  }
  const isolated = !!globalThis.crossOriginIsolated;
  const cores = (typeof navigator !== "undefined" && navigator.hardwareConcurrency) || 1;
  let n = threads === null ? (isolated ? Math.min(4, cores) : 1) : threads;
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new PageError(`threads: an integer in 1..64, got ${threads}`);
  if (n > 1 && !isolated) {
    throw new PageError(`threads=${n}: WebAssembly threads need a cross-origin isolated page (served with `
      + "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp); use threads=1");
  }
  const provider = await chooseProvider(ep);
  ort.env.wasm.numThreads = n;
  ort.env.wasm.simd = true;
  ort.env.wasm.proxy = false;
  const [mapBytes, studentBytes] = await Promise.all([fetchModel(base, meta.mapping), fetchModel(base, student)]);
  const options = { executionProviders: [provider.ep], graphOptimizationLevel: "all" };
  let mapping, net;
  try {
    mapping = await ort.InferenceSession.create(mapBytes, options);
  } catch (e) {
    throw new PageError(`${meta.mapping.file}: ONNX Runtime Web cannot load it (${e.message || e})`);
  }
  try {
    net = await ort.InferenceSession.create(studentBytes, options);
  } catch (e) {
    throw new PageError(`${student.file}: ONNX Runtime Web cannot load it (${e.message || e})`);
  }
  const m = meta.model, cam = m.camera, size = m.resolution;
  const cCond = frontal(cam.radius, cam.pivot, cam.focal);
  return {
    ep: provider.ep, note: provider.note, threads: n, isolated, precision, student: student.file,
    size, zDim: m.z_dim, wDim: m.w_dim,
    async style(seed, psi) {
      const z = latent(seed, m.z_dim);
      const out = await mapping.run({
        z: new ort.Tensor("float32", z, [1, m.z_dim]),
        c_cond: new ort.Tensor("float32", cCond, [1, 25]),
        psi: new ort.Tensor("float32", Float32Array.of(psi), [1]),
      });
      return out.w.data;
    },
    async render(w, yaw, pitch) {
      const feeds = { w: new ort.Tensor("float32", w, [1, m.w_dim]) };
      if (net.inputNames.includes("c")) {
        feeds.c = new ort.Tensor("float32", camera(yaw, pitch, cam.radius, cam.pivot, cam.focal), [1, 25]);
      }
      const start = performance.now();
      const out = await net.run(feeds, ["image"]);
      const ms = performance.now() - start;
      return { rgba: toRGBA(out.image.data, size), ms, image: out.image.data };
    },
    async release() {
      await mapping.release();
      await net.release();
    },
  };
}
