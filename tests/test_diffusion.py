import pytest
import torch

import ddpm_helpers as dh


def test_q_sample_matches_the_closed_form_moments(schedule):
    """Empirical mean and variance of x_t over many eps equal √ᾱ_t x0 and 1 − ᾱ_t."""
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x0 = torch.full((n, 1, 2, 2), 0.7)
    for t_value in (0, 10, 250, 999):
        t = torch.full((n,), t_value)
        x_t = dh.q_sample(x0, t, torch.randn(x0.shape, generator=g), schedule)
        alpha_bar = schedule.alpha_bars[t_value]
        std_error = (1 - alpha_bar).sqrt() / n**0.5
        assert abs(float(x_t.mean()) - 0.7 * float(alpha_bar.sqrt())) < 5 * float(std_error) / 2  # 4n draws pooled
        # The sample variance of N = 80,000 draws has relative standard error √(2/N) = 0.005: rel = 0.03 is
        # 6 of them. At t = 0 (1 − ᾱ = 1e-4) the float32 variance of values of mean 0.7 and std 0.01 also
        # carries rounding of order u·0.7²·log2(N) ≈ 6e-7 (u = 2⁻²⁴): abs = 1e-5 is well above it.
        assert float(x_t.var()) == pytest.approx(float(1 - alpha_bar), rel=0.03, abs=1e-5)


def test_chain_of_single_steps_matches_the_closed_form(schedule):
    """Iterating q(x_t | x_{t-1}) from x0 gives the moments of q(x_t | x_0)."""
    g = torch.Generator().manual_seed(1)
    x = torch.full((50_000,), -0.5)
    for t in range(200):
        beta = schedule.betas[t]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=g)
    alpha_bar = schedule.alpha_bars[199]
    # Monte Carlo with n = 50,000 and 1 − ᾱ_199 ≈ 0.34: the mean's standard error is √(0.34/n) ≈ 0.0026
    # (abs = 0.01 is 3.8 of them) and the variance's relative one √(2/n) ≈ 0.0063 (rel = 0.03 is 4.7);
    # the float32 chain of 200 steps adds rounding of order 200·u ≈ 1e-5, negligible beside both.
    assert float(x.mean()) == pytest.approx(-0.5 * float(alpha_bar.sqrt()), abs=0.01)
    assert float(x.var()) == pytest.approx(float(1 - alpha_bar), rel=0.03)


def test_predict_x0_and_predict_eps_invert_q_sample(schedule):
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand((4, 1, 8, 8), generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 5, 500, 998])
    x_t = dh.q_sample(x0, t, eps, schedule)
    # Inverting q_sample subtracts numbers of size |x_t| ≤ 4 and divides by √ᾱ_998 ≈ 6.6e-3 (x0) or by
    # √(1 − ᾱ_0) = 0.01 (eps): about 6 float32 roundings of u·|x_t| (q_sample 2, the stored tables 2,
    # the product and the subtraction 2) amplified by 150 give ≤ 6·u·4·150 ≈ 2.2e-4 for x0 (atol 2e-3
    # is 9× that) and ≤ 6·u·1·100 ≈ 3.6e-5 for eps at t = 0, where |x_t| ≤ 1 (atol 1e-4 is 2.8×).
    torch.testing.assert_close(dh.predict_x0(x_t, t, eps, schedule), x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(dh.predict_eps(x_t, t, x0, schedule), eps, atol=1e-4, rtol=1e-4)


def test_posterior_mean_computed_two_ways_agrees(schedule):
    """μ̃_t(x_t, x0) from the two coefficients equals the ε-form (x_t − β_t/√(1−ᾱ_t) ε)/√α_t."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand((5, 1, 4, 4), generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 10, 100, 500, 999])
    x_t = dh.q_sample(x0, t, eps, schedule)
    mean, variance = dh.posterior_mean_var(x0, x_t, t, schedule)
    b, a, ab = (schedule.betas[t].view(-1, 1, 1, 1), schedule.alphas[t].view(-1, 1, 1, 1), schedule.alpha_bars[t].view(-1, 1, 1, 1))
    eps_form = (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt()
    # Neither form divides by a small number except β_1/√(1 − ᾱ_1) on the test's side, where the float32
    # 1 − ᾱ_1 ≈ 3e-4 carries a relative error u/3e-4 ≈ 2e-4 on a term of size 6e-3·|eps| ≤ 0.03 (6e-6);
    # the rest is about 10 roundings of u·|x_t| ≤ u·4 (2.4e-6). atol 1e-4 is over 10× the sum.
    torch.testing.assert_close(mean, eps_form, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(variance.flatten(), schedule.posterior_variance[t], rtol=0, atol=0)  # read from that table


def test_posterior_matches_monte_carlo_of_the_chain(schedule):
    """Sample (x_{t-1}, x_t) from the forward chain for a fixed x0 and regress x_{t-1} on x_t."""
    g = torch.Generator().manual_seed(4)
    n, t = 200_000, 300
    x0 = torch.full((n, 1, 1, 1), 0.4)
    x_prev = dh.q_sample(x0, torch.full((n,), t - 1), torch.randn(x0.shape, generator=g), schedule)
    beta = schedule.betas[t]
    x_t = (1 - beta).sqrt() * x_prev + beta.sqrt() * torch.randn(x0.shape, generator=g)
    # Linear-Gaussian: E[x_{t-1} | x_t] is linear in x_t; least squares recovers its coefficients.
    design = torch.stack([torch.ones(n), x_t.flatten()], dim=1).double()
    coef = torch.linalg.lstsq(design, x_prev.flatten().double().unsqueeze(1)).solution.flatten()
    residual_var = float((x_prev.flatten().double() - design @ coef).var())
    # Least-squares standard errors: slope √(σ²_res / (n·var x_t)), intercept ≈ √(σ²_res / n)·√(1 + mean²/var)
    # (about 2e-4 each here); 8 of them (≈ 1.6e-3) is far beyond chance (a 1-in-10¹⁵ event), yet a
    # coefficient off by 2e-3 fails. The residual variance has relative standard error √(2/n) ≈ 0.0032:
    # rel = 0.02 is 6 of them. The float32 draws add rounding of order u, negligible beside these.
    x_t_var, x_t_mean = float(x_t.double().var()), float(x_t.double().mean())
    se_slope = (residual_var / (n * x_t_var)) ** 0.5
    se_intercept = (residual_var / n * (1 + x_t_mean**2 / x_t_var)) ** 0.5
    assert float(coef[1]) == pytest.approx(float(schedule.posterior_mean_coef_xt[t]), abs=8 * se_slope)
    assert float(coef[0]) == pytest.approx(0.4 * float(schedule.posterior_mean_coef_x0[t]), abs=8 * se_intercept)
    assert residual_var == pytest.approx(float(schedule.posterior_variance[t]), rel=0.02)


def test_loss_is_zero_for_an_oracle_and_l1_differs_from_l2(schedule):
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand((8, 1, 8, 8), generator=g) * 2 - 1
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    oracle = lambda x_t, t, y: dh.predict_eps(x_t, t, x0, schedule)  # noqa: E731
    # The oracle's eps differs from eps only by rounding: ≤ 6·u·|x_t|/√(1 − ᾱ_t) ≤ 3.6e-5 (worst at t = 0,
    # as in the inversion test), so the mean squared error is ≤ 1.3e-9: 1e-8 is 7× that.
    assert float(dh.ddpm_loss(oracle, x0, schedule, t=t, eps=eps)) < 1e-8
    zero = lambda x_t, t, y: torch.zeros_like(x_t)  # noqa: E731
    l2 = dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps)
    l1 = dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, loss_type="l1")
    # The same 512 non-negative terms summed in another order (per image, then over images): each float32
    # sum is within n·u ≈ 3e-5 of exact even summed one by one, so rtol 1e-4 covers both orders.
    torch.testing.assert_close(l2, eps.square().mean(), rtol=1e-4, atol=0)
    torch.testing.assert_close(l1, eps.abs().mean(), rtol=1e-4, atol=0)
    per_image = dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, reduction="none")
    assert per_image.shape == (8,)


def test_v_prediction_round_trips_and_its_loss_is_the_eps_loss_reweighted(schedule):
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand((8, 1, 8, 8), generator=g) * 2 - 1
    t = torch.tensor([0, 1, 10, 100, 400, 700, 998, 999])
    eps = torch.randn(x0.shape, generator=g)
    x_t = dh.q_sample(x0, t, eps, schedule)
    v = dh.v_target(x0, t, eps, schedule)
    # eps = √ᾱ·v + √(1 − ᾱ)·x_t undoes q_sample and v_target without dividing: about 8 roundings of
    # u·|eps| ≤ u·4 (x_t 2, v 2, the tables 2, the two products and the sum) ≈ 2e-6; atol 1e-5 is 5×.
    torch.testing.assert_close(dh.eps_from_v(x_t, t, v, schedule), eps, atol=1e-5, rtol=0)
    # v = sqrt(ab) eps - sqrt(1-ab) x0 has unit variance for unit-variance x0 and eps
    ab = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    # The package reads the stored √ᾱ tables (float64 roots, rounded once); the test takes float32 roots,
    # and at t = 0 its float32 1 − ᾱ_0 = 1e-4 is off by up to u, so √(1 − ᾱ_0) = 0.01 is off by 3e-4
    # relative: ≤ 3e-6 on |x0| ≤ 1, plus a few roundings of u·|v| ≤ u·5. Inside the defaults (atol 1e-5).
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    # a v-network's squared error is its implied eps error times (SNR + 1) / SNR = 1 / alpha_bar
    v_net = lambda x_t, t, y: v + 0.1  # noqa: E731
    v_loss = dh.ddpm_loss(v_net, x0, schedule, t=t, eps=eps, prediction="v", reduction="none")
    eps_loss = dh.ddpm_loss(dh.EpsFromV(v_net, schedule), x0, schedule, t=t, eps=eps, reduction="none")
    # The implied eps error is 0.1·√ᾱ_t, found by subtracting numbers of size |eps|: at t = 999
    # (√ᾱ ≈ 6.4e-3) about 6 roundings of u·|eps| ≤ u·4 make a relative error of 6·u·4/6.4e-4 ≈ 2.2e-3
    # per pixel, 4.5e-3 in its square at worst (errors of one sign); rtol 5e-3 covers it. At t ≤ 700 the
    # same count gives < 1e-4. A wrong weight (SNR/(SNR+1), 1/√ᾱ) would be off by O(1).
    torch.testing.assert_close(v_loss, eps_loss / schedule.alpha_bars[t].float(), rtol=5e-3, atol=1e-6)


def test_min_snr_weights_cap_the_snr_at_gamma(schedule):
    t = torch.tensor([0, 50, 200, 500, 999])
    snr = schedule.snr()[t].float()
    eps_w = dh.loss_weights(t, schedule, weighting="min_snr", min_snr_gamma=5.0)
    # One float32 division of the same table entries on each side: within one rounding, inside the defaults.
    torch.testing.assert_close(eps_w, torch.minimum(snr, torch.tensor(5.0)) / snr)
    # noisy steps keep full weight, nearly clean ones are damped: 5/SNR_0 = 5·1e-4/0.9999 ≈ 5e-4 < 1e-3
    assert eps_w[-1] == 1.0 and eps_w[0] < 1e-3
    v_w = dh.loss_weights(t, schedule, prediction="v", weighting="min_snr", min_snr_gamma=5.0)
    torch.testing.assert_close(v_w, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    assert torch.equal(dh.loss_weights(t, schedule), torch.ones(5))
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand((5, 1, 4, 4), generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    zero = lambda x_t, t, y: torch.zeros_like(x_t)  # noqa: E731
    weighted = dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, weighting="min_snr", reduction="none")
    # Per image: a mean of 16 squares times a weight, summed possibly in another order: ≤ 17·u relative,
    # inside the float32 default rtol of 1.3e-6 ≈ 22·u.
    torch.testing.assert_close(weighted, eps.square().flatten(1).mean(1) * eps_w)
    with pytest.raises(ValueError, match="weighting"):
        dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, weighting="snr")
    with pytest.raises(ValueError, match="prediction"):
        dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, prediction="x0")


def test_eps_from_v_module_keeps_the_class_count_and_converts_the_output(schedule):
    """A conditional v-network wrapped: it keeps num_classes = 10 (guidance reads it), and its output is
    eps_from_v of the network's own output for the same labels."""
    g = torch.Generator().manual_seed(11)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        v_net = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,), num_classes=10))
        torch.nn.init.normal_(v_net.head[-1].weight, std=0.1)  # the zero-initialised head would output v = 0
    wrapped = dh.EpsFromV(v_net, schedule)
    assert wrapped.num_classes == v_net.num_classes == 10
    x, t, y = torch.randn((2, 1, 32, 32), generator=g), torch.tensor([3, 900]), torch.tensor([4, 7])
    with torch.no_grad():
        v = v_net(x, t, y)
        eps = wrapped(x, t, y)
    assert float(v.abs().max()) > 0.01 and not torch.allclose(eps, v)
    # The same float32 operations on the same inputs: equal to the last bit.
    torch.testing.assert_close(eps, dh.eps_from_v(x, t, v, schedule), rtol=0, atol=0)
    with torch.no_grad():
        assert not torch.allclose(wrapped(x, t, torch.tensor([0, 1])), eps)  # the labels reach the network


def test_the_process_works_on_items_of_any_shape_and_range(schedule):
    """Latents (4×8×8, unbounded) and vectors diffuse like images: each table is read per sample.
    Data other than [-1, 1] images is passed with its DataSpace (here unbounded)."""
    g = torch.Generator().manual_seed(6)
    t = torch.tensor([3, 700])
    assert dh.per_sample(schedule.alpha_bars[t], 4).shape == (2, 1, 1, 1)
    for shape in ((2, 4, 8, 8), (2, 3)):
        x0, eps = 3 * torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        space = dh.DataSpace(shape[1:])
        x_t = dh.q_sample(x0, t, eps, schedule, space=space)
        expected = dh.per_sample(schedule.sqrt_alpha_bars[t], x0.ndim) * x0 + dh.per_sample(schedule.sqrt_one_minus_alpha_bars[t], x0.ndim) * eps
        # The same two products and one sum of the same float32 values: equal up to one rounding (defaults).
        torch.testing.assert_close(x_t, expected)
        torch.testing.assert_close(x_t[1], schedule.sqrt_alpha_bars[700] * x0[1] + schedule.sqrt_one_minus_alpha_bars[700] * eps[1])
        zero = lambda x_t, t, y: torch.zeros_like(x_t)  # noqa: E731
        # no range in this space; the same ≤ 512 squares summed in two orders: n·u ≤ 3e-5 each (see above)
        torch.testing.assert_close(dh.ddpm_loss(zero, x0, schedule, t=t, eps=eps, space=space), eps.square().mean(), rtol=1e-4, atol=0)


def test_bad_inputs_raise_clear_errors(schedule, cfg, tiny_unet):
    x0 = torch.zeros(2, 1, 4, 4)
    eps = torch.zeros_like(x0)
    with pytest.raises(ValueError, match=r"t must hold timesteps in \[0, 999\]"):
        dh.q_sample(x0, torch.tensor([0, 1000]), eps, schedule)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        dh.q_sample(x0, torch.tensor([0]), eps, schedule)
    with pytest.raises(ValueError, match="integer"):
        dh.q_sample(x0, torch.tensor([0.0, 1.0]), eps, schedule)
    with pytest.raises(ValueError, match=r"x0 must have a batch dimension and item dimensions \(B, \.\.\.\)"):
        dh.q_sample(torch.zeros(2), torch.tensor([0, 1]), torch.zeros(2), schedule)
    with pytest.raises(ValueError, match="x0 and eps must have the same shape"):
        dh.q_sample(x0, torch.tensor([0, 1]), torch.zeros(2, 1, 4, 5), schedule)
    model = lambda x_t, t, y: x_t  # noqa: E731
    with pytest.raises(ValueError, match="loss_type"):
        dh.ddpm_loss(model, x0, schedule, loss_type="huber")
    # the range of pixels is checked where the data enters training, before any step
    state = dh.init_train_state(tiny_unet, cfg.train)
    pixels = dh.ImageSet(torch.zeros(2, 1, 32, 32) + 3, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"train_set.images must lie in \[-1, 1\].*to_model_range"):
        dh.train(state, pixels, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=1, progress=False)
    assert state.step == 0
