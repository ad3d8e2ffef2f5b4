import math

import pytest
import torch

import ddpm_helpers as dh


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_are_monotone_and_in_range(name):
    s = dh.make_schedule(name, 1000)
    assert s.T == 1000
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.betas[1:] >= s.betas[:-1]).all())  # β grows
    assert bool((s.alpha_bars[1:] < s.alpha_bars[:-1]).all())  # ᾱ strictly decreases
    assert 0 < float(s.alpha_bars[-1]) < 1e-4  # x_T is almost pure noise (ᾱ_T ≈ 4e-5 linear, ≈ 0 cosine)
    assert bool((s.posterior_variance >= 0).all()) and bool((s.posterior_variance <= s.betas).all())
    assert s.betas.dtype == torch.float32


def test_linear_schedule_matches_ho_et_al():
    s = dh.make_schedule("linear", 1000)
    # The end points of a float64 linspace are exact, then rounded once to float32 like the literals.
    torch.testing.assert_close(s.betas[[0, -1]], torch.tensor([1e-4, 0.02]), rtol=0, atol=0)
    expected = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    torch.testing.assert_close(s.alpha_bars, expected, rtol=0, atol=0)  # the same float64 cumprod, rounded once


def test_cosine_alpha_bar_matches_its_closed_form_where_beta_is_not_clipped():
    T, offset = 1000, 0.008
    s = dh.make_schedule("cosine", T)
    paper_t = torch.arange(1, T + 1, dtype=torch.float64)  # code index t is paper step t + 1
    f = torch.cos((paper_t / T + offset) / (1 + offset) * math.pi / 2) ** 2
    closed_form = f / math.cos(offset / (1 + offset) * math.pi / 2) ** 2
    unclipped = dh.cosine_betas(T) < 0.999
    assert unclipped.sum() > 990  # clipping only touches the last steps
    # The package telescopes f(t)/f(t−1) through a float64 cumprod (error ~1000 float64 ulps ≈ 1e-13
    # relative) and stores float32: one rounding, ≤ u = 6e-8 relative. rtol 1e-6 is 16·u; a wrong offset
    # or an index shifted by one is off by > 1e-3.
    torch.testing.assert_close(s.alpha_bars[unclipped].double(), closed_form[unclipped], rtol=1e-6, atol=0)


def test_index_t_is_the_papers_step_t_plus_one():
    s = dh.make_schedule("linear", 1000)
    # ᾱ_1 = α_1 = 1 − β_1 sits at index 0; ᾱ_0 = 1 is alpha_bars_prev[0].
    assert float(s.alpha_bars[0]) == pytest.approx(1 - 1e-4)  # float32 rounding u ≈ 6e-8 ≪ approx's rel 1e-6
    assert float(s.alpha_bars_prev[0]) == 1.0
    torch.testing.assert_close(s.alpha_bars_prev[1:], s.alpha_bars[:-1], rtol=0, atol=0)  # the same float64 values, rounded once
    # The posterior variance of the paper's step 1 is 0: x_0 is fixed given x_1 and x_0.
    assert float(s.posterior_variance[0]) == 0.0


def test_derived_tables_agree_with_their_definitions():
    s = dh.make_schedule("cosine", 500)
    # Each side is within 1-3 float32 roundings of the float64 value (squaring a rounded root doubles its
    # error): ≤ 3u ≈ 2e-7 relative, inside the float32 defaults (rtol 1.3e-6, atol 1e-5); 1 − ᾱ in float32
    # cancels at small t, but only to an absolute error of u ≈ 6e-8, far below atol 1e-5.
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    torch.testing.assert_close(s.sqrt_alpha_bars**2, s.alpha_bars)
    torch.testing.assert_close(s.sqrt_one_minus_alpha_bars**2, 1 - s.alpha_bars)
    alpha_bars64 = torch.cumprod(1 - dh.cosine_betas(500), 0)
    # SNR = e^{2λ} from the float64 log-SNR, stored as float32: one rounding (u) plus exp's own, or, from a
    # float32 λ, |2λ|·u ≤ 30·u ≈ 2e-6 for |λ| ≤ 15. rtol 1e-5 is 5× that.
    torch.testing.assert_close(s.snr().double(), alpha_bars64 / (1 - alpha_bars64), rtol=1e-5, atol=0)


def test_schedules_are_computed_in_float64_before_storing():
    s = dh.make_schedule("linear", 1000)
    float32_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32), 0)
    float64_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert float((s.alpha_bars.double() - float64_cumprod).abs().max()) <= float((float32_cumprod.double() - float64_cumprod).abs().max())


def test_unknown_schedule_name_is_refused():
    with pytest.raises(ValueError, match="schedule name must be one of.*'quadratic'"):
        dh.make_schedule("quadratic")


def test_bad_betas_are_refused():
    with pytest.raises(ValueError, match="T must be at least 2"):
        dh.linear_betas(1)
    with pytest.raises(ValueError, match="too small"):
        dh.linear_betas(10)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        dh.schedule_from_betas(torch.tensor([0.1, 1.5], dtype=torch.float64))


def test_schedule_moves_between_devices():
    s = dh.make_schedule("linear", 100).to("cpu")
    assert s.device.type == "cpu" and s.name == "linear"


def test_per_sample_reads_a_table_at_each_samples_timestep():
    s = dh.make_schedule("linear", 1000)
    t = torch.tensor([0, 999, 500])
    for shape in [(3, 1, 4, 4), (3, 16), (3, 4, 2, 2, 2)]:  # images, flat items, anything with a batch dimension
        values = dh.per_sample(s.betas[t], len(shape))
        assert values.shape == (3,) + (1,) * (len(shape) - 1)
        scaled = values * torch.ones(shape)
        for i in range(3):
            assert bool((scaled[i] == s.betas[t[i]]).all())


def test_data_of_scale_sigma_shifts_every_log_snr_by_two_log_sigma():
    """Chapter 6: for x0 with standard deviation sigma, x_t's signal-to-noise ratio is
    alpha_bar sigma^2 / (1 - alpha_bar), i.e. log SNR + 2 log sigma (why latents are scaled)."""
    schedule, sigma = dh.make_schedule("linear", 1000), 2.69
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([100, 259, 454, 800]).repeat_interleave(20_000)
    x0, eps = sigma * torch.randn(len(t), 1, generator=g), torch.randn(len(t), 1, generator=g)
    x_t = dh.q_sample(x0, t, eps, schedule, space=dh.DataSpace((1,)))  # one unbounded number per item
    signal = dh.per_sample(schedule.sqrt_alpha_bars[t], 2) * x0
    for k, value in enumerate((100, 259, 454, 800)):
        part = slice(20_000 * k, 20_000 * (k + 1))
        measured = torch.log(signal[part].var() / (x_t[part] - signal[part]).var())
        expected = schedule.log_snr[value] + 2 * math.log(sigma)
        assert abs(float(measured - expected)) < 0.05   # Monte Carlo: 20,000 draws, each variance to about 1%
