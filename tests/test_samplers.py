import dataclasses
import inspect
import re

import pytest
import torch

import ddpm_helpers as dh

CLIP = (-1.0, 1.0)  # clip x0_hat to the range of images
POINT = dh.DataSpace((1, 1, 1))  # one number per item, with no known range


class ZeroModel(torch.nn.Module):
    def forward(self, x_t, t, y=None):
        return torch.zeros_like(x_t)


def test_ddim_with_eta_one_on_every_step_has_ddpm_posterior_variance(schedule):
    t = torch.arange(1, 1000)
    sigma = dh.ddim_sigma(t, t - 1, schedule, eta=1.0, ndim=1)
    # σ² = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t−1}) from the float32 tables, against β̃_t computed in
    # float64. At t = 1 every factor cancels: the ratio ᾱ_1/ᾱ_0 carries 3 roundings (two stored values,
    # one division) of u = 2⁻²⁴, i.e. 3u/β_1 ≈ 1.8e-3 relative in 1 − ratio ≈ β_1 = 1e-4; 1 − ᾱ_0 (1e-4)
    # and 1 − ᾱ_1 (2e-4) carry u/1e-4 + u/2e-4 ≈ 9e-4; the rest a few u. Worst case 2.7e-3: rtol 3e-3.
    # (A 1e-3 read off one machine was below that worst case.) Beyond t ≈ 20, β_t ≥ 5e-4 and it is < 5e-4.
    torch.testing.assert_close(sigma.square(), schedule.posterior_variance[t], rtol=3e-3, atol=1e-9)


def test_ddim_eta_one_step_matches_ddpm_step_in_distribution(schedule):
    """Same mean (with noise off) and same noise scale as the ancestral step."""
    g = torch.Generator().manual_seed(0)
    x_t, eps_hat = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t = torch.full((4,), 400)
    ddpm = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, generator=torch.Generator().manual_seed(1))
    ddim = dh.ddim_step(x_t, t, t - 1, eps_hat, schedule, eta=1.0, generator=torch.Generator().manual_seed(1))
    # Two formulas for the same mean and σ at t = 400 (√ᾱ ≈ 0.44): ~20 float32 roundings of terms
    # ≤ |x_t|/√ᾱ ≈ 9, i.e. ≤ 20·u·9 ≈ 1.1e-5; the two σ differ by the β-cancellation above, 3u/β_400
    # ≈ 2e-5 relative on σ·|z| ≤ 0.1·4: ≈ 1e-6. atol 1e-4 is 8× the sum; a wrong σ or mean is off by > 1e-3.
    torch.testing.assert_close(ddim.x_prev, ddpm.x_prev, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_step_without_clipping_is_algorithm_2(schedule, variance):
    """x_{t−1} = (x_t − β_t/√(1−ᾱ_t) · eps_hat)/√α_t + σ_t z, with the same z."""
    g = torch.Generator().manual_seed(2)
    x_t, eps_hat = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([1, 200, 999])
    step = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, variance=variance, generator=torch.Generator().manual_seed(7))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))
    b, a, ab = (schedule.betas[t].view(-1, 1, 1, 1), schedule.alphas[t].view(-1, 1, 1, 1), schedule.alpha_bars[t].view(-1, 1, 1, 1))
    sigma_sq = b if variance == "beta" else schedule.posterior_variance[t].view(-1, 1, 1, 1)
    expected = (x_t - b / (1 - ab).sqrt() * eps_hat) / a.sqrt() + sigma_sq.sqrt() * z
    # The package goes through x0_hat (rounding × 1/√ᾱ_999 ≈ 157) but then multiplies it by
    # √ᾱ_998·β/(1 − ᾱ) ≈ 1.3e-4, which cancels the amplification; at t = 1 the test's 1 − ᾱ_1 ≈ 2e-4
    # is relatively off by u/2e-4 ≈ 3e-4 on a term β_1/√(1 − ᾱ_1)·|eps| ≤ 0.03 (1e-5). With ~15
    # roundings of u·|x_t| ≤ u·4 (4e-6) the error stays ≤ 2e-5: atol 1e-3 leaves ample room.
    torch.testing.assert_close(step.x_prev, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_no_noise_is_added_at_the_last_step(schedule, variance):
    x_t, eps_hat = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t = torch.zeros(2, dtype=torch.long)
    a = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, variance=variance, clip_x0=CLIP, generator=torch.Generator().manual_seed(0))
    b = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, variance=variance, clip_x0=CLIP, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.x_prev, b.x_prev)  # different noise, same result: no noise
    # the last step returns x0_hat: at t = 0 the posterior coefficients are (1, 0) up to their float32
    # rounding, so x_prev = x0_hat (clipped to ±1) within 2 roundings of u·1 ≈ 1.2e-7; atol 1e-6 is 8×.
    torch.testing.assert_close(a.x_prev, a.x0_hat, atol=1e-6, rtol=0)
    last = dh.ddim_step(x_t, t, torch.full_like(t, -1), eps_hat, schedule, eta=1.0, clip_x0=CLIP, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(last.x_prev, last.x0_hat, rtol=0, atol=0)  # ᾱ_prev = 1 and σ = 0: exact


def test_noise_is_added_before_the_last_step(schedule):
    x_t, eps_hat, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.full((2,), 5)
    a = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, clip_x0=CLIP, generator=torch.Generator().manual_seed(0))
    b = dh.ddpm_step(x_t, t, t - 1, eps_hat, schedule, clip_x0=CLIP, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a.x_prev, b.x_prev)


def test_clip_x0_is_an_interval(schedule):
    """x0_hat is clipped to the interval given, and not at all with None (the default)."""
    x_t, t = torch.full((1, 1, 2, 2), 0.5), torch.full((1,), 999)  # eps_hat = -x_t: x0_hat ≈ 0.5 · 2/√ᾱ_999 ≫ 1
    for step in dh.STEPS.values():
        assert float(step(x_t, t, t - 1, -x_t, schedule).x0_hat.min()) > 100
        assert float(step(x_t, t, t - 1, -x_t, schedule, clip_x0=CLIP).x0_hat.max()) == 1.0
        assert float(step(x_t, t, t - 1, -x_t, schedule, clip_x0=(-0.5, 0.25)).x0_hat.max()) == 0.25


@pytest.mark.parametrize("method,num_steps,eta", [pytest.param("ddpm", None, None, marks=pytest.mark.slow), ("ddim", 5, 0.0), ("ddim", 5, 0.5)])
def test_samplers_are_deterministic_under_a_generator(tiny_unet, method, num_steps, eta):
    schedule = dh.make_schedule("cosine", 20)
    torch.nn.init.normal_(tiny_unet.head[-1].weight, std=0.1)
    spec = dh.SamplerSpec(method, num_steps=num_steps, eta=eta)
    run = lambda seed: dh.sample(tiny_unet, 2, dh.MNIST_PIXELS, schedule, spec, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    first, again, other = run(0), run(0), run(1)
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # the same program and seed: bit for bit
    assert not torch.allclose(first, other)
    assert first.shape == (2, 1, 32, 32) and float(first.abs().max()) <= 1.0


def test_ddim_with_eta_zero_is_deterministic_given_x_T(tiny_unet):
    schedule = dh.make_schedule("cosine", 20)
    x_T = torch.randn(2, 1, 32, 32)
    spec = dh.SamplerSpec("ddim", num_steps=4)
    ends = [list(dh.iterate_sampler(tiny_unet, x_T, dh.MNIST_PIXELS, schedule, spec, generator=torch.Generator().manual_seed(s)))[-1].x for s in (0, 1)]
    torch.testing.assert_close(ends[0], ends[1], rtol=0, atol=0)  # the generator is never drawn from


def test_iterate_sampler_yields_every_visited_step(tiny_unet):
    schedule = dh.make_schedule("cosine", 20)
    states = list(dh.iterate_sampler(tiny_unet, torch.randn(1, 1, 32, 32), dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=4)))
    assert [s.t for s in states] == dh.timesteps(20, 4) == [19, 13, 6, 0]
    assert len(list(dh.iterate_sampler(tiny_unet, torch.randn(1, 1, 32, 32), dh.MNIST_PIXELS, schedule, dh.SamplerSpec()))) == 20


class GaussianOracle(torch.nn.Module):
    """The exact ε-prediction for data x0 ~ N(mu, s²): E[eps | x_t] = √(1−ᾱ)(x_t − √ᾱ mu) / (ᾱ s² + 1 − ᾱ)."""

    def __init__(self, schedule, mu, s):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x_t, t, y=None):
        alpha_bar = self.schedule.alpha_bars[t].view(-1, 1, 1, 1)
        return (1 - alpha_bar).sqrt() * (x_t - alpha_bar.sqrt() * self.mu) / (alpha_bar * self.s**2 + 1 - alpha_bar)


def oracle_samples(schedule, method, num_steps, eta, mu=0.3, s=0.2, spacing="uniform", num_samples=20_000):
    spec = dh.SamplerSpec(method, num_steps=num_steps, eta=eta, spacing=spacing, clip_x0=False)
    return dh.sample(GaussianOracle(schedule, mu, s), num_samples, POINT, schedule, spec, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
@pytest.mark.parametrize("method,num_steps,eta", [("ddpm", None, None), ("ddim", 1000, 0.0), ("ddim", 1000, 1.0)])
def test_samplers_with_an_exact_oracle_recover_a_gaussian_data_distribution(schedule, method, num_steps, eta):
    out = oracle_samples(schedule, method, num_steps, eta)
    # n = 20,000 samples of N(0.3, 0.2²): the mean's standard error is 0.2/√n ≈ 0.0014 (abs 0.01 is 7 of
    # them), the std's relative one 1/√(2n) = 0.005 (rel 0.03 is 6). The 1000-step discretisation error
    # of the exact-score sampler is far below both.
    assert float(out.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(out.std()) == pytest.approx(0.2, rel=0.03)


@pytest.mark.slow
def test_ddim_discretisation_error_shrinks_with_more_steps(schedule):
    """With few steps DDIM underestimates the spread of a narrow distribution; more steps fix it."""
    errors = [abs(float(oracle_samples(schedule, "ddim", n, 0.0).std()) - 0.2) for n in (20, 100, 1000)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("method", ["ddim", "dpm-solver++"])
def test_a_single_step_jumps_from_pure_noise_to_the_posterior_mean(linear_schedule, method):
    """num_steps=1 visits t = T−1 only and lands on x0_hat = E[x0 | x_T], which for x0 ~ N(mu, s²) is
    mu + √ᾱ s² (x_T − √ᾱ mu) / (ᾱ s² + 1 − ᾱ): at ᾱ_{T−1} ≈ 4e-5, the data mean for every x_T."""
    schedule = linear_schedule  # its expected numbers are worked out for the linear schedule
    assert dh.timesteps(1000, 1) == [999]
    mu, s = 0.3, 0.2
    x_T = torch.randn((1000, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    states = list(dh.iterate_sampler(GaussianOracle(schedule, mu, s), x_T, POINT, schedule, dh.SamplerSpec(method, num_steps=1, clip_x0=False)))
    assert [state.t for state in states] == [999]
    alpha_bar = schedule.alpha_bars[999].double()
    expected = mu + alpha_bar.sqrt() * s**2 * (x_T.double() - alpha_bar.sqrt() * mu) / (alpha_bar * s**2 + 1 - alpha_bar)
    # Error analysis (u = 2⁻²⁴, float32 unit roundoff; `expected` is float64 from the same float32 ᾱ,
    # so its own error is ~1e-16 and ᾱ itself is common to both sides). x0_hat = (x_T − √(1−ᾱ)·ε̂)/√ᾱ
    # subtracts two numbers of size |x_T| to leave √ᾱ·x0_hat ≈ 2e-3, so every rounding of size u·|x_T| in
    # the numerator is multiplied by 1/√ᾱ ≈ 157 in x0_hat. Roundings of relative size u on |x_T|, counted
    # with each division as two (x·(1/y), as vectorised kernels may compute it) and a square root of a
    # rounded argument as two:
    #   the oracle's ε̂ = √(1−ᾱ)(x_T − √ᾱ·mu)/(ᾱ s² + 1 − ᾱ) in float32: √(1−ᾱ) 2, x_T − … 1, the product 1,
    #     the denominator 2 (+1, −ᾱ; the ᾱ s² roundings are ᾱ-small), the division 2            → 8
    #   predict_x0: the stored float32 √(1−ᾱ) 1, its product with ε̂ 1, the subtraction 1         → 3
    # so |numerator error| ≤ 11·u·|x_T|. The roundings proportional to √ᾱ·mu (of √ᾱ·mu in the oracle) and
    # to x0_hat (the stored √ᾱ and the final division, 3 roundings of u·|x0_hat| ≈ u·mu) are covered
    # by c = mu. With k = 12 ≥ 11:  |Δ_i| ≤ 12·u·(|x_T,i| + mu)/√ᾱ, ≤ 4e-4 at |x_T| = 3.5 (observed:
    # about 2.7·u·(|x_T| + mu)/√ᾱ on AMD EPYC, max 8.8e-5; 1.25e-4 on an Intel Xeon, which failed the old
    # fixed atol=1e-4). The bound stays below 1e-3 everywhere, so an error of 1e-2 (a wrong coefficient,
    # an off-by-one ᾱ) cannot hide in it: checked below.
    u = torch.finfo(torch.float32).eps / 2
    bound = 12 * u * (x_T.double().abs() + mu) / alpha_bar.sqrt()
    assert float(bound.max()) < 1e-3
    error = (states[0].x.double() - expected).abs()
    assert bool((error <= bound).all()), f"max |Δ| {float(error.max()):.3g}, worst |Δ|/bound {float((error / bound).max()):.3g}"
    torch.testing.assert_close(states[0].x, states[0].x0_hat, rtol=0, atol=0)  # t_prev = −1: ᾱ_prev = 1, σ_prev = 0, exact
    # The posterior mean's spread over x_T is √ᾱ·s²·std(x_T) ≈ 2.5e-4, and the rounding above is ≤ 4e-4 per
    # element: the mean of 1,000 lies within 1e-3 of mu and the std below 1e-3 (both > 2× the worst case).
    assert float(states[0].x.mean()) == pytest.approx(mu, abs=1e-3) and float(states[0].x.std()) < 1e-3


def test_timesteps_spacings():
    assert dh.timesteps(1000, 1000) == list(range(999, -1, -1))
    quadratic = dh.timesteps(1000, 10, "quadratic")
    assert quadratic[0] == 999 and quadratic[-1] == 0
    gaps = [a - b for a, b in zip(quadratic, quadratic[1:])]
    assert gaps == sorted(gaps, reverse=True)  # denser near t = 0
    assert dh.timesteps(10, 1) == dh.timesteps(10, 1, "quadratic") == [9]  # one step: from pure noise
    assert dh.timesteps(10, 2) == [9, 0]


def test_sampler_bad_inputs(schedule, tiny_unet):
    x = torch.randn(1, 1, 4, 4)
    t = torch.tensor([5])
    with pytest.raises(ValueError, match="variance must be one of"):
        dh.ddpm_step(x, t, t - 1, x, schedule, variance="learned")
    with pytest.raises(ValueError, match="steps from t to t - 1"):
        dh.ddpm_step(x, t, t - 2, x, schedule)
    with pytest.raises(ValueError, match="eta must lie in"):
        dh.ddim_step(x, t, t - 1, x, schedule, eta=2.0)
    with pytest.raises(ValueError, match="t_prev"):
        dh.ddim_step(x, t, t, x, schedule)
    with pytest.raises(ValueError, match="method must be one of"):
        dh.SamplerSpec(method="euler")
    with pytest.raises(ValueError, match="use method 'ddim'"):
        dh.sample(tiny_unet, 1, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddpm", num_steps=10))
    with pytest.raises(ValueError, match=r"x_T must have shape \(B, 1, 32, 32\)"):
        next(dh.iterate_sampler(tiny_unet, x, dh.MNIST_PIXELS, schedule, dh.SamplerSpec()))
    with pytest.raises(ValueError, match="num_steps must lie in"):
        dh.timesteps(10, 11)
    with pytest.raises(ValueError, match="spacing"):
        dh.timesteps(10, 5, "cubic")


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(method="ddpm", eta=0.0), "eta=0.0 does not apply to method 'ddpm'"),
        (dict(method="ddpm", spacing="quadratic"), "spacing='quadratic'"),
        (dict(method="ddim", variance="posterior"), "variance='posterior' does not apply to method 'ddim'"),
        (dict(method="dpm-solver++", eta=0.5), re.escape("eta=0.5 does not apply to method 'dpm-solver++'")),
        (dict(method="dpm-solver++", variance="beta"), re.escape("variance='beta' does not apply to method 'dpm-solver++'")),
        (dict(method="ddim", eta=1.5), "eta must be a finite number in"),
        (dict(method="ddpm", variance="learned"), "variance must be one of"),
        (dict(method="ddim", num_steps=0), "num_steps must be an integer"),
        (dict(method="ddim", spacing="cubic"), "spacing must be one of"),
        (dict(method="ddim", clip_x0=(-1.0, 1.0)), "clip_x0 must be True or False"),
    ],
)
def test_sampler_spec_refuses_options_that_do_not_apply(options, match):
    with pytest.raises(ValueError, match=match):
        dh.SamplerSpec(**options)


def test_sampler_spec_is_frozen_and_takes_the_options_of_its_method():
    assert dh.SamplerSpec("ddpm", variance="beta").variance == "beta"
    assert dh.SamplerSpec("ddim", num_steps=10, eta=1.0, spacing="quadratic").steps(1000) == dh.timesteps(1000, 10, "quadratic")
    assert dh.SamplerSpec("dpm-solver++", num_steps=5).steps(20) == dh.timesteps(20, 5)
    assert dh.SamplerSpec().steps(20) == list(range(19, -1, -1))  # ddpm: every step
    with pytest.raises(dataclasses.FrozenInstanceError):
        dh.SamplerSpec().eta = 1.0


@pytest.mark.parametrize(
    "method,options",
    [("ddpm", dict(eta=0.0)), ("ddim", dict(variance="posterior")), ("dpm-solver++", dict(eta=0.0)), ("dpm-solver++", dict(variance="beta")),
     ("dpm-solver++-sde", dict(eta=1.0))],
)
def test_each_step_refuses_options_that_do_not_apply(schedule, method, options):
    x, t = torch.randn(1, 1, 4, 4), torch.tensor([5])
    (name, value), = options.items()
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r} does not apply to method '{method}'")):
        dh.STEPS[method](x, t, t - 1, x, schedule, **options)


def test_every_step_has_the_same_signature_and_meaning(schedule):
    """The steps are interchangeable values: called alike, each returns Step(x_prev, x0_hat)."""
    assert set(dh.STEPS) == {"ddpm", "ddim", "dpm-solver++", "dpm-solver++-sde"}
    signatures = {name: list(inspect.signature(step).parameters) for name, step in dh.STEPS.items()}
    assert all(names == signatures["ddpm"] for names in signatures.values()), signatures
    g = torch.Generator().manual_seed(6)
    x_t, eps_hat = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    t = torch.tensor([1, 600])
    x0_hat = dh.predict_x0(x_t, t, eps_hat, schedule)
    results = {}
    for name, step in dh.STEPS.items():
        results[name] = step(x_t, t, t - 1, eps_hat, schedule, clip_x0=None, previous=None, generator=torch.Generator().manual_seed(0))
        assert isinstance(results[name], dh.Step) and results[name].x_prev.shape == x_t.shape
        torch.testing.assert_close(results[name].x0_hat, x0_hat, rtol=0, atol=0)  # the same predict_x0 call
    # DPM-Solver++ without history is DDIM with η = 0 exactly; DDPM adds noise (and its mean differs by O(β))
    # The two formulas (σ_prev/σ_t·x_t + α_prev(1 − e^{−h})·x0_hat against √ᾱ_prev·x0_hat + √(1 − ᾱ_prev)·eps)
    # differ by ~10 roundings of u·|x_t| ≤ u·4 and x0_hat is multiplied back by √ᾱ_prev, so no
    # amplification survives: ≤ 2.4e-6, atol 1e-5 is 4×.
    torch.testing.assert_close(results["dpm-solver++"].x_prev, results["ddim"].x_prev, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(results["ddpm"].x_prev, results["ddim"].x_prev)


def test_dpm_solver_first_order_step_is_ddim_with_eta_zero(schedule):
    g = torch.Generator().manual_seed(3)
    x_t, eps_hat = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t, t_prev = torch.tensor([999, 500, 20]), torch.tensor([800, 100, -1])
    for clip in (CLIP, None):
        dpm = dh.dpm_solver_step(x_t, t, t_prev, eps_hat, schedule, clip_x0=clip)
        ddim = dh.ddim_step(x_t, t, t_prev, eps_hat, schedule, eta=0.0, clip_x0=clip)
        # As in test_every_step_has_the_same_signature_and_meaning: ~10 roundings of u·|x_t| ≤ 2.4e-6.
        torch.testing.assert_close(dpm.x_prev, ddim.x_prev, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dpm.x0_hat, ddim.x0_hat, rtol=0, atol=0)  # the same function of the same inputs


def test_dpm_solver_second_order_step_matches_the_formula(schedule):
    """x_s = σ_s/σ_t x_t + α_s (1 − e^{−h}) [(1 + 1/2r) x0_hat − 1/2r x0_before] (Lu et al. 2022, Alg. 2)."""
    g = torch.Generator().manual_seed(4)
    x_t, eps_hat, x0_before = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    t_before, t, s = torch.full((2,), 700), torch.full((2,), 500), torch.full((2,), 300)
    step = dh.dpm_solver_step(x_t, t, s, eps_hat, schedule, previous=(t_before, x0_before))
    ab = schedule.alpha_bars.double()
    lam = lambda k: 0.5 * torch.log(ab[k] / (1 - ab[k]))  # noqa: E731
    h, r = lam(300) - lam(500), (lam(500) - lam(700)) / (lam(300) - lam(500))
    x0_hat = (x_t.double() - (1 - ab[500]).sqrt() * eps_hat.double()) / ab[500].sqrt()
    d = (1 + 0.5 / r) * x0_hat - 0.5 / r * x0_before.double()
    expected = ((1 - ab[300]) / (1 - ab[500])).sqrt() * x_t.double() + ab[300].sqrt() * (1 - torch.exp(-h)) * d
    # float32 against float64: x0_hat at t = 500 (1/√ᾱ ≈ 3.6) carries ~5 roundings of u·|x_t| ≤ u·4,
    # the extrapolation weights (1 + 1/2r) ≈ 2 and 1/2r ≈ 1 double it, and ~10 more roundings of the
    # result's size (≤ 10): ≤ 5·u·4·3.6·3 + 10·u·10 ≈ 2.9e-5. atol 1e-4 is 3×.
    torch.testing.assert_close(step.x_prev.double(), expected, rtol=1e-4, atol=1e-4)


def test_dpm_solver_last_steps_are_first_order(schedule):
    """Into t = 0 (where λ jumps) and past it, the history is ignored."""
    g = torch.Generator().manual_seed(5)
    x_t, eps_hat, x0_before = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    t = torch.full((2,), 50)
    for t_prev in (0, -1):
        s = torch.full((2,), t_prev)
        with_history = dh.dpm_solver_step(x_t, t, s, eps_hat, schedule, clip_x0=CLIP, previous=(torch.full((2,), 100), x0_before))
        without = dh.dpm_solver_step(x_t, t, s, eps_hat, schedule, clip_x0=CLIP).x_prev
        torch.testing.assert_close(with_history.x_prev, without, rtol=0, atol=0)  # the history is not used at all


@pytest.mark.slow
def test_dpm_solver_sampling_is_deterministic_and_recovers_a_gaussian(schedule):
    out = oracle_samples(schedule, "dpm-solver++", 1000, None)
    # Monte Carlo bounds as in test_samplers_with_an_exact_oracle_recover_a_gaussian_data_distribution.
    assert float(out.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(out.std()) == pytest.approx(0.2, rel=0.03)
    again = oracle_samples(schedule, "dpm-solver++", 10, None, num_samples=100)
    x_T = torch.randn((100, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    spec = dh.SamplerSpec("dpm-solver++", num_steps=10, clip_x0=False)
    *_, last = dh.iterate_sampler(GaussianOracle(schedule, 0.3, 0.2), x_T, POINT, schedule, spec, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(again, last.x, rtol=0, atol=0)  # the per-step generator is never used


def test_second_order_solver_beats_ddim_on_a_gaussian_with_few_steps(schedule):
    def error(method):
        out = oracle_samples(schedule, method, 10, None, spacing="quadratic")
        return abs(float(out.std()) - 0.2)
    assert error("dpm-solver++") < 0.5 * error("ddim")


def test_sde_solver_first_order_step_is_ddim_with_eta_one(linear_schedule):
    """Without history, SDE-DPM-Solver++ is DDIM with η = 1: same mean, same noise scale, same draw."""
    schedule = linear_schedule  # its expected numbers are worked out for the linear schedule
    g = torch.Generator().manual_seed(8)
    x_t, eps_hat = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t, t_prev = torch.tensor([999, 500, 20]), torch.tensor([800, 100, 3])
    for clip in (CLIP, None):
        sde = dh.dpm_solver_sde_step(x_t, t, t_prev, eps_hat, schedule, clip_x0=clip, generator=torch.Generator().manual_seed(1))
        ddim = dh.ddim_step(x_t, t, t_prev, eps_hat, schedule, eta=1.0, clip_x0=clip, generator=torch.Generator().manual_seed(1))
        # Two formulas for the same mean and σ (no amplification survives, as for DPM-Solver++ against
        # DDIM: ≤ 2.4e-6), plus σ from ddim_sigma's cancellation 1 − ᾱ_t/ᾱ_prev against e^{−2h}: at the
        # pair (20, 3), 1 − ᾱ_20/ᾱ_3 ≈ 3e-3 carries 3u/3e-3 ≈ 6e-5 relative on σ·|z| ≤ 0.05·4 (1.2e-5). atol 1e-4 is 7×.
        torch.testing.assert_close(sde.x_prev, ddim.x_prev, rtol=1e-4, atol=1e-4)
    last = dh.dpm_solver_sde_step(x_t, t, torch.full((3,), -1), eps_hat, schedule, clip_x0=None, generator=g)
    torch.testing.assert_close(last.x_prev, last.x0_hat, rtol=0, atol=0)  # no noise past the last step: σ_prev = 0, α_prev = 1


def test_sde_solver_second_order_step_matches_the_formula(schedule):
    """x_s = σ_s/σ_t e^{−h} x_t + α_s (1 − e^{−2h}) D + σ_s √(1 − e^{−2h}) z, D as for DPM-Solver++(2M)."""
    g = torch.Generator().manual_seed(4)
    x_t, eps_hat, x0_before = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    t_before, t, s = torch.full((2,), 700), torch.full((2,), 500), torch.full((2,), 300)
    step = dh.dpm_solver_sde_step(x_t, t, s, eps_hat, schedule, previous=(t_before, x0_before), generator=torch.Generator().manual_seed(2))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2)).double()
    ab = schedule.alpha_bars.double()
    lam = lambda k: 0.5 * torch.log(ab[k] / (1 - ab[k]))  # noqa: E731
    h, r = lam(300) - lam(500), (lam(500) - lam(700)) / (lam(300) - lam(500))
    x0_hat = (x_t.double() - (1 - ab[500]).sqrt() * eps_hat.double()) / ab[500].sqrt()
    d = (1 + 0.5 / r) * x0_hat - 0.5 / r * x0_before.double()
    sigma_s, sigma_t = (1 - ab[300]).sqrt(), (1 - ab[500]).sqrt()
    expected = sigma_s / sigma_t * torch.exp(-h) * x_t.double() + ab[300].sqrt() * (1 - torch.exp(-2 * h)) * d + sigma_s * (1 - torch.exp(-2 * h)).sqrt() * z
    # As for the deterministic second-order step (≤ 2.9e-5), plus the noise term σ_s√(1 − e^{−2h})·|z| ≤ 2
    # with a few roundings (≈ 5e-7): atol 1e-4 is 3×.
    torch.testing.assert_close(step.x_prev.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("num_steps", [1000, 20])
def test_sde_solver_recovers_a_gaussian(schedule, num_steps):
    out = oracle_samples(schedule, "dpm-solver++-sde", num_steps, None, spacing="log_snr")
    # Monte Carlo: mean within 7 standard errors (0.0014 each). The std has relative standard error
    # 0.005, and with 20 steps the solver's own bias: +2.9% (std 0.2058 with 200,000 samples), so
    # rel 0.05 leaves 0.021, 4 standard errors, beyond the bias (at 1000 steps the bias is < 0.1%).
    assert float(out.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(out.std()) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("spacing", ["log_snr", "karras", "flow_time"])
def test_noise_level_spacings(linear_schedule, spacing):
    schedule = linear_schedule  # its expected numbers are worked out for the linear schedule
    for n in (2, 5, 20, 999, 1000):
        steps = dh.timesteps(1000, n, spacing, schedule=schedule)
        assert len(steps) == n and steps == sorted(set(steps), reverse=True) and steps[0] == 999 and steps[-1] == 0
    assert dh.timesteps(1000, 1000, spacing, schedule=schedule) == list(range(999, -1, -1))
    lam = schedule.log_snr[dh.timesteps(1000, 10, spacing, schedule=schedule)].double()
    gaps = (lam[1:] - lam[:-1]).tolist()
    if spacing == "log_snr":  # evenly spaced in λ, up to the rounding to whole steps
        # rounding each interior step to a whole t moves its λ by at most half of one step's Δλ, ≤ 6% of
        # the mean gap for these 10 steps (largest near t = 0); a gap has two ends: ≤ 12% < 15%
        # (a bound from the schedule's table, not a float32 tolerance; the spread seen is 4.3%)
        assert max(gaps) - min(gaps) < 0.15 * sum(gaps) / len(gaps)
    elif spacing == "flow_time":  # evenly spaced in the flow's time τ = σ/(α + σ), up to the rounding to whole steps
        alpha_bar = schedule.alpha_bars.double()
        tau = (1 - alpha_bar).sqrt() / (alpha_bar.sqrt() + (1 - alpha_bar).sqrt())
        visited = tau[dh.timesteps(1000, 10, spacing, schedule=schedule)]
        tau_gaps = (visited[:-1] - visited[1:]).tolist()
        # nearest-index rounding moves each end by at most half of the largest one-step change of τ: a gap by ≤ one of it
        assert max(tau_gaps) - min(tau_gaps) <= 2 * float((tau[1:] - tau[:-1]).max())
    else:  # karras: steps crowd towards low noise (large λ), so the λ gaps grow... then the index floor binds
        assert gaps[0] < gaps[3]
    with pytest.raises(ValueError, match="needs the schedule"):
        dh.timesteps(1000, 10, spacing)
    spec = dh.SamplerSpec("ddim", num_steps=10, eta=1.0, spacing=spacing)
    assert spec.steps(1000, schedule) == dh.timesteps(1000, 10, spacing, schedule=schedule)


@pytest.mark.slow
def test_iterate_sampler_passes_spacing_and_variance(tiny_unet):
    schedule = dh.make_schedule("linear", 50)
    x_T = torch.randn(1, 1, 32, 32)
    states = list(dh.iterate_sampler(tiny_unet, x_T, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=5, spacing="quadratic")))
    assert [s.t for s in states] == dh.timesteps(50, 5, "quadratic")
    torch.nn.init.normal_(tiny_unet.head[-1].weight, std=0.1)
    draw = lambda variance: dh.sample(tiny_unet, 1, dh.MNIST_PIXELS, schedule, dh.SamplerSpec(variance=variance), generator=torch.Generator().manual_seed(0))  # noqa: E731
    assert not torch.allclose(draw("posterior"), draw("beta"))


def test_dpm_solver_bad_inputs(schedule):
    x, t = torch.randn(1, 1, 4, 4), torch.tensor([5])
    with pytest.raises(ValueError, match="t_prev"):
        dh.dpm_solver_step(x, t, t, x, schedule)
    with pytest.raises(ValueError, match=r"previous\[1\]"):
        dh.dpm_solver_step(x, t, t - 1, x, schedule, previous=(t + 1, torch.randn(1, 1, 4, 5)))


def test_dpm_solver_refuses_a_history_that_is_not_earlier_by_name(schedule):
    """The step before must be noisier (t_before > t); the error names ``previous``."""
    x, t = torch.randn(1, 1, 4, 4), torch.tensor([5])
    with pytest.raises(ValueError, match=r"previous\[0\]"):
        dh.dpm_solver_step(x, t, t - 1, x, schedule, previous=(t, x))


def test_sample_clamps_only_to_a_known_range(schedule):
    """With eps_hat = 0 one DDIM step lands on x0_hat = x_T / √ᾱ_{T−1}, far beyond ±1: kept as is
    for data without a known range, clamped to the range of data that has one."""
    spec = dh.SamplerSpec("ddim", num_steps=1, clip_x0=False)
    x_T = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    expected = x_T / schedule.sqrt_alpha_bars[999]
    unranged = dh.sample(ZeroModel(), 4, dh.DataSpace((1, 8, 8)), schedule, spec, generator=torch.Generator().manual_seed(0))
    # x_T/√ᾱ against (x_T − √(1 − ᾱ)·0)/√ᾱ: the same division of the same values, one rounding (defaults).
    torch.testing.assert_close(unranged, expected)
    assert float(unranged.abs().max()) > 1.0
    pixels = dh.DataSpace((1, 8, 8), (-1.0, 1.0))
    ranged = dh.sample(ZeroModel(), 4, pixels, schedule, spec, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ranged, expected.clamp(-1, 1))
    clipped = dh.sample(ZeroModel(), 4, pixels, schedule, spec.replace(clip_x0=True), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(clipped, expected.clamp(-1, 1))  # x0_hat clipped, then the last step returns it
    with pytest.raises(ValueError, match="clip_x0=True needs data with a known range"):
        dh.sample(ZeroModel(), 4, dh.DataSpace((1, 8, 8)), schedule, spec.replace(clip_x0=True))


class RecordingModel(torch.nn.Module):
    """Predicts a fixed function of (x_t, t, y) and records the batch sizes it is called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_t, t, y=None):
        self.calls.append((x_t.shape[0], None if y is None else y.tolist()))
        shift = 0.0 if y is None else y.view(-1, 1, 1, 1).float() / 10
        return 0.3 * x_t + shift


@pytest.mark.parametrize("method,eta", [("ddim", 0.0), ("dpm-solver++", None)])
def test_sampling_in_chunks_matches_one_batch_for_deterministic_samplers(schedule, method, eta):
    model, y = RecordingModel(), torch.arange(5)
    spec = dh.SamplerSpec(method, num_steps=4, eta=eta)
    run = lambda batch_size: dh.sample(model, 5, dh.MNIST_PIXELS, schedule, spec, y=y, batch_size=batch_size, generator=torch.Generator().manual_seed(0))  # noqa: E731
    whole = run(None)
    model.calls.clear()
    chunked = run(2)
    torch.testing.assert_close(chunked, whole)  # elementwise maths per item: chunking changes no rounding (defaults)
    assert [size for size, _ in model.calls] == [2] * 4 + [2] * 4 + [1] * 4  # 3 chunks x 4 steps
    assert [labels for _, labels in model.calls[::4]] == [[0, 1], [2, 3], [4]]  # labels follow their images


def test_sampling_in_chunks_repeats_for_a_given_batch_size(schedule):
    spec = dh.SamplerSpec("ddim", num_steps=4, eta=1.0)
    run = lambda seed: dh.sample(RecordingModel(), 5, dh.MNIST_PIXELS, schedule, spec, batch_size=2, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        dh.sample(RecordingModel(), 5, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=4), batch_size=0)
    with pytest.raises(ValueError, match="sample_batch_size"):
        dh.config.TINY.replace(sample_batch_size=0)


def test_a_step_function_given_to_sample_replaces_the_methods_own(schedule):
    """``step=`` runs another step function through the same loop: the built-in one passed explicitly
    gives the same samples; a wrapper sees every visited timestep with the spec's options."""
    spec = dh.SamplerSpec("ddim", num_steps=5, eta=1.0, clip_x0=False)
    oracle = GaussianOracle(schedule, 0.3, 0.2)
    draw = lambda **kw: dh.sample(oracle, 64, POINT, schedule, spec, generator=torch.Generator().manual_seed(1), **kw)
    seen = []

    def recording_step(x_t, t, t_prev, eps_hat, schedule, **options):
        seen.append((int(t[0]), int(t_prev[0]), options["eta"]))
        return dh.ddim_step(x_t, t, t_prev, eps_hat, schedule, **options)

    torch.testing.assert_close(draw(step=dh.ddim_step), draw(), rtol=0, atol=0)
    torch.testing.assert_close(draw(step=recording_step), draw(), rtol=0, atol=0)
    visited = dh.timesteps(schedule.T, 5)
    assert seen == [(t, p, 1.0) for t, p in zip(visited, visited[1:] + [-1])]
    halved = lambda *args, **options: dh.Step(*(0.5 * v for v in dh.ddim_step(*args, **options)))
    assert not torch.allclose(draw(step=halved), draw())
    with pytest.raises(ValueError, match="step must be a step function .* got str"):
        draw(step="ddim")


def test_an_unclipped_ddim_step_carries_an_eps_error_times_the_alpha_bar_ratio():
    """Chapter 5's reason why clipping matters on the cosine schedule: a deterministic step t → s is linear in
    eps_hat with coefficient c = √(1 − ᾱ_s) − √(ᾱ_s/ᾱ_t)·√(1 − ᾱ_t), so an error δ of eps_hat reaches x_s as c·δ, and
    |c| is about √(ᾱ_s/ᾱ_t) where ᾱ_t is tiny (the 5-step sampler's first jump, 7.7·10³ on the cosine schedule)."""
    schedule = dh.make_schedule("cosine", 1000)
    t_value, s_value = dh.timesteps(1000, 5)[:2]
    t, s = torch.tensor([t_value]), torch.tensor([s_value])
    x_t, eps = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    delta = 1e-3 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    a_t, a_s = schedule.alpha_bars[t_value].double(), schedule.alpha_bars[s_value].double()
    c = float((1 - a_s).sqrt() - (a_s / a_t).sqrt() * (1 - a_t).sqrt())
    moved = dh.ddim_step(x_t, t, s, eps + delta, schedule).x_prev - dh.ddim_step(x_t, t, s, eps, schedule).x_prev   # no clipping
    # float32: each x_s is a difference of terms of size |c| ≈ 7.7e3 with relative rounding ~1e-7 each, so an
    # absolute error ~1e-3 against differences |c·δ| of order 8: rtol 1e-3 leaves a margin of about 10
    torch.testing.assert_close(moved.double(), c * delta.double(), rtol=1e-3, atol=2e-3)
    assert abs(abs(c) - float((a_s / a_t).sqrt())) < 1.0 and abs(c) > 5_000


def test_a_step_names_a_bad_clip_range():
    x = torch.zeros(1, 1, 4, 4)
    t = torch.tensor([10])
    for bad in (False, (1.0, -1.0), (-1.0,), "[-1, 1]"):
        with pytest.raises(ValueError, match=r"clip_x0 must be None \(no clipping\) or a range \(low, high\)"):
            dh.ddim_step(x, t, t - 1, x, dh.make_schedule("linear", 100), clip_x0=bad)


def test_max_noise_starts_every_spacing_at_the_last_index_at_or_below_it():
    schedule = dh.make_schedule("cosine", 1000)
    sigma = schedule.log_snr.double().mul(-0.5).exp()  # √((1 − ᾱ)/ᾱ), increasing in t
    top = dh.spacings.start_index(1000, 80.0, schedule)
    assert float(sigma[top]) <= 80.0 < float(sigma[top + 1]) and top < 999
    for spacing in ("uniform", "quadratic", "log_snr", "karras", "flow_time"):
        spec = dh.SamplerSpec("dpm-solver++-sde", num_steps=10, spacing=spacing, max_noise=80.0)
        steps = spec.steps(1000, schedule)
        assert len(steps) == 10 and steps == sorted(set(steps), reverse=True) and steps[0] == top and steps[-1] == 0
        assert "max_noise=80" in str(spec)
    assert dh.SamplerSpec("ddim", max_noise=80.0).steps(1000, schedule) == list(range(top, -1, -1))  # every index from the first
    assert dh.SamplerSpec("ddim", num_steps=10).steps(1000, schedule)[0] == 999  # without it, as before
    assert dh.SamplerSpec("ddim", num_steps=1, max_noise=80.0).steps(1000, schedule) == [top]


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: dh.SamplerSpec("ddim", num_steps=10, max_noise=80.0).steps(1000), "max_noise places the first step by noise level, so it needs the schedule"),
    (lambda s: dh.SamplerSpec("ddim", num_steps=10, max_noise=1e-3).steps(1000, s), "max_noise must be at least the schedule's smallest noise level"),
    (lambda s: dh.SamplerSpec("ddim", num_steps=10, max_noise=-1.0), "max_noise"),
    (lambda s: dh.SamplerSpec("ddpm", max_noise=80.0), "method 'ddpm' visits every one of the T steps"),
    (lambda s: dh.timesteps(1000, 1000, schedule=s, max_noise=80.0), r"num_steps must lie in \[1, 991\] \(the indices with noise level ≤ max_noise=80\)"),
])
def test_bad_max_noise_is_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call(dh.make_schedule("cosine", 1000))
