"""The variational bound: Gaussian KLs, the prior term, the discretised decoder and the per-step terms."""

import math

import pytest
import torch
from torch import nn

import ddpm_helpers as dh

E = dh.elbo


class Oracle(nn.Module):
    """The exact noise predictor when the data is one known image x_star: eps = (x_t − √ᾱ_t x_star)/√(1 − ᾱ_t)."""

    def __init__(self, x_star: torch.Tensor, schedule: dh.NoiseSchedule):
        super().__init__()
        self.x_star, self.schedule = x_star, schedule

    def forward(self, x_t, t, y=None):
        return dh.predict_eps(x_t, t, self.x_star.expand_as(x_t), self.schedule)


class Constant(nn.Module):
    """Predicts the same eps_hat whatever x_t is (zeros: the untrained U-Net, whose last layer starts at 0)."""

    def __init__(self, eps_hat: torch.Tensor):
        super().__init__()
        self.eps_hat = eps_hat

    def forward(self, x_t, t, y=None):
        return self.eps_hat.expand_as(x_t)


def grid_image(generator: torch.Generator, size: int = 4) -> torch.Tensor:
    """One (1, 1, size, size) image on the 256-level grid, with both extreme levels present."""
    pixels = torch.randint(0, 256, (1, 1, size, size), generator=generator, dtype=torch.uint8)
    pixels[0, 0, 0, 0], pixels[0, 0, 0, 1] = 0, 255
    return dh.to_model_range(pixels)


def bin_mass(x: float, mean: float, sigma: float) -> float:
    """Mass of N(mean, σ²) on the bin of pixel level x, by hand with math.erf."""
    cdf = lambda z: 0.5 * (1 + math.erf((z - mean) / (sigma * math.sqrt(2))))
    upper = 1.0 if x > 1 - 1 / 255 else cdf(x + 1 / 255)
    lower = 0.0 if x < -1 + 1 / 255 else cdf(x - 1 / 255)
    return upper - lower


def test_kl_of_identical_gaussians_is_zero():
    mean, logvar = torch.randn(10), torch.randn(10)
    # expm1(0) − 0 + 0²·e^{−logvar} is 0 exactly in any precision
    torch.testing.assert_close(E.normal_kl(mean, logvar, mean, logvar), torch.zeros(10), rtol=0, atol=0)


def test_kl_with_equal_variances_is_a_scaled_squared_distance():
    g = torch.Generator().manual_seed(0)
    m1, m2, logvar = torch.randn(50, generator=g), torch.randn(50, generator=g), torch.randn(50, generator=g)
    # log_ratio is 0 exactly; ½(m1 − m2)²·e^{−logvar} against (m1 − m2)²/(2e^{logvar}): 4 roundings each
    # side plus exp's own ≤ 1-2 ulp, i.e. ≤ 12·u ≈ 7e-7 relative, inside the float32 default rtol 1.3e-6.
    torch.testing.assert_close(E.normal_kl(m1, logvar, m2, logvar), (m1 - m2) ** 2 / (2 * logvar.exp()))


def test_kl_matches_monte_carlo():
    """KL = E_{x ~ N1}[log N1(x) − log N2(x)], estimated from 200,000 draws; within 5 standard errors."""
    g = torch.Generator().manual_seed(1)
    n = 200_000
    for m1, v1, m2, v2 in [(0.3, 0.5, -0.2, 1.5), (1.0, 2.0, 0.0, 0.3), (0.0, 1e-2, 0.05, 2e-2)]:
        x = m1 + math.sqrt(v1) * torch.randn(n, generator=g, dtype=torch.float64)
        log_ratio = (torch.distributions.Normal(m1, math.sqrt(v1)).log_prob(x)
                     - torch.distributions.Normal(m2, math.sqrt(v2)).log_prob(x))
        kl = E.normal_kl(torch.tensor(m1), torch.tensor(math.log(v1)), torch.tensor(m2), torch.tensor(math.log(v2)))
        assert abs(log_ratio.mean() - kl) < 5 * log_ratio.std() / math.sqrt(n)


def test_kl_broadcasts_and_rejects_mismatched_shapes():
    assert E.normal_kl(torch.zeros(3, 1), torch.zeros(1, 4), 0.0, 0.0).shape == (3, 4)
    with pytest.raises(ValueError, match="mean1"):
        E.normal_kl(torch.zeros(3), torch.zeros(4), 0.0, 0.0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_prior_term_is_small_positive_and_matches_the_closed_form(name):
    schedule = dh.make_schedule(name, 1000)
    x0 = grid_image(torch.Generator().manual_seed(2), size=8).repeat(3, 1, 1, 1)
    x0[1] = -1.0
    x0[2] = 1.0
    a = float(schedule.alpha_bars[-1])
    by_hand = 0.5 * (a * x0.double() ** 2 - a - math.log1p(-a)).flatten(1).sum(1)   # float64, per image
    kl = E.prior_kl(x0, schedule)
    assert kl.shape == (3,) and bool((kl > 0).all())
    # float32 per pixel ½[ᾱx² + expm1(l) − l] with l = log(1 − ᾱ) ≈ −4e-5: expm1(l) − l cancels, costing
    # ~2u·4e-5 ≈ 5e-12 per pixel, and the 64-term sum ≤ 64u ≈ 4e-6 relative. Every image has pixels at
    # ±1 (grid_image), so the sum is ≥ ½ᾱ ≈ 2e-5 and the cancellation adds ≤ 64·5e-12/2e-5 ≈ 2e-5
    # relative: rtol 1e-4 is 4× the sum of both.
    torch.testing.assert_close(kl.double(), by_hand, rtol=1e-4, atol=0)
    # ≈ 0 nats per pixel for both schedules: at most ½ᾱ_T(x² − 1) − ½log(1 − ᾱ_T) ≤ ½ᾱ_T ≈ 2e-5 (linear)
    assert float(kl.max()) / x0[0].numel() < 1e-4


def test_prior_term_rejects_bad_images(schedule):
    with pytest.raises(ValueError, match="x0"):
        E.prior_kl(torch.zeros(2, 4, 4), schedule)
    with pytest.raises(ValueError, match="x0"):
        E.prior_kl(torch.full((1, 1, 4, 4), 3.0), schedule)


@pytest.mark.parametrize("mean, sigma", [(0.0, 0.1), (0.3, 0.004), (-1.4, 0.5), (2.5, 1e-3), (0.0, 4.0)])
def test_discretised_likelihood_sums_to_one_over_the_256_bins(mean, sigma):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    log_p = E.discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(math.log(sigma)))
    assert bool((log_p <= 0).all())
    # float64 throughout: 256 bin masses each within a few float64 ulps (1e-16) of exact, the sum within
    # ~256·1e-16 ≈ 3e-14; 1e-9 leaves room for log_ndtr's series in the far tails (σ = 1e-3, 4.0).
    torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-9)


def test_discretised_likelihood_matches_erf_and_is_stable_in_the_tails():
    x = torch.tensor([-1.0, 1.0, 51 * 2 / 255 - 1, 200 * 2 / 255 - 1])
    mean, sigma = torch.tensor([-0.98, 0.99, -0.6, 0.58]), 0.02
    log_p = E.discretized_gaussian_log_likelihood(x, mean, torch.tensor(math.log(sigma)))
    by_hand = torch.tensor([math.log(bin_mass(a, m, sigma)) for a, m in zip(x.tolist(), mean.tolist())])
    # float32 against math.erf in float64: the bin edges (x ± 1/255 − mean)/σ carry ~3 roundings of
    # u·|x|/σ ≈ u·50 ≈ 3e-6 in units of σ, which move log(mass) by ≤ 3e-6·φ/mass ≲ 1e-5 for these bins
    # of width 0.4σ (the density ratio φ/mass ≲ 3); |log p| ≈ 0.3-2, so rtol 1e-4 plus atol 1e-5 is ≥ 2× that.
    torch.testing.assert_close(log_p, by_hand, rtol=1e-4, atol=1e-5)
    # 150 standard deviations to the right of the mean: both Φ are 1 in float32, yet the log is finite and right.
    x, mean, sigma = 0.5, -1.0, 0.01
    a, b = (x - 1 / 255 - mean) / sigma, (x + 1 / 255 - mean) / sigma
    mills = -a * a / 2 - 0.5 * math.log(2 * math.pi) + math.log((1 - math.exp(-a * (b - a))) / a)  # tail expansion
    value = E.discretized_gaussian_log_likelihood(torch.tensor([x]), torch.tensor(mean), torch.tensor(math.log(sigma)))
    # The expansion drops terms of relative size 1/a² ≈ 4e-5 inside the log (absolute 4e-5 on a value of
    # about −11,000); float32 a ≈ 150 carries ~3 roundings of u·a, moving a²/2 by 3u·a² ≈ 4e-3, i.e.
    # 4e-7 relative. 1e-3 relative is loose on purpose: it tests that the tail is finite and right where
    # the naive log(Φ(b) − Φ(a)) = log(0) = −inf, not the last digit of the expansion.
    assert abs(float(value) - mills) < 1e-3 * abs(mills)


def test_discretised_likelihood_rejects_pixels_outside_the_range():
    with pytest.raises(ValueError, match="x0"):
        E.discretized_gaussian_log_likelihood(torch.tensor([1.5]), torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="log_scale"):
        E.discretized_gaussian_log_likelihood(torch.zeros(3), torch.zeros(3), torch.zeros(4))


def test_reverse_variance_tables_and_the_decoder_convention(schedule):
    small, large = E.reverse_variance(schedule, "posterior"), E.reverse_variance(schedule, "beta")
    torch.testing.assert_close(small[1:], schedule.posterior_variance[1:], rtol=0, atol=0)  # copies of the tables
    torch.testing.assert_close(large[1:], schedule.betas[1:], rtol=0, atol=0)
    assert float(schedule.posterior_variance[0]) == 0.0                 # why index 0 needs a convention
    assert float(small[0]) == float(large[0]) == float(schedule.posterior_variance[1])
    with pytest.raises(ValueError, match="variance"):
        E.reverse_variance(schedule, "learned")


def test_oracle_for_a_single_image_gives_zero_kl_terms_and_the_hand_computed_bits_per_dim(schedule):
    """If the data is one image x*, the true eps is known; then μ_θ = μ̃ and every L_t (t ≥ 1) is 0.

    What is left is L_T plus the decoder, whose mean is x* itself: each pixel costs −log of the mass of
    N(x*, σ_0²) on its own bin, erf(δ/(σ_0√2)) inside and (1 + erf(δ/(σ_0√2)))/2 at the extreme levels.
    """
    g = torch.Generator().manual_seed(3)
    x_star = grid_image(g)
    x0 = x_star.repeat(4, 1, 1, 1)
    oracle = Oracle(x_star, schedule)
    t = torch.tensor([1, 10, 500, 999])
    with torch.no_grad():
        kl = E.vlb_terms(oracle, x0, t, schedule, generator=g)
        kl_beta = E.vlb_terms(oracle, x0, t, schedule, variance="beta", generator=g)
    # The model mean differs from the true one by rounding only: x0_hat's error (amplified by 1/√ᾱ_t)
    # is multiplied back by the posterior coefficient √ᾱ_{t−1}β_t/(1 − ᾱ_t), leaving ≤ ~10 roundings of
    # u·|x_t| ≤ u·4, Δ ≈ 2.4e-6; the KL is Σ Δ²/(2β̃_t) over 16 pixels ≤ 16·(2.4e-6)²/(2·5e-5) ≈ 1e-6
    # at the smallest β̃ (t = 1). atol 1e-5 is 10× that; an error of 1e-3 in the mean would give ≥ 0.1.
    torch.testing.assert_close(kl, torch.zeros(4), rtol=0, atol=1e-5)
    ratio = (schedule.posterior_variance[t] / schedule.betas[t]).double()          # β̃_t / β_t
    by_hand = 0.5 * (ratio - 1 - ratio.log()) * x0[0].numel()                       # variance mismatch only
    # float32 logs of the float32 tables: log β̃ − log β carries ≈ 2·(u·|log β| + u) ≤ 6e-7 absolute, which
    # moves 16·½(e^l − 1 − l) by ≤ 8·|e^l − 1|·6e-7 ≤ 3e-6 (relative ≤ 2e-6 at t = 1, where it is 1.5
    # nats); at t = 999 the term is ~1e-11 and atol 1e-6 covers it. The mean mismatch adds ≤ 1e-8 (see
    # above, with σ² = β). rtol 1e-3 is generous; any wrong variance ratio is off by O(1).
    torch.testing.assert_close(kl_beta.double(), by_hand, rtol=1e-3, atol=1e-6)

    sigma0 = math.sqrt(float(schedule.posterior_variance[1]))
    decoder = -sum(math.log(bin_mass(x, x, sigma0)) for x in x_star.flatten().tolist())
    prior = float(E.prior_kl(x_star, schedule))
    with torch.no_grad():
        for variance in E.VARIANCES:                                               # same decoder for both
            terms = E.vlb_terms(oracle, x0, torch.zeros(4, dtype=torch.long), schedule, variance=variance, generator=g)
            # float32 decoder against math.erf: σ_0 ≈ 0.007 and the bin edges lie 1/255 ≈ 0.55σ_0 from the
            # mean; ~3 roundings of u·|x| move an edge by ≤ 2.5e-5 σ_0 and log(mass) by ≤ 2.5e-5 per pixel
            # (|φ/mass| ≤ 1 here), 4e-4 over 16 pixels, against 1e-4 + 1e-4·|value| ≈ 1.5e-3 (value ≈ 14 nats).
            torch.testing.assert_close(terms.double(), torch.full((4,), decoder, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    result = E.nll_bits_per_dim(oracle, x0[:2], schedule, generator=g, batch_size=500)
    expected = (prior + decoder) / (x0[0].numel() * math.log(2))
    # kl: 999 terms of ≤ 1e-6 nats (the oracle test above) averaged, over 16·ln 2 ≈ 11: ≤ 1e-7 bits/dim.
    assert result.kl == pytest.approx(0.0, abs=1e-6)
    # mean and bits: the decoder as above (≲ 1e-4 relative) plus the prior (exact to 1e-4, above).
    assert result.mean == pytest.approx(expected, rel=1e-4)
    # The three parts and the mean are float64 averages of the same float32 numbers: 1e-5 allows for
    # the float32 per-image totals summed in a different order (≤ 1000 terms · u ≈ 6e-5 worst case
    # on the KL, which is itself ≈ 0 here, so ≪ 1e-5 of the mean).
    assert result.prior + result.kl + result.decoder == pytest.approx(result.mean, rel=1e-5)
    torch.testing.assert_close(result.bits_per_dim, torch.full((2,), expected), rtol=1e-4, atol=0)


def test_each_kl_term_is_lambda_times_the_squared_noise_error(schedule):
    """With fixed eps and eps_hat, L_t = λ_t ‖eps − eps_hat‖² (t ≥ 1), plus the variance KL for "beta"."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.cat([grid_image(g) for _ in range(5)])
    eps, eps_hat = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 3, 100, 600, 999])
    squared_error = (eps - eps_hat).square().flatten(1).sum(1)
    for variance in E.VARIANCES:
        terms = E.vlb_terms(Constant(eps_hat), x0, t, schedule, eps=eps, variance=variance)
        ratio = schedule.posterior_variance[t] / E.reverse_variance(schedule, variance)[t]
        offset = 0.5 * (ratio - 1 - ratio.log()) * x0[0].numel()
        # The identity is exact; the package goes through x0_hat and two posterior means, which at t = 999
        # amplify roundings by 1/√ᾱ ≈ 157 before the coefficient √ᾱ_998·β/(1 − ᾱ) ≈ 1.3e-4 damps them, and
        # at t = 1 divides Δmean² by σ² ≈ 5e-5: ~10 roundings of u·|x_t| in Δmean ≈ 0.014·|eps − eps_hat|
        # give a relative error ≈ 2·10·u·4/(0.014·|eps − eps_hat|) ≲ 1e-4 per pixel, and the 16-term sum
        # adds 16u. rtol 1e-3 keeps a 10× margin over that worst case; a wrong λ_t is off by O(1).
        torch.testing.assert_close(terms, E.vlb_weights(schedule, variance)[t] * squared_error + offset, rtol=1e-3, atol=1e-4)


def test_sampled_timesteps_give_an_unbiased_estimate_of_the_full_sum(linear_schedule):
    schedule = linear_schedule  # its expected numbers are worked out for the linear schedule
    g = torch.Generator().manual_seed(5)
    x0 = torch.cat([grid_image(g) for _ in range(32)])
    model = Constant(torch.zeros(1, 1, 4, 4))                               # untrained: L_t = λ_t ‖eps‖², on average λ_t D
    exact = E.nll_bits_per_dim(model, x0, schedule, generator=g, batch_size=8000)
    estimate = E.nll_bits_per_dim(model, x0.repeat(32, 1, 1, 1), schedule, num_timesteps=50, generator=g, batch_size=8000)
    assert estimate.bits_per_dim.shape == (1024,) and exact.bits_per_dim.shape == (32,)
    # the same per-image float32 values averaged over 32 and over 1024 images: even summed one by one the
    # float32 means are within 1024·u ≈ 6e-5 relative of each other, so rel 1e-4
    assert exact.prior == pytest.approx(estimate.prior, rel=1e-4)
    tolerance = 4 * math.hypot(exact.standard_error, estimate.standard_error)
    assert abs(estimate.mean - exact.mean) < tolerance
    expected_kl = float(E.vlb_weights(schedule)[1:].sum()) / math.log(2)     # E‖eps‖² = D, so Σ λ_t D / (D ln 2)
    # exact.kl is Σ_t λ_t‖eps_t‖² with fresh eps per (image, t), ‖eps_t‖² ~ χ²_16: its relative standard
    # error over 32 images is √(2/16)·√(Σλ_t²)/Σλ_t/√32 = 0.0052 for this schedule (Σλ_t = 10.2, an
    # effective 144 terms), so rel 0.02 is 3.8 standard errors.
    assert exact.kl == pytest.approx(expected_kl, rel=0.02)
    assert abs(estimate.kl - expected_kl) < tolerance
    assert tolerance < 0.1 * expected_kl                                   # forgetting the (T − 1)/k scale would fail


def test_vlb_table_columns_are_the_terms_at_each_timestep(schedule):
    g = torch.Generator().manual_seed(6)
    x_star = grid_image(g)
    x0 = x_star.repeat(3, 1, 1, 1)
    table = E.vlb_table(Oracle(x_star, schedule), x0, schedule, timesteps=torch.tensor([0, 1, 998]), generator=g, batch_size=2)
    assert table.shape == (3, 3)
    assert bool((table[:, 0] > 1).all())                                   # column 0 is the decoder
    torch.testing.assert_close(table[:, 1:], torch.zeros(3, 2), rtol=0, atol=1e-5)  # oracle KL terms: ≤ 1e-6 by the count in the oracle test above


def test_bad_arguments_raise_value_errors_that_name_them(schedule):
    x0 = torch.zeros(2, 1, 4, 4)
    model = Constant(torch.zeros(1, 1, 4, 4))
    t = torch.tensor([0, 5])
    with pytest.raises(ValueError, match="variance"):
        E.vlb_terms(model, x0, t, schedule, variance="fixedlarge")
    with pytest.raises(ValueError, match="t must hold timesteps in"):
        E.vlb_terms(model, x0, torch.tensor([0, 1000]), schedule)
    with pytest.raises(ValueError, match="t must have shape"):
        E.vlb_terms(model, x0, torch.tensor([0, 1, 2]), schedule)
    with pytest.raises(ValueError, match="integer"):
        E.vlb_terms(model, x0, torch.tensor([0.0, 1.0]), schedule)
    with pytest.raises(ValueError, match="x0"):
        E.vlb_terms(model, torch.zeros(2, 16), t, schedule)
    with pytest.raises(ValueError, match="eps"):
        E.vlb_terms(model, x0, t, schedule, eps=torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="num_timesteps"):
        E.nll_bits_per_dim(model, x0, schedule, num_timesteps=0)
    with pytest.raises(ValueError, match="num_timesteps"):
        E.nll_bits_per_dim(model, x0, schedule, num_timesteps=2.5)
    with pytest.raises(ValueError, match="batch_size"):
        E.nll_bits_per_dim(model, x0, schedule, batch_size=0)
    with pytest.raises(ValueError, match="timesteps"):
        E.vlb_table(model, x0, schedule, timesteps=torch.tensor([3, 1000]))
