"""The "Try it" page (book/try_it.md) in a headless Chromium, offline: it generates digits, its
classifier reads them, and its sampler agrees with the package's.

Run after ``scripts/export_onnx.py``, ``scripts/fetch_onnxruntime.sh`` and the book build (``.ci/run``
does): ``pytest book_tests/test_try_it.py``. The site in ``_build/html`` is served from localhost and
every request to another host is refused, as in ``test_pages.py``. The timing, the page weight, the
thread count and whether the page was cross-origin isolated go to ``_build/screenshots/try_it.json``
with a screenshot (artefacts, not committed). On its first visit the page registers its service worker
(``_extra/try_it_isolation.js``) and reloads once, isolated, before it defines ``window.tryIt``:
``Visit.ready``'s ``wait_for_function`` polls on across that navigation. The 5.8-7.4 s quoted below
were measured on one thread, before the service worker.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpm_helpers as dh

from offline_site import CHROMIUM, ROOT, SCREENSHOTS, SITE, OfflineVisit

PAGE = "book/try_it.html"

pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser test drives Debian's chromium)")
if not (SITE / PAGE).exists():
    pytest.skip("build the book first: jupyter-book build .", allow_module_level=True)
if not (SITE / "try_it" / "models" / "sampler.json").exists() or not (SITE / "try_it" / "ort" / "VERSION").exists():
    pytest.skip("export the models and fetch the runtime before the build: scripts/export_onnx.py, scripts/fetch_onnxruntime.sh", allow_module_level=True)
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

# The targets: 16 digits in 20 steps in <= 5 s on a quiet 2-core machine, and <= 20 MB fetched.
TARGET_SECONDS, MAX_MB = 5.0, 20.0
# CI shares its machine, so the time is recorded and only a pathological slowness fails: the page took
# 5.8-7.4 s with the load average near 4 on 2 cores (the lead's benchmarks running); 6x the target.
FAIL_SECONDS = 6 * TARGET_SECONDS


class Visit(OfflineVisit):
    """The page opened with the network cut off, its errors and refused requests recorded."""

    def __init__(self, browser, server: str, *, init_script: str | None = None):
        super().__init__(browser, server, server + PAGE, height=1400, init_script=init_script)

    def ready(self) -> None:
        self.page.wait_for_function("() => window.tryIt && window.tryIt.ready", timeout=60_000)
        self.page.evaluate("() => window.tryIt.ready")


@pytest.fixture(scope="module")
def visit(browser, server):
    opened = Visit(browser, server)
    opened.ready()
    yield opened
    opened.close()


# --- the test: 16 digits in 20 steps, read by the page's own classifier ----------------------

def test_page_generates_digits_that_its_classifier_reads(visit):
    page = visit.page
    for digit in (8, 9):  # two of each of the eight digits 0..7
        page.click(f"[data-digit='{digit}']")
    assert page.locator("[data-role=steps]").input_value() == "20"
    page.click("[data-role=generate]")
    page.wait_for_function("() => window.tryIt.last", timeout=int(1000 * FAIL_SECONDS * 4))
    record = page.evaluate("() => { const r = window.tryIt.last; return {labels: Array.from(r.labels), read: r.readings.map(x => x.digit),"
                           " seconds: r.seconds, networkSeconds: r.networkSeconds, calls: r.networkCalls, method: r.method, guidance: r.guidance,"
                           " backend: r.backend, threads: r.threads, crossOriginIsolated: r.crossOriginIsolated,"
                           " hardwareConcurrency: navigator.hardwareConcurrency} }")
    weight = page.evaluate("() => performance.getEntriesByType('resource').filter(e => e.name.includes('/try_it/'))"
                           ".map(e => ({name: e.name.split('/try_it/')[1], bytes: e.decodedBodySize}))")
    status = page.locator("[data-role=status]").inner_text()
    megabytes = sum(entry["bytes"] for entry in weight) / 1e6
    agreed = sum(a == b for a, b in zip(record["labels"], record["read"]))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "try_it.png"), full_page=True)
    (SCREENSHOTS / "try_it.json").write_text(json.dumps({**record, "agreed": agreed, "megabytes": megabytes, "files": weight, "status": status}, indent=1))
    print(f"\ntry_it: {agreed}/16 read as asked; {record['seconds']:.2f} s ({record['networkSeconds']:.2f} s in {record['calls']} network calls, "
          f"{record['backend']}, {record['threads']} thread(s), {'' if record['crossOriginIsolated'] else 'not '}cross-origin isolated); "
          f"{megabytes:.1f} MB fetched")

    assert sorted(record["labels"]) == sorted(list(range(8)) * 2) and record["calls"] == 20
    assert agreed >= 14, f"the classifier read only {agreed} of 16 digits as asked: asked {record['labels']}, read {record['read']}"
    assert record["seconds"] <= FAIL_SECONDS, f"16 digits in 20 steps took {record['seconds']:.1f} s (target {TARGET_SECONDS} s on a quiet machine)"
    assert megabytes <= MAX_MB, f"the page fetched {megabytes:.1f} MB, over the {MAX_MB} MB budget: {weight}"
    assert f"took {record['seconds']:.2f} s" in status and "MB" in status  # the page tells the reader both
    quoted = float(re.search(r"That costs about (\d+) MB", (ROOT / "book" / "try_it.md").read_text()).group(1))
    assert abs(megabytes - quoted) < 1, f"the page's text says about {quoted:g} MB, it fetched {megabytes:.1f} MB"
    assert visit.errors == [] and visit.external == [], f"JavaScript errors {visit.errors}; requests to other hosts {visit.external}"


# --- several threads: the page's service worker makes it cross-origin isolated -------------------------

ISOLATION = ("() => ({serviceWorker: 'serviceWorker' in navigator && self.isSecureContext, cores: navigator.hardwareConcurrency,"
             " ...window.tryIt.isolation})")


def test_page_is_cross_origin_isolated_and_runs_on_several_threads(visit):
    """Served from localhost (a secure context), the page registers its service worker, reloads once
    through it, and is then cross-origin isolated: onnxruntime-web runs on several threads where the
    machine has several cores, and the status line says how many."""
    state = visit.page.evaluate(ISOLATION)
    if not state["serviceWorker"]:
        pytest.skip(f"this Chromium offers the page no service worker: {state}")
    assert state["controlled"] and state["crossOriginIsolated"], f"the page is not cross-origin isolated: {state}"
    if state["cores"] > 1:
        assert state["threads"] > 1, f"{state['cores']} cores, but the runtime runs on {state['threads']} thread: {state}"
    status = visit.page.locator("[data-role=status]").inner_text()
    assert f"{state['threads']} thread" in status, f"the status line does not give the thread count: {status!r}"
    assert visit.errors == [] and visit.external == [], f"JavaScript errors {visit.errors}; requests to other hosts {visit.external}"


def test_service_worker_controls_only_the_try_it_page(visit, server):
    """The worker's two scopes are the page and its runtime's folder; another page of the book, even
    beside the Try it page in book/, is not controlled by it and not isolated."""
    scopes = visit.page.evaluate("async () => 'serviceWorker' in navigator"
                                 " ? (await navigator.serviceWorker.getRegistrations()).map((r) => r.scope) : null")
    if scopes is None:
        pytest.skip("this Chromium offers the page no service worker")
    assert sorted(scopes) == sorted([server + PAGE.removesuffix(".html"), server + "try_it/"])
    other = visit.context.new_page()  # the same browser context: the registrations are there
    try:
        other.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
        other.goto(server + "book/preface.html", wait_until="load")
        state = other.evaluate("() => ({controlled: Boolean(navigator.serviceWorker.controller), isolated: self.crossOriginIsolated})")
        assert state == {"controlled": False, "isolated": False}, f"book/preface.html: {state}"
    finally:
        other.close()


def test_page_without_service_workers_runs_on_one_thread(browser, server):
    """Where no service worker is available (a file, plain http from another machine, some private
    windows) the page does not reload, runs on one thread and says why."""
    visit = Visit(browser, server, init_script="delete Navigator.prototype.serviceWorker;")
    try:
        visit.ready()
        state = visit.page.evaluate(ISOLATION)
        assert not state["serviceWorker"] and not state["crossOriginIsolated"] and state["threads"] == 1, state
        status = visit.page.locator("[data-role=status]").inner_text()
        assert "1 thread: no service worker" in status, status
        assert visit.page.locator("[data-role=generate]").is_enabled()
        assert visit.errors == [] and visit.external == [], f"JavaScript errors {visit.errors}; requests to other hosts {visit.external}"
    finally:
        visit.close()


def test_page_without_webassembly_says_why(browser, server):
    visit = Visit(browser, server, init_script="delete globalThis.WebAssembly;")
    try:
        visit.page.wait_for_function("() => window.tryIt !== undefined", timeout=30_000)
        status = visit.page.locator("[data-role=status]").inner_text()
        assert "no WebAssembly" in status
        assert visit.page.locator("[data-role=generate]").is_disabled()
        assert visit.errors == [] and visit.external == []
    finally:
        visit.close()


# --- the page's sampler against dh.sample, on the same noise -----------------------------------------

def to_base64(x: torch.Tensor) -> str:
    return base64.b64encode(x.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def from_base64(text: str, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype="<f4").copy()).reshape(shape)


JS_HELPERS = """
const decode = (s) => new Float32Array(Uint8Array.from(atob(s), (c) => c.charCodeAt(0)).buffer);
const encode = (a) => { const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength); let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000)); return btoa(s); };
"""

BATCH, STEPS = 4, 20
CASES = {  # name: (model, method, eta, guidance)
    "dpm-solver++, s = 1": ("conditional", "dpm-solver++", None, 1.0),
    "ddim eta = 1, s = 3": ("conditional", "ddim", 1.0, 3.0),
    "ddim eta = 0.5, unconditional": ("unconditional", "ddim", 0.5, 1.0),
}


class Recorder(torch.nn.Module):
    """The model as the sampling loop sees it, keeping every ε̂ it returns."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.num_classes, self.eps = model, getattr(model, "num_classes", None), []

    def forward(self, x_t, t, y=None):
        self.eps.append(self.model(x_t, t, y))
        return self.eps[-1]


@functools.lru_cache(maxsize=None)  # two tests read each case's run; nothing modifies it
def package_trajectory(case: str, seed: int = 0):
    """dh.sample's run, step by step: x_T and the per-step noise drawn from one seeded generator in the
    order dh.sample draws them, and every state (t, x, x0_hat) with the ε̂ that made it."""
    model_name, method, eta, guidance = CASES[case]
    model, diffusion = dh.load_pretrained(model_name)
    schedule = dh.make_schedule(diffusion.schedule, diffusion.T)
    spec = dh.SamplerSpec(method, num_steps=STEPS, eta=eta)
    y = torch.tensor([3, 7, 0, 5]) if model_name == "conditional" else None
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((BATCH, *dh.MNIST_PIXELS.shape), generator=generator)
    noise_state = generator.get_state()
    noise = [torch.randn(x_T.shape, generator=generator) for _ in range(STEPS)] if eta else []
    generator.set_state(noise_state)
    recorded = Recorder(model)
    states = list(dh.iterate_sampler(recorded, x_T, dh.MNIST_PIXELS, schedule, spec, y=y, guidance_scale=guidance, generator=generator))
    eps_seen = recorded.eps
    if guidance not in (0.0, 1.0):  # one batched call of 2B per step: mix as guided_eps does, in the same order
        eps_seen = [e[BATCH:] + guidance * (e[:BATCH] - e[BATCH:]) for e in eps_seen]
    with torch.no_grad():
        reference = dh.sample(model, BATCH, dh.MNIST_PIXELS, schedule, spec, y=y, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(states[-1].x.clamp(-1, 1), reference, rtol=0, atol=0)  # this is dh.sample's run
    return x_T, noise, y, states, eps_seen, spec, guidance, schedule


class OffByDelta(torch.nn.Module):
    """The model with every ε̂ moved by a uniform absolute error in [−δ, δ]: a stand-in for onnxruntime's deviation."""

    def __init__(self, model: torch.nn.Module, delta: float, seed: int) -> None:
        super().__init__()
        self.model, self.delta, self.num_classes = model, delta, getattr(model, "num_classes", None)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x_t, t, y=None):
        out = self.model(x_t, t, y)
        return out + self.delta * (2 * torch.rand(out.shape, generator=self.generator) - 1)


def trajectory_sensitivity(case: str, delta: float = 2.5e-5, draws: int = 2, seed: int = 0) -> float:
    """How far dh.sample's final x moves, at most over ``draws`` draws, when every ε̂ of the run is off by up to
    ±``delta``: onnxruntime's ε̂ differs from PyTorch's by about 1e-5 (the export check, scripts/export_onnx.py;
    up to 2.5e-5 seen). The response is a property of the model's schedule: 8 per unit error for the conditional
    model (linear schedule), about 3,000-4,700 for the unconditional one (cosine schedule, whose 1/√ᾱ ≈ 2·10⁴ at
    the first step carries an ε̂ error into the unclipped pixels of x̂0), measured 2026-12-04."""
    model_name, method, eta, guidance = CASES[case]
    model, diffusion = dh.load_pretrained(model_name)
    schedule = dh.make_schedule(diffusion.schedule, diffusion.T)
    spec = dh.SamplerSpec(method, num_steps=STEPS, eta=eta)
    y = torch.tensor([3, 7, 0, 5]) if model_name == "conditional" else None

    def final(net):
        with torch.no_grad():
            return dh.sample(net, BATCH, dh.MNIST_PIXELS, schedule, spec, y=y, guidance_scale=guidance, generator=torch.Generator().manual_seed(seed))

    exact = final(model)
    return max(float((final(OffByDelta(model, delta, draw)) - exact).abs().max()) for draw in range(draws))


@pytest.mark.parametrize("case", list(CASES))
def test_page_trajectory_matches_the_package(visit, case):
    x_T, noise, y, states, eps_seen, spec, guidance, schedule = package_trajectory(case)
    model_name = CASES[case][0]
    result = visit.page.evaluate("async ([args]) => {" + JS_HELPERS + """
        const noises = args.noise.map(decode);
        const record = await window.tryIt.run({model: args.model, method: args.method, numSteps: args.steps, eta: args.eta,
            guidance: args.guidance, labels: args.labels ? Int32Array.from(args.labels) : null,
            xT: decode(args.xT), noise: (i) => noises[i]}, {keepTrajectory: true, draw: false});
        return record.trajectory.map((s) => ({t: s.t, x: encode(s.x), x0: encode(s.x0), eps: encode(s.eps)}));
    }""", [{"model": model_name, "method": spec.method, "steps": STEPS, "eta": spec.eta or 0, "guidance": guidance,
            "labels": None if y is None else y.tolist(), "xT": to_base64(x_T), "noise": [to_base64(z) for z in noise]}])
    shape = tuple(x_T.shape)
    assert [s["t"] for s in result] == [s.t for s in states] == spec.steps(schedule.T, schedule)
    # Tolerance of the whole trajectory: the bound, 1e-3 after 20 steps, where the schedule allows it.
    # What it must cover: onnxruntime's ε̂ differs from PyTorch's by the export check's δ (≤ 1e-4 asserted, ~1e-5
    # measured, see scripts/export_onnx.py). On the linear schedule a step carries an ε̂ error into x_prev with a
    # coefficient of order one (DDIM η = 0: √(1 − ᾱ_prev) − √(ᾱ_prev/ᾱ_t)·√(1 − ᾱ_t), |·| ≤ 0.69 on 20 uniform
    # steps; DPM-Solver++(2M)'s extrapolation adds at most a factor 1 + 1/r ≈ 2), so 20 steps × 2 × 1e-5 ≈ 4e-4
    # < 1e-3. On the cosine schedule the first step's 1/√ᾱ ≈ 2·10⁴ amplifies the error in the unclipped pixels of
    # x̂0, so the bound is the run's own measured response to ε̂ errors of ±2.5e-5 (trajectory_sensitivity), with
    # a factor 4 for the draws it does not see. The step-by-step arithmetic is held to float32 roundoff by the
    # next test, whatever the schedule; a wrong coefficient or timestep moves the trajectory by O(1).
    worst = 0.0
    for ours, theirs in zip(result, states):
        worst = max(worst, float((from_base64(ours["x"], shape) - theirs.x).abs().max()))
    final = float((from_base64(result[-1]["x"], shape) - states[-1].x).abs().max())
    print(f"\n{case}: page vs dh.sample after {STEPS} steps: max |Δx| = {final:.2g} (worst over the steps {worst:.2g})")
    bound = max(1e-3, 4 * trajectory_sensitivity(case))
    assert final <= bound, f"{case}: the page's sample differs from dh.sample's by {final:.3g} after {STEPS} steps (bound {bound:.3g})"


@pytest.mark.parametrize("case", list(CASES))
def test_page_steps_replay_the_package_steps(visit, case):
    """The page's step arithmetic alone: each step of sampler.mjs, given the package's own x_t and ε̂ (and
    its noise and previous x̂0), must return the package's x_prev and x̂0."""
    x_T, noise, y, states, eps_seen, spec, guidance, schedule = package_trajectory(case)
    inputs = [x_T] + [s.x for s in states[:-1]]
    result = visit.page.evaluate("async ([args]) => {" + JS_HELPERS + """
        const sampler = await import(new URL("../try_it/sampler.mjs", location.href).href);
        const numbers = window.tryIt.numbers.models[args.model], steps = numbers.timesteps[String(args.steps)];
        const out = []; let previous = null;
        for (let i = 0; i < steps.length; i++) {
            const t = steps[i], tPrev = i + 1 < steps.length ? steps[i + 1] : -1, x = decode(args.x[i]), eps = decode(args.eps[i]);
            const r = args.method === "ddim" ? sampler.ddimStep(x, t, tPrev, eps, numbers, {eta: args.eta, z: args.noise.length ? decode(args.noise[i]) : null})
                                             : sampler.dpmSolverStep(x, t, tPrev, eps, numbers, {previous: previous && {t: previous.t, x0: decode(args.x0[i - 1])}});
            previous = {t};
            out.push({x: encode(r.x), x0: encode(r.x0)});
        }
        return out;
    }""", [{"model": CASES[case][0], "method": spec.method, "steps": STEPS, "eta": spec.eta or 0,
            "x": [to_base64(x) for x in inputs], "eps": [to_base64(e) for e in eps_seen],
            "x0": [to_base64(s.x0_hat) for s in states], "noise": [to_base64(z) for z in noise]}])
    shape = tuple(x_T.shape)
    # One step from the same inputs. The package rounds each of its float32 operations (about 10 per
    # element and step, u = 2^-24 each); the page computes in float64 from the same float32 tables, so
    # the difference is the package's rounding. With M = max|x| + max|ε̂| + max|z| of this run, each
    # operation errs by at most u·M in absolute terms before the division by √ᾱ_t that makes x̂0, which
    # amplifies it by 1/√ᾱ_t (157 at t = 999 of the linear schedule). x_prev mixes x̂0 (weight ≤ 2 with
    # DPM-Solver++'s extrapolation, times √ᾱ_prev ≤ 1) with x_t, ε̂ and z (coefficients ≤ 1), so
    # 10·u·M·(2/√ᾱ_t + 1) bounds both x̂0's and x_prev's differences.
    M = float(max(x.abs().max() for x in inputs) + max(e.abs().max() for e in eps_seen) + max([z.abs().max() for z in noise], default=0.0))
    for i, (ours, theirs) in enumerate(zip(result, states)):
        t = theirs.t
        tolerance = 10 * 2.0**-24 * M * (2 / float(schedule.sqrt_alpha_bars[t]) + 1)
        x_error = float((from_base64(ours["x"], shape) - theirs.x).abs().max())
        x0_error = float((from_base64(ours["x0"], shape) - theirs.x0_hat).abs().max())
        assert x0_error <= tolerance, f"{case}, step {i} (t = {t}): x0_hat differs by {x0_error:.3g} > {tolerance:.2g}"
        assert x_error <= tolerance, f"{case}, step {i} (t = {t}): x_prev differs by {x_error:.3g} > {tolerance:.2g}"
