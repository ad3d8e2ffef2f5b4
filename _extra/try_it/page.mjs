// The "Try it" page (book/try_it.md): the book's own networks, run in the reader's browser by
// onnxruntime-web (served by the site, scripts/fetch_onnxruntime.sh), with the sampler of sampler.mjs.
// The models and the numbers come from models/ (scripts/export_onnx.py). Nothing is fetched from
// another host. window.tryIt is the page's test hook (book_tests/test_try_it.py): it runs the
// sampler on injected noise and returns the trajectory, and says whether the page got several threads.
// Several threads need a cross-origin-isolated page, which a static site is not; the page's service
// worker (../try_it_isolation.js) makes it one, at the cost of one reload on the first visit.

import { METHODS, gaussian, iterateSampler } from "./sampler.mjs";

const BASE = new URL("./", import.meta.url);
const BATCH = 16, COLUMNS = 4, SIZE = 32;
const root = document.getElementById("dh-try");
const $ = (name) => root.querySelector(`[data-role="${name}"]`);
const status = (text) => { $("status").textContent = text; };

// --- can this browser run it? ------------------------------------------------------------------
// A module of one function returning a v128 constant: valid only where WebAssembly has SIMD, which
// onnxruntime-web's builds need (every current browser since 2021).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);

function whyNot() {
  if (typeof WebAssembly !== "object" || typeof WebAssembly.validate !== "function") {
    return "This browser has no WebAssembly (or it is switched off), which the page needs to run the network. The figures of the chapters work without it.";
  }
  if (!WebAssembly.validate(SIMD_PROBE)) {
    return "This browser's WebAssembly lacks SIMD, which the network runtime needs (Chrome or Edge 91+, Firefox 89+, Safari 16.4+).";
  }
  if (location.protocol === "file:") {
    return "Opened as a file, the browser will not load the network: serve the built book, e.g. `python -m http.server -d _build/html`, and open http://localhost:8000/book/try_it.html.";
  }
  return null;
}

// --- several threads: cross-origin isolation through the page's service worker --------------------
// WebAssembly threads share memory (SharedArrayBuffer), which a browser allows only in a page that is
// cross-origin isolated: served with the COOP and COEP headers. The site cannot send them, so the page
// registers a service worker that adds them to the page's document and to the runtime's worker scripts
// (../try_it_isolation.js, at the site's root; scopes "book/try_it" and "try_it/", nothing else), and
// reloads once so that the document comes through it. Where that cannot happen (no service worker:
// a file, plain http from another machine, some private windows; or still not isolated after the one
// reload) the page runs on one thread and says why.
const SITE_ROOT = new URL("../", BASE);           // try_it/ sits at the site's root
const ISOLATION_WORKER = new URL("try_it_isolation.js", SITE_ROOT);
const RELOADED = "dh-try-isolation-reload";        // sessionStorage: this tab has reloaded once for it
const WORKER_START_SECONDS = 10;
let isolation = { isolated: false, why: "" };

/** The registration's worker, once it is active (or activating: fetches wait for it); rejects if it fails. */
function activeWorker(registration) {
  if (registration.active) return Promise.resolve(registration.active);
  const worker = registration.installing ?? registration.waiting;
  if (!worker) return Promise.reject(new Error("no worker installed"));
  return new Promise((resolve, reject) => {
    const check = () => {
      if (worker.state === "activating" || worker.state === "activated") resolve(worker);
      else if (worker.state === "redundant") reject(new Error("its installation failed"));
    };
    worker.addEventListener("statechange", check);
    check();
  });
}

function sessionFlag(action) {
  try {
    if (action === "get") return sessionStorage.getItem(RELOADED) !== null;
    if (action === "set") sessionStorage.setItem(RELOADED, "1"); else sessionStorage.removeItem(RELOADED);
    return true;
  } catch { return null; }                            // storage refused (some private modes)
}

/** Register the worker for each scope and wait until it is active, within WORKER_START_SECONDS. */
async function registerWorker(scopes) {
  const registering = (async () => {
    const registrations = await Promise.all(scopes.map((scope) => navigator.serviceWorker.register(ISOLATION_WORKER.href, { scope })));
    if (registrations.some((r) => !r)) throw new Error("registration refused");
    await Promise.all(registrations.map(activeWorker));
  })();
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`not active after ${WORKER_START_SECONDS} s`)), 1000 * WORKER_START_SECONDS));
  await Promise.race([registering, timeout]);
}

/** Resolves to {isolated, why}; or, when the page must reload once to become isolated, reloads it and never
 *  resolves (so nothing else starts on the page that is going away). */
async function isolate() {
  const pageScope = location.pathname.replace(/\.html$/, ""), runtimeScope = BASE.pathname;
  if (self.crossOriginIsolated) {
    sessionFlag("remove");                            // done: a later visit in this tab may reload once again
    if (!navigator.serviceWorker?.controller) return { isolated: true, why: "" };  // the server sent the headers itself
    // isolated by the worker: the runtime's worker scripts need its headers as well (its second scope)
    const existing = await navigator.serviceWorker.getRegistration(BASE.href).catch(() => null);
    if (!(existing?.active && existing.scope === BASE.href)) {
      try { await registerWorker([runtimeScope]); } catch (error) {
        return { isolated: false, why: `the page's service worker could not cover the runtime's folder (${error.message})` };
      }
    }
    return { isolated: true, why: "" };
  }
  if (!("serviceWorker" in navigator) || !self.isSecureContext) {
    return { isolated: false, why: "no service worker is available here (they need https or localhost, and some private windows refuse them), so the page is not cross-origin isolated" };
  }
  try { await registerWorker([pageScope, runtimeScope]); } catch (error) {
    return { isolated: false, why: `the page's service worker could not start (${error.message}), so the page is not cross-origin isolated` };
  }
  const reloadedOnce = sessionFlag("get");
  if (reloadedOnce === null) return { isolated: false, why: "the page cannot note its one reload (no session storage), so it does not reload to become cross-origin isolated" };
  if (reloadedOnce) return { isolated: false, why: "the page reloaded once through its service worker and is still not cross-origin isolated" };
  sessionFlag("set");
  if (document.readyState !== "complete") await new Promise((resolve) => addEventListener("load", resolve, { once: true }));
  status("Reloading once, through the page's service worker, to run on several threads...");
  location.reload();
  return new Promise(() => {});
}

// --- the runtime and the models ---------------------------------------------------------------
let ort = null, numbers = null, card = null, backend = "wasm";
const sessions = {};

async function loadRuntime(useWebGPU) {
  backend = useWebGPU ? "webgpu" : "wasm";
  ort = await import(new URL(useWebGPU ? "ort/ort.webgpu.min.mjs" : "ort/ort.wasm.min.mjs", BASE).href);
  ort.env.wasm.wasmPaths = new URL("ort/", BASE).href;
  // several threads need a cross-origin-isolated page (SharedArrayBuffer): isolate() above
  ort.env.wasm.numThreads = isolation.isolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.logLevel = "error";
}

async function session(name) {
  if (!sessions[name]) {
    const url = new URL(`models/${card.models[name].file}`, BASE).href;
    sessions[name] = ort.InferenceSession.create(url, { executionProviders: [backend], graphOptimizationLevel: "all" });
  }
  return sessions[name];
}

/** The ε-network of `name` as the sampler's network(x, t, labels) → Float32Array. */
function network(name, counter) {
  return async (x, t, labels) => {
    const s = await session(name), batch = x.length / (SIZE * SIZE);
    const feeds = {
      x_t: new ort.Tensor("float32", x, [batch, 1, SIZE, SIZE]),
      t: new ort.Tensor("int64", new BigInt64Array(batch).fill(BigInt(t)), [batch]),
    };
    if (labels !== null) feeds.y = new ort.Tensor("int64", BigInt64Array.from(labels, BigInt), [batch]);
    const started = performance.now();
    const out = await s.run(feeds);
    counter.seconds += (performance.now() - started) / 1000;
    counter.calls += 1;
    return out.eps_hat.data;
  };
}

/** The classifier's reading of final images in [-1, 1]: [{digit, probability}] per image. */
async function classify(x) {
  const s = await session("classifier"), batch = x.length / (SIZE * SIZE);
  const logits = (await s.run({ x: new ort.Tensor("float32", x, [batch, 1, SIZE, SIZE]) })).logits.data;
  const readings = [];
  for (let b = 0; b < batch; b++) {
    const row = Array.from(logits.slice(10 * b, 10 * b + 10)), top = Math.max(...row);
    const weights = row.map((v) => Math.exp(v - top)), total = weights.reduce((a, v) => a + v, 0);
    const digit = row.indexOf(top);
    readings.push({ digit, probability: weights[digit] / total });
  }
  return readings;
}

// --- drawing ------------------------------------------------------------------------------------
function draw(canvas, x) {
  const context = canvas.getContext("2d"), rows = Math.ceil(BATCH / COLUMNS);
  const image = context.createImageData(COLUMNS * SIZE, rows * SIZE);
  for (let b = 0; b < BATCH; b++) {
    const ox = (b % COLUMNS) * SIZE, oy = Math.floor(b / COLUMNS) * SIZE;
    for (let i = 0; i < SIZE * SIZE; i++) {
      const value = Math.round((Math.min(Math.max(x[b * SIZE * SIZE + i], -1), 1) + 1) * 127.5);
      const p = 4 * ((oy + Math.floor(i / SIZE)) * COLUMNS * SIZE + ox + (i % SIZE));
      image.data[p] = image.data[p + 1] = image.data[p + 2] = value;
      image.data[p + 3] = 255;
    }
  }
  context.putImageData(image, 0, 0);
}

function showReadings(readings, labels) {
  const cells = readings.map((r, b) => {
    const asked = labels ? labels[b] : null, ok = asked === null || asked === r.digit;
    const mark = asked === null ? "" : ok ? "✓ " : "✗ ";
    const text = `${mark}${asked === null ? "" : `asked ${asked}, `}read ${r.digit} (${Math.round(100 * r.probability)}%)`;
    return `<span class="dh-reading ${ok ? "dh-ok" : "dh-miss"}">${text}</span>`;
  });
  $("readings").innerHTML = cells.join("");
}

// --- the controls ---------------------------------------------------------------------------------
function selectedDigits() {
  return Array.from(root.querySelectorAll("[data-digit][aria-pressed=true]")).map((b) => Number(b.dataset.digit));
}

function settings() {
  const conditional = $("model").value === "conditional", digits = selectedDigits();
  return {
    model: $("model").value,
    method: $("method").value,
    numSteps: Number($("steps").value),
    eta: $("method").value === "ddim" ? Number($("eta").value) : 0,
    guidance: conditional ? Number($("guidance").value) : 1,
    seed: Number($("seed").value),
    labels: conditional ? Int32Array.from({ length: BATCH }, (_, b) => digits[b % digits.length]) : null,
  };
}

function refreshControls() {
  const conditional = $("model").value === "conditional", ddim = $("method").value === "ddim";
  root.querySelectorAll("[data-digit]").forEach((b) => { b.disabled = !conditional; });
  $("guidance").disabled = !conditional;
  $("eta").disabled = !ddim;
  $("steps-value").textContent = $("steps").value;
  $("eta-value").textContent = ddim ? Number($("eta").value).toFixed(1) : "(DDIM only)";
  $("guidance-value").textContent = conditional ? Number($("guidance").value).toFixed(1) : "(conditional only)";
  const noDigit = conditional && selectedDigits().length === 0;
  $("generate").disabled = !loaded || running || noDigit;
  if (noDigit) status("Pick at least one digit.");
}

/** Bytes of this page's own files that the browser has loaded (runtime, models, sampler), in MB. */
function fetchedMB() {
  const mine = performance.getEntriesByType("resource").filter((e) => e.name.startsWith(BASE.href));
  const sum = (key) => mine.reduce((a, e) => a + (e[key] || 0), 0) / 1e6;
  return { decoded: sum("decodedBodySize"), transferred: sum("transferSize"), files: mine.length };
}

// --- one run --------------------------------------------------------------------------------------
let running = false, loaded = false;

/** Sample a batch as `options` say and draw every step. With options.xT (and options.noise(step) for
 *  DDIM with η > 0) the starting and per-step noise are injected (the test hook); otherwise they come
 *  from the seed. Returns the run's record. */
async function run(options, { keepTrajectory = false, draw: drawSteps = true } = {}) {
  const normal = gaussian(options.seed ?? 0);
  const xT = options.xT ?? normal(BATCH * SIZE * SIZE), n = xT.length;
  if (n % (SIZE * SIZE) !== 0 || (drawSteps && n !== BATCH * SIZE * SIZE)) {
    throw new Error(`xT must hold B·${SIZE * SIZE} values (B = ${BATCH} when drawn), got ${n}`);
  }
  const noise = options.noise ?? (() => normal(n));
  const counter = { seconds: 0, calls: 0 }, trajectory = [];
  const started = performance.now();
  let last = null;
  for await (const state of iterateSampler(network(options.model, counter), xT, numbers.models[options.model], { ...options, noise })) {
    last = state;
    if (keepTrajectory) trajectory.push({ t: state.t, x: state.x, x0: state.x0, eps: state.eps });
    if (drawSteps) {
      draw($("xt"), state.x);
      draw($("x0"), state.x0);
      $("step").textContent = `step ${state.step + 1} of ${options.numSteps} (t = ${state.t})`;
      await new Promise((resolve) => setTimeout(resolve, 0)); // let the browser paint this step
    }
  }
  const final = last.x.map((v) => Math.min(Math.max(v, -1), 1)); // as dh.sample returns it
  const readings = await classify(final);
  const seconds = (performance.now() - started) / 1000;
  return { ...options, xT: undefined, noise: undefined, final, readings, seconds, networkSeconds: counter.seconds,
           networkCalls: counter.calls, backend, threads: ort.env.wasm.numThreads, crossOriginIsolated: self.crossOriginIsolated, trajectory };
}

async function generate() {
  if (running) return;
  running = true;
  refreshControls();
  try {
    const options = settings();
    status(`Generating with ${METHODS[options.method]}, ${options.numSteps} step${options.numSteps > 1 ? "s" : ""}...`);
    const record = await run(options);
    window.tryIt.last = record;
    showReadings(record.readings, options.labels);
    const agreed = options.labels ? record.readings.filter((r, b) => r.digit === options.labels[b]).length : null;
    const fetched = fetchedMB();
    status(`${BATCH} digits in ${options.numSteps} step${options.numSteps > 1 ? "s" : ""} took ${record.seconds.toFixed(2)} s on this machine `
      + `(${record.networkCalls} network calls, ${record.networkSeconds.toFixed(2)} s of them; ${backend === "wasm" ? `WebAssembly, ${threadsText()}` : "WebGPU"}). `
      + (agreed === null ? "" : `The classifier reads ${agreed} of ${BATCH} as the digit asked for. `)
      + `This page has fetched ${fetched.decoded.toFixed(1)} MB for it.`);
  } catch (error) {
    status(`Generation failed: ${error.message}`);
    throw error;
  } finally {
    running = false;
    refreshControls();
  }
}

/** The threads the runtime runs on, and why only one where several could help. */
function threadsText() {
  const threads = ort.env.wasm.numThreads;
  if (threads > 1) return `${threads} threads`;
  const why = isolation.why || ((navigator.hardwareConcurrency || 1) > 1 ? "the runtime could not start its threads" : "this machine reports one core");
  return `1 thread: ${why}`;
}

async function start() {
  const reason = whyNot();
  if (reason) {
    status(reason);
    root.classList.add("dh-unavailable");
    window.tryIt = { ready: Promise.reject(new Error(reason)) };
    window.tryIt.ready.catch(() => {});
    return;
  }
  status("Loading...");
  isolation = await isolate();  // on the first visit, reloads the page instead of returning
  let resolveReady, rejectReady;
  window.tryIt = { ready: new Promise((a, b) => { resolveReady = a; rejectReady = b; }), run: (o, k) => run(o, k), numbers: null, last: null,
                   isolation: null };
  try {
    const started = performance.now();
    status("Loading the runtime and the models...");
    [numbers, card] = await Promise.all(["sampler.json", "card.json"].map(async (file) => {
      const response = await fetch(new URL(`models/${file}`, BASE));
      if (!response.ok) throw new Error(`models/${file}: HTTP ${response.status} (was the book built after scripts/export_onnx.py?)`);
      return response.json();
    }));
    window.tryIt.numbers = numbers;
    $("steps").max = String(numbers.max_steps);
    await loadRuntime(false);
    await Promise.all([session("conditional"), session("classifier")]);
    // the runtime sets numThreads back to 1 if it cannot start its threads
    window.tryIt.isolation = { crossOriginIsolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads, why: isolation.why,
                               controlled: Boolean(navigator.serviceWorker?.controller) };
    const fetched = fetchedMB();
    status(`Ready: runtime and models loaded in ${((performance.now() - started) / 1000).toFixed(1)} s, ${fetched.decoded.toFixed(1)} MB fetched; `
      + `WebAssembly on ${threadsText()}. Press Generate.`);
    loaded = true;
    refreshControls();
    resolveReady();
    offerWebGPU();
  } catch (error) {
    status(`The network could not be loaded: ${error.message}`);
    rejectReady(error);
  }
}

/** WebGPU, where the browser has an adapter: offered, not taken, since its runtime is a further 29 MB. */
async function offerWebGPU() {
  if (!navigator.gpu) return;
  const adapter = await navigator.gpu.requestAdapter().catch(() => null);
  if (!adapter) return;
  const box = $("webgpu");
  box.hidden = false;
  box.querySelector("input").addEventListener("change", async (event) => {
    if (!event.target.checked || backend === "webgpu") return;
    status("Loading the WebGPU runtime...");
    try {
      for (const key of Object.keys(sessions)) delete sessions[key];
      await loadRuntime(true);
      await Promise.all([session("conditional"), session("classifier")]);
      status(`WebGPU ready (${fetchedMB().decoded.toFixed(1)} MB fetched in all). Press Generate.`);
    } catch (error) {
      for (const key of Object.keys(sessions)) delete sessions[key];
      await loadRuntime(false);
      event.target.checked = false;
      status(`WebGPU failed (${error.message}); back on WebAssembly.`);
    }
  });
}

root.querySelectorAll("[data-digit]").forEach((button) => button.addEventListener("click", () => {
  button.setAttribute("aria-pressed", button.getAttribute("aria-pressed") === "true" ? "false" : "true");
  refreshControls();
}));
["model", "method", "steps", "eta", "guidance"].forEach((name) => $(name).addEventListener("input", refreshControls));
$("generate").addEventListener("click", () => { generate().catch(() => {}); });
refreshControls();
start();
