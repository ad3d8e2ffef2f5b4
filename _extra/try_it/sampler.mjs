// The reverse process of the book's package (ddpm_helpers/steps.py and samplers.py), in JavaScript,
// for the "Try it" page (book/try_it.md). Nothing here knows about the page or the runtime: the
// network is a function eps(x, t, labels) that returns ε̂, and every number of the schedule (T, the
// tables ᾱ_t, √ᾱ_t, √(1 − ᾱ_t), the visited timesteps, the clipping range, the null class) comes from
// models/sampler.json, which scripts/export_onnx.py writes from the package itself.
//
// Conventions as in the package: an image batch is a Float32Array of B·C·H·W values in [-1, 1] (the
// layout of a (B, C, H, W) tensor); t is the 0-based index in [0, T); t_prev = -1 means "past the last
// step" (ᾱ = 1, the clean data). Every sample of a batch is at the same t, so each step's
// coefficients are numbers, computed in float64 from the package's float32 tables.

/** ᾱ at index t, with ᾱ = 1 at t = -1 (steps.alpha_bar_at). */
export function alphaBarAt(t, numbers) {
  return t >= 0 ? numbers.alpha_bars[t] : 1.0;
}

/** x̂0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t, clipped to the data's range; ε̂ re-derived from the clipped x̂0
 *  (steps._x0_and_eps). Returns [x0Hat, epsHat] as new arrays. */
export function x0AndEps(x, t, eps, numbers, clip = numbers.clip_x0) {
  const a = numbers.sqrt_alpha_bars[t], s = numbers.sqrt_one_minus_alpha_bars[t];
  const x0 = new Float32Array(x.length), e = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    let v = (x[i] - s * eps[i]) / a;
    if (clip) {
      v = Math.min(Math.max(v, clip[0]), clip[1]);
      e[i] = (x[i] - a * v) / s;
    } else {
      e[i] = eps[i];
    }
    x0[i] = v;
  }
  return [x0, e];
}

/** DDIM's σ(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (Song et al. 2021, eq. 16; steps.ddim_sigma). */
export function ddimSigma(t, tPrev, eta, numbers) {
  const ab = numbers.alpha_bars[t], abPrev = alphaBarAt(tPrev, numbers);
  return eta * Math.sqrt((1 - abPrev) / (1 - ab) * (1 - ab / abPrev));
}

/** One DDIM step x_t → x_{t_prev} (steps.ddim_step): x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z.
 *  z (a Float32Array like x) is used only when η > 0. Returns {x, x0}. */
export function ddimStep(x, t, tPrev, eps, numbers, { eta = 0, z = null } = {}) {
  const [x0, e] = x0AndEps(x, t, eps, numbers);
  const abPrev = alphaBarAt(tPrev, numbers);
  const sigma = ddimSigma(t, tPrev, eta, numbers);
  const c0 = Math.sqrt(abPrev), ce = Math.sqrt(Math.max(0, 1 - abPrev - sigma * sigma));
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = c0 * x0[i] + ce * e[i];
  if (eta > 0) {
    if (!z || z.length !== x.length) throw new Error(`ddimStep: eta=${eta} needs noise z of ${x.length} values, got ${z ? z.length : z}`);
    for (let i = 0; i < x.length; i++) out[i] += sigma * z[i];
  }
  return { x: out, x0 };
}

/** (α, σ, e^{−λ}) at index t with α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ); t = −1 gives (1, 0, 0) (steps.log_snr_half). */
export function logSnrHalf(t, numbers) {
  const ab = alphaBarAt(t, numbers);
  const alpha = Math.sqrt(ab), sigma = Math.sqrt(Math.max(0, 1 - ab));
  return [alpha, sigma, sigma / alpha];
}

/** One step of DPM-Solver++(2M) x_t → x_{t_prev} (Lu et al. 2022, Algorithm 2; steps.dpm_solver_step):
 *  x_prev = (σ_prev/σ_t) x_t + α_prev (1 − e^{−h}) D, with D = x̂0 on the first step and when
 *  t_prev ≤ 0, else the extrapolation (1 + 1/(2r)) x̂0 − 1/(2r) x̂0_before, r = (λ_t − λ_before)/h.
 *  previous = {t, x0} of the step before, or null. Returns {x, x0}. */
export function dpmSolverStep(x, t, tPrev, eps, numbers, { previous = null } = {}) {
  const [x0] = x0AndEps(x, t, eps, numbers);
  const [, sigma, eLam] = logSnrHalf(t, numbers);
  const [alphaPrev, sigmaPrev, eLamPrev] = logSnrHalf(tPrev, numbers);
  const eMinusH = eLamPrev / eLam;
  let wNow = 1, wBefore = 0; // D = wNow x̂0 + wBefore x̂0_before
  if (previous && tPrev > 0) {
    const [, , eLamBefore] = logSnrHalf(previous.t, numbers);
    const h = Math.log(eLam / Math.max(eLamPrev, 1e-30));
    const r = Math.log(eLamBefore / eLam) / h;
    wNow = 1 + 0.5 / r;
    wBefore = -0.5 / r;
  }
  const cx = sigmaPrev / sigma, cd = alphaPrev * (1 - eMinusH);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const d = wBefore === 0 ? x0[i] : wNow * x0[i] + wBefore * previous.x0[i];
    out[i] = cx * x[i] + cd * d;
  }
  return { x: out, x0 };
}

export const METHODS = { "ddim": "DDIM", "dpm-solver++": "DPM-Solver++(2M)" };

/** The guidance mix of samplers._guided_eps: ε̃ = ε(x, t, ∅) + s (ε(x, t, y) − ε(x, t, ∅)). One network
 *  call for s = 1 (labels y) and s = 0 (the null class), one batched call of 2B otherwise, as the package. */
export async function guidedEps(network, x, t, labels, scale, numbers) {
  if (labels === null || scale === 1) return network(x, t, labels);
  const batch = labels.length, nullLabels = new Int32Array(batch).fill(numbers.null_class);
  if (scale === 0) return network(x, t, nullLabels);
  const both = new Float32Array(2 * x.length);
  both.set(x, 0);
  both.set(x, x.length);
  const bothLabels = new Int32Array(2 * batch);
  bothLabels.set(labels, 0);
  bothLabels.set(nullLabels, batch);
  const out = await network(both, t, bothLabels);
  const mixed = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const epsY = out[i], epsNull = out[x.length + i];
    mixed[i] = epsNull + scale * (epsY - epsNull);
  }
  return mixed;
}

/** Run the reverse process from xT, yielding {step, t, x, x0, eps} after every step
 *  (samplers.iterate_sampler). options: method ("ddim" | "dpm-solver++"), numSteps (1 .. max_steps),
 *  eta (DDIM only, in [0, 1]), labels (Int32Array of B labels, or null for the unconditional model),
 *  guidance (the scale s ≥ 0), noise(stepIndex) → Float32Array z of x's length (DDIM with η > 0). */
export async function* iterateSampler(network, xT, numbers, { method, numSteps, eta = 0, labels = null, guidance = 1, noise = null }) {
  if (!(method in METHODS)) throw new Error(`method must be one of ${Object.keys(METHODS)}, got ${method}`);
  const steps = numbers.timesteps[String(numSteps)];
  if (!steps) throw new Error(`numSteps must be an integer in [1, ${Object.keys(numbers.timesteps).length}], got ${numSteps}`);
  if (method !== "ddim" && eta !== 0) throw new Error(`eta applies only to DDIM, got eta=${eta} for ${method}`);
  if (!(eta >= 0 && eta <= 1)) throw new Error(`eta must lie in [0, 1], got ${eta}`);
  if (!(guidance >= 0 && Number.isFinite(guidance))) throw new Error(`guidance must be a finite number >= 0, got ${guidance}`);
  if (guidance !== 1 && labels === null) throw new Error(`guidance=${guidance} needs labels (it mixes conditional and unconditional predictions)`);
  if (eta > 0 && typeof noise !== "function") throw new Error("DDIM with eta > 0 needs noise(stepIndex)");
  const perSample = numbers.shape.reduce((a, v) => a * v, 1);
  if (!(xT instanceof Float32Array) || xT.length === 0 || xT.length % perSample !== 0) {
    throw new Error(`xT must be a Float32Array of B·${perSample} values (B images of shape ${numbers.shape}), got ${xT && xT.length}`);
  }
  if (labels !== null && labels.length * perSample !== xT.length) {
    throw new Error(`labels must hold one label per sample (${xT.length / perSample}), got ${labels.length}`);
  }
  let x = xT, previous = null;
  for (let i = 0; i < steps.length; i++) {
    const t = steps[i], tPrev = i + 1 < steps.length ? steps[i + 1] : -1;
    const eps = await guidedEps(network, x, t, labels, guidance, numbers);
    const result = method === "ddim"
      ? ddimStep(x, t, tPrev, eps, numbers, { eta, z: eta > 0 ? noise(i) : null })
      : dpmSolverStep(x, t, tPrev, eps, numbers, { previous });
    x = result.x;
    previous = { t, x0: result.x0 };
    yield { step: i, t, x, x0: result.x0, eps };
  }
}

/** A seeded stream of standard normal float32 values: mulberry32 (a 32-bit generator, enough for a
 *  page's noise) and the Box–Muller transform. Not torch's generator: the page's seeds make the page's
 *  digits repeat, not the book's (the tests inject torch's noise to compare with the package). */
export function gaussian(seed) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let r = Math.imul(state ^ (state >>> 15), 1 | state);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
  let spare = null;
  return (n) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      if (spare !== null) { out[i] = spare; spare = null; continue; }
      const u = 1 - uniform(), v = uniform(); // u in (0, 1]: log(u) is finite
      const radius = Math.sqrt(-2 * Math.log(u));
      out[i] = radius * Math.cos(2 * Math.PI * v);
      spare = radius * Math.sin(2 * Math.PI * v);
    }
    return out;
  };
}
