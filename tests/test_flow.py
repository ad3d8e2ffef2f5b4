"""Flow matching: the interpolant and its velocity, the steps against exact solutions, DDIM as an
Euler step in flow coordinates, and the one trainer training (and checkpointing) a flow.

Tolerances: float64 checks allow a few hundred units of roundoff (2^-53 ≈ 1.1e-16) times the
size of the numbers involved; float32 checks allow c · 2^-24 · scale where c counts the roundings
on the path; statistical checks allow 5 Monte Carlo standard errors (a false alarm about 1 in 10^6).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ddpm_helpers as dh
from ddpm_helpers.flow import check_flow_times
from ddpm_helpers.oracles import GaussianOracle

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53


class GaussianVelocity(nn.Module):
    """The exact velocity E[eps − x0 | x_t] for x0 ~ N(mu, s² I), seen through VelocityNet's time scale."""

    def __init__(self, mu: float, s: float, time_scale: float) -> None:
        super().__init__()
        self.mu, self.s, self.time_scale = mu, s, time_scale

    def forward(self, x, scaled_t, y=None):
        t = dh.per_sample(scaled_t / self.time_scale, x.ndim)
        variance = (1 - t) ** 2 * self.s**2 + t**2  # of x_t
        centred = x - (1 - t) * self.mu
        x0_mean = self.mu + (1 - t) * self.s**2 / variance * centred
        eps_mean = t / variance * centred
        return eps_mean - x0_mean


def exact_gaussian_flow(x_1, mu, s):
    """The ODE keeps (x_t − (1 − t)μ)/√V(t) constant, with V(1) = 1 and V(0) = s²: x_0 = μ + s·x_1."""
    return mu + s * x_1


def test_interpolant_runs_from_data_to_noise_with_constant_velocity():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 5, 3, dtype=torch.float64, generator=g)
    ends = dh.flow_interpolant(x0, torch.tensor([0.0] * 5, dtype=torch.float64), eps), dh.flow_interpolant(x0, torch.ones(5, dtype=torch.float64), eps)
    assert torch.equal(ends[0], x0) and torch.equal(ends[1], eps)  # (1 − 0)·x0 + 0·eps is x0 exactly
    t, h = torch.rand(5, dtype=torch.float64, generator=g) * 0.9, 0.05
    slope = (dh.flow_interpolant(x0, t + h, eps) - dh.flow_interpolant(x0, t, eps)) / h
    # the path is linear in t, so the difference quotient is exact up to roundoff: ~8 roundings of O(3) numbers, divided by h
    torch.testing.assert_close(slope, dh.velocity_target(x0, eps), rtol=0, atol=8 * U64 * 3 / h)


def test_predictions_invert_the_interpolant():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    x_t = dh.flow_interpolant(x0, t, eps)
    x0_hat, eps_hat = dh.flow_predictions(x_t, t, dh.velocity_target(x0, eps))
    # each side is a few float32 operations on numbers of size ≤ |x0| + |eps| ≤ 6: allow 8 roundings of 6
    scale = 6.0
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=8 * U32 * scale)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=8 * U32 * scale)


def test_a_ddpm_state_lies_on_the_flow_line():
    schedule = dh.make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.rand(6, 1, 4, 4, dtype=torch.float64, generator=g) * 2 - 1, torch.randn(6, 1, 4, 4, dtype=torch.float64, generator=g)
    t = torch.tensor([0, 10, 300, 600, 900, 999])
    z, tau = dh.flow_coordinates(dh.q_sample(x0.float(), t, eps.float(), schedule).double(), t, schedule)
    expected = dh.flow_interpolant(x0, tau.double(), eps)
    # float32 q_sample (3 roundings of numbers ≤ 5) with its float32 tables √ᾱ, √(1 − ᾱ), against α, σ
    # taken from the float32 ᾱ (each differs by ≤ 2 roundings): ≤ 8 roundings of 5, divided by α + σ ≥ 1
    torch.testing.assert_close(z, expected, rtol=0, atol=8 * U32 * 5)
    assert bool((tau[1:] > tau[:-1]).all()) and 0 < float(tau[0]) < 0.02 and float(tau[-1]) > 0.99


def test_ddim_is_an_euler_step_of_the_flow_in_flow_coordinates():
    schedule = dh.make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(3)
    x_t, eps_hat = torch.randn(2, 5, 1, 4, 4, dtype=torch.float64, generator=g)
    t, t_prev = torch.tensor([999, 700, 400, 100, 5]), torch.tensor([900, 650, 100, 0, -1])
    ddim = dh.ddim_step(x_t, t, t_prev, eps_hat, schedule).x_prev  # float64 arithmetic on the float32 tables
    z, tau = dh.flow_coordinates(x_t, t, schedule)
    x0_hat = dh.predict_x0(x_t, t, eps_hat, schedule)
    alpha_bar_prev = schedule.alpha_bars[t_prev.clamp(min=0)].double().where(t_prev >= 0, torch.ones(5, dtype=torch.float64))  # ᾱ = 1 past the end
    alpha_prev, sigma_prev = alpha_bar_prev.sqrt(), (1 - alpha_bar_prev).sqrt()
    tau_prev = sigma_prev / (alpha_prev + sigma_prev)
    euler = dh.euler_step(z, tau.double(), tau_prev, eps_hat - x0_hat).x_prev
    # The algebra is exact; the arithmetic is not: the DDIM step takes its coefficients (√ᾱ from the
    # float32 tables, square roots of float32 ᾱ) in float32, so each carries ≤ 2 roundings of 2^-24,
    # amplified by 1/α_t ≤ 1/√ᾱ_999 ≈ 160 in x0_hat, on numbers ≤ 5: allow 4 · 2^-24 · 160 · 5 ≈ 2e-4.
    torch.testing.assert_close(ddim / dh.per_sample(alpha_prev + sigma_prev, 4), euler, rtol=0, atol=4 * U32 * 160 * 5)


def test_a_flow_read_as_an_eps_network_is_the_eps_oracle_of_the_same_data():
    """For x0 ~ N(mu, s²) the exact flow velocity, read on a DDPM schedule, must give the exact ε-prediction
    E[ε | x_t] of the package's GaussianOracle at every timestep: one prediction in two coordinates."""
    mu, s = 0.3, 0.5
    for schedule in (dh.make_schedule("cosine", 1000), dh.make_schedule("linear", 1000)):
        flow = dh.VelocityNet(GaussianVelocity(mu, s, dh.FlowConfig().time_scale))
        g = torch.Generator().manual_seed(4)
        t = torch.tensor([0, 1, 50, 300, 600, 900, 998, 999])
        x0, eps = mu + s * torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)
        x_t = dh.q_sample(x0, t, eps, schedule, space=dh.DataSpace((1, 4, 4)))  # Gaussian data, not images in [-1, 1]
        with torch.no_grad():
            read = dh.EpsFromVelocity(flow, schedule)(x_t, t)
            oracle = GaussianOracle(schedule, mu, s)(x_t, t)
        # Both are float32 formulas in ≤ 20 roundings of numbers ≤ 6 (|x_t| < 5 sd), each divided by a variance of x_t
        # that is ≥ s²/(1 + s²) = 0.2 on the flow's line and ≥ min(s², 1) on the DDPM's (amplification ≤ 5),
        # so they may differ by 2 · 20 roundings · 6 · 5 ≈ 7e-5.
        torch.testing.assert_close(read, oracle, rtol=0, atol=2 * 20 * U32 * 6 * 5)


def test_the_ddpm_samplers_run_a_flow_through_its_eps_reading_and_ddim_is_its_euler_sampler():
    mu, s, schedule = 0.3, 0.5, dh.make_schedule("cosine", 1000)
    flow = dh.VelocityNet(GaussianVelocity(mu, s, dh.FlowConfig().time_scale))
    noise = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    spec = dh.SamplerSpec("ddim", num_steps=10, clip_x0=False)
    steps = spec.steps(schedule.T, schedule)
    with torch.no_grad():
        *_, last = dh.iterate_sampler(dh.EpsFromVelocity(flow, schedule), noise, dh.DataSpace((1, 4, 4)), schedule, spec)
        ddim = last.x
        chi, tau = dh.flow_coordinates(noise, torch.full((16,), steps[0]), schedule)
        alpha_bars = [float(schedule.alpha_bars[k]) for k in steps[1:]] + [1.0]  # ᾱ = 1 past the last step
        times = [float(tau[0])] + [math.sqrt(1 - a) / (math.sqrt(a) + math.sqrt(1 - a)) for a in alpha_bars]
        for t, t_prev in zip(times[:-1], times[1:]):
            chi = dh.euler_step(chi, torch.full((16,), t), torch.full((16,), t_prev), flow(chi, torch.full((16,), t))).x_prev
    # One DDIM step is one Euler step in flow coordinates (test_ddim_is_an_euler_step...), and the exact Gaussian flow
    # contracts errors (x_0 = mu + s·x_1, s < 1), so the steps' float32 roundoff adds up: each step makes ≤ 8 roundings
    # of numbers ≤ 5, and DDIM's x0_hat = (x_t − σ·eps)/α carries them to the next state amplified by α_prev/α
    # (≈ 3,500 at the cosine schedule's first step, 999 → 888; ≤ 3 after it): ≈ 8.4e-3 in all.
    alphas = [float(schedule.alpha_bars[k]) ** 0.5 for k in steps] + [1.0]
    atol = sum(8 * 5 * a_prev / a * U32 for a, a_prev in zip(alphas[:-1], alphas[1:]))
    torch.testing.assert_close(ddim, chi, rtol=0, atol=atol)


def test_euler_is_exact_on_straight_paths_and_heun_is_second_order():
    mu, s, flow = 0.3, 0.5, dh.FlowConfig()
    model = dh.VelocityNet(GaussianVelocity(mu, s, flow.time_scale), flow)
    x_1 = torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exact = exact_gaussian_flow(x_1, mu, s)

    def error(method, n):
        *_, last = dh.iterate_flow(model, x_1, dh.FlowSamplerSpec(method, n))
        return float((last.x - exact).abs().max())

    # global error ~ C·h^p, so halving h divides it by 2^p (1 + O(h)): at n = 32 → 64 the O(h) term is below 10%
    euler_ratio, heun_ratio = error("euler", 32) / error("euler", 64), error("heun", 32) / error("heun", 64)
    assert 2 * 0.85 < euler_ratio < 2 * 1.15, euler_ratio
    assert 4 * 0.85 < heun_ratio < 4 * 1.15, heun_ratio
    assert error("heun", 64) < error("euler", 64) / 10  # second order pays already at this step size

    point = dh.VelocityNet(GaussianVelocity(mu, 0.0, flow.time_scale), flow)  # s = 0: every path is a straight line to μ
    *_, last = dh.iterate_flow(point, x_1, dh.FlowSamplerSpec("euler", 1))
    # one step: x_1 − 1·(x_1 − μ)/1 in float64 on numbers ≤ 5
    torch.testing.assert_close(last.x, torch.full_like(x_1, mu), rtol=0, atol=8 * U64 * 5)


def test_steps_match_their_formulas_and_heun_costs_two_evaluations():
    g = torch.Generator().manual_seed(5)
    x, v, v2 = torch.randn(3, 2, 1, 3, 3, generator=g)
    t, t_prev = torch.tensor([1.0, 0.5]), torch.tensor([0.75, 0.0])
    step = dh.euler_step(x, t, t_prev, v)
    torch.testing.assert_close(step.x_prev, x + dh.per_sample(t_prev - t, 4) * v, rtol=0, atol=0)
    torch.testing.assert_close(step.x0_hat, x - dh.per_sample(t, 4) * v, rtol=0, atol=0)
    heun = dh.heun_step(x, t, t_prev, v, v2)
    torch.testing.assert_close(heun.x_prev, x + dh.per_sample(t_prev - t, 4) * (v + v2) / 2, rtol=0, atol=0)
    assert dh.FlowSamplerSpec("heun", 4).num_evaluations == 7 and dh.FlowSamplerSpec("euler", 4).num_evaluations == 4  # Heun's last step is Euler
    assert dh.FlowSamplerSpec("euler", 4).times() == [1.0, 0.75, 0.5, 0.25, 0.0] and str(dh.FlowSamplerSpec("heun", 2)) == "heun-2"


def test_heun_never_asks_the_network_at_t_0_and_counts_its_evaluations():
    asked = []

    class Recorder(nn.Module):
        def forward(self, x, scaled_t, y=None):
            asked.append(sorted(set((scaled_t / 999.0).tolist())))
            return x / dh.per_sample(scaled_t / 999.0, x.ndim)  # the exact velocity when all data sits at 0: straight lines to it

    model = dh.VelocityNet(Recorder())
    for n in (1, 2, 5):
        asked.clear()
        x_1 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(n))
        *_, last = dh.iterate_flow(model, x_1, dh.FlowSamplerSpec("heun", n))
        assert len(asked) == dh.FlowSamplerSpec("heun", n).num_evaluations == 2 * n - 1
        assert all(t > 0 for times in asked for t in times)  # the last step, to t = 0, is Euler's
        # on straight paths both methods are exact: the states are x_1·t and the last step x − t·(x/t) = 0 up to a few roundings
        assert float(last.x.abs().max()) < 8 * U32 * float(x_1.abs().max())


def test_velocity_net_scales_time_and_refuses_integer_timesteps():
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y=None):
            seen.append(t)
            return x * self.w

    net = dh.VelocityNet(Recorder(), dh.FlowConfig(time_scale=999.0))
    net(torch.zeros(2, 1, 4, 4), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(seen[-1], torch.tensor([0.0, 499.5]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="t must be float flow time.*sample it with dh.sample_flow, not dh.sample"):
        net(torch.zeros(2, 1, 4, 4), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        net(torch.zeros(2, 1, 4, 4), torch.tensor([0.5, 1.5]))


def test_a_flow_cannot_be_sampled_as_ddpm_nor_a_ddpm_model_as_a_flow():
    cfg = dh.load_config("tiny")
    unet = dh.UNet(cfg.unet)
    flow_model = dh.VelocityNet(dh.UNet(cfg.unet))
    schedule = dh.make_schedule("linear", 1000)
    with pytest.raises(ValueError, match="t must be float flow time"):
        dh.sample(flow_model, 2, dh.MNIST_PIXELS, schedule, dh.SamplerSpec("ddim", num_steps=2))
    with pytest.raises(ValueError, match="model must be a dh.VelocityNet.*got UNet"):
        dh.sample_flow(unet, 2, dh.MNIST_PIXELS, dh.FlowSamplerSpec("euler", 2))
    samples = dh.sample_flow(flow_model, 3, dh.MNIST_PIXELS, dh.FlowSamplerSpec("heun", 2), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 32, 32) and float(samples.abs().max()) <= 1.0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: dh.FlowSamplerSpec("rk4", 2), "method must be one of"),
    (lambda: dh.FlowSamplerSpec("euler", 0), "num_steps"),
    (lambda: dh.FlowConfig(time_scale=0.0), "flow.time_scale"),
    (lambda: dh.euler_step(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), torch.tensor([0.6, 0.1]), torch.zeros(2, 3)), "t_prev must be < t"),
    (lambda: dh.euler_step(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.1]), torch.zeros(2, 4)), "v_hat"),
    (lambda: dh.flow_interpolant(torch.zeros(2, 3), torch.tensor([0.5]), torch.zeros(2, 3)), r"t must be a \(2,\) tensor"),
    (lambda: check_flow_times(torch.tensor([-0.1]), 1), r"must lie in \[0, 1\]"),
    (lambda: dh.VelocityNet("not a net"), "net must be an nn.Module"),
    (lambda: dh.EpsFromVelocity(nn.Linear(2, 2), dh.make_schedule("cosine", 10)), "flow must be a dh.VelocityNet.*got Linear"),
    (lambda: dh.EpsFromVelocity(dh.VelocityNet(nn.Linear(2, 2)), "cosine"), "schedule must be a dh.NoiseSchedule"),
    (lambda: dh.flow_coordinates(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), dh.make_schedule("cosine", 10)), "int64 tensor of DDPM timesteps"),
])
def test_bad_inputs_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_logit_normal_flow_times_have_the_asked_location_and_spread():
    config = dh.TrainConfig(timestep_sampling="logit_normal", timestep_logit_mean=0.5, timestep_logit_std=0.8)
    n = 20_000
    t = dh.draw_flow_times(n, config, torch.Generator().manual_seed(6))
    assert t.dtype == torch.float32 and bool(((t > 0) & (t < 1)).all())
    logit = torch.logit(t.double())
    # logit(t) ~ N(m, s²): the sample mean has standard error s/√n, the sample sd about s/√(2n); allow 5 of each
    assert abs(float(logit.mean()) - 0.5) < 5 * 0.8 / math.sqrt(n)
    assert abs(float(logit.std()) - 0.8) < 5 * 0.8 / math.sqrt(2 * n)
    uniform = dh.draw_flow_times(n, dh.TrainConfig(), torch.Generator().manual_seed(7))
    assert abs(float(uniform.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)  # U(0, 1): sd √(1/12)


@pytest.fixture(scope="module")
def tiny():
    cfg = dh.load_config("tiny")
    train_set = dh.load_mnist("train", cfg)
    return cfg, dh.ImageSet(train_set.images[:64], train_set.labels[:64])


def test_the_trainer_trains_a_flow_and_its_checkpoint_is_a_flow_checkpoint(tiny, tmp_path):
    cfg, data = tiny
    config = cfg.train.replace(loss_weighting="uniform")
    torch.manual_seed(0)
    state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), config, num_steps=4)
    path = tmp_path / "flow.pt"
    history = dh.train(state, data, dh.MNIST_PIXELS, None, config, diffusion=dh.FlowConfig(), val_set=data, checkpoint_path=str(path), progress=False)
    assert len(history.train_loss) == 4 and all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    # at initialisation the head outputs 0, so the loss is E‖eps − x0‖² per element = 1 + E[x0²] (eps independent of x0)
    expected = 1 + float(data.images.square().mean())
    assert abs(history.train_loss[0] - expected) < 5 * 2 / math.sqrt(config.batch_size * 1024 / 64)  # crude: pixels are correlated, so count patches, not pixels
    resumed = dh.load_checkpoint(path, dh.VelocityNet(dh.UNet(cfg.unet)), dh.FlowConfig(), config)
    assert resumed.step == 4
    with pytest.raises(ValueError, match=r"another network, diffusion or loss: .*diffusion\.T: checkpoint None vs now 1000"):
        dh.load_checkpoint(path, dh.VelocityNet(dh.UNet(cfg.unet)), cfg.diffusion, config)
    with pytest.raises(ValueError, match=r"flow\.time_scale: checkpoint 999.0 vs now 500.0"):
        dh.load_checkpoint(path, dh.VelocityNet(dh.UNet(cfg.unet)), dh.FlowConfig(time_scale=500.0), config)


def test_the_trainer_refuses_mixed_processes(tiny):
    cfg, data = tiny
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    flow_train = cfg.train.replace(loss_weighting="uniform")  # the flow objective's only weighting
    flow_state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), flow_train)
    ddpm_state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    with pytest.raises(ValueError, match="a flow .* has no noise schedule: pass schedule=None"):
        dh.train(flow_state, data, dh.MNIST_PIXELS, schedule, flow_train, diffusion=dh.FlowConfig(), progress=False)
    with pytest.raises(ValueError, match="state.model must be a dh.VelocityNet"):
        dh.train(ddpm_state, data, dh.MNIST_PIXELS, None, flow_train, diffusion=dh.FlowConfig(), progress=False)
    with pytest.raises(ValueError, match="loss_weighting='min_snr' weights the diffusion's timesteps"):
        dh.train(flow_state, data, dh.MNIST_PIXELS, None, cfg.train.replace(loss_weighting="min_snr"), diffusion=dh.FlowConfig(), progress=False)
    pairs = dh.Coupling(data.images, data.labels, torch.randn_like(data.images))
    with pytest.raises(ValueError, match="only a flow trains on"):
        dh.train(ddpm_state, pairs, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
    with pytest.raises(ValueError, match="train_set.noise must have the images' shape"):
        dh.train(flow_state, dh.Coupling(data.images, data.labels, data.images[:3]), dh.MNIST_PIXELS, None, flow_train, diffusion=dh.FlowConfig(), progress=False)


def test_a_coupling_trains_on_its_own_noise(tiny):
    cfg, data = tiny
    config = cfg.train.replace(loss_weighting="uniform", batch_size=8)
    torch.manual_seed(0)
    state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), config, num_steps=1)
    x0, noise = data.images[:8], torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(8))
    twin = torch.Generator().set_state(state.generator.get_state())
    t = dh.draw_flow_times(8, config, twin)  # the step draws t first, from the state's generator
    expected = dh.flow_loss(state.model, x0, t=t, eps=noise)  # the loss before the update
    loss = dh.train_step(state, x0, None, config, diffusion=dh.FlowConfig(), eps=noise)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)  # the same operations on the same numbers
    with pytest.raises(ValueError, match="eps and t .* are for flow matching"):
        dh.train_step(dh.init_train_state(dh.UNet(cfg.unet), config), x0, dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T), config, diffusion=cfg.diffusion, eps=noise)


def gaussian_teacher(mu: float = 0.3, s: float = 0.5) -> dh.VelocityNet:
    flow = dh.FlowConfig()
    return dh.VelocityNet(GaussianVelocity(mu, s, flow.time_scale), flow)


def test_a_chord_line_passes_through_both_ends_of_its_piece():
    g = torch.Generator().manual_seed(11)
    starts, ends = torch.randn(2, 6, 1, 4, 4, generator=g)
    t_start = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.9, 0.3])
    t_end = torch.tensor([0.75, 0.5, 0.25, 0.0, 0.1, 0.29])
    pieces = dh.Segments(starts, ends, t_start, t_end, torch.zeros(6, dtype=torch.long))
    line_x0, line_eps = dh.chord_lines(pieces)
    chord = (starts - ends) / dh.per_sample(t_start - t_end, 4)
    # |chord| reaches |start − end|/0.01 ≈ 600 for the last piece; each point is a few roundings of numbers of that size
    atol = 8 * U32 * float(chord.abs().max() + 1)
    torch.testing.assert_close(dh.flow_interpolant(line_x0, t_start, line_eps), starts, rtol=0, atol=atol)
    torch.testing.assert_close(dh.flow_interpolant(line_x0, t_end, line_eps), ends, rtol=0, atol=atol)
    torch.testing.assert_close(dh.velocity_target(line_x0, line_eps), chord, rtol=0, atol=atol)


def test_trajectory_segments_cut_the_teachers_path_into_equal_pieces():
    teacher, spec = gaussian_teacher(), dh.FlowSamplerSpec("euler", 6)
    noise = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    pieces = dh.trajectory_segments(teacher, noise, 3, spec, labels=torch.arange(5))
    visited = [state.x for state in dh.iterate_flow(teacher, noise, spec)]
    n = noise.shape[0]
    assert pieces.starts.shape == (15, 1, 8, 8) and pieces.labels.tolist() == list(range(5)) * 3
    torch.testing.assert_close(pieces.t_start, torch.tensor([1.0] * n + [2 / 3] * n + [1 / 3] * n))
    torch.testing.assert_close(pieces.t_end, torch.tensor([2 / 3] * n + [1 / 3] * n + [0.0] * n))
    # the same operations on the same numbers: the states are the teacher's, bit for bit
    assert torch.equal(pieces.starts[:n], noise)
    for j, step in enumerate((2, 4, 6)):
        assert torch.equal(pieces.ends[j * n:(j + 1) * n], visited[step - 1])
    assert torch.equal(pieces.starts[n:], pieces.ends[:2 * n])  # each piece starts where the last one ended
    in_chunks = dh.trajectory_segments(teacher, noise, 3, spec, labels=torch.arange(5), batch_size=2)
    assert all(torch.equal(a, b) for a, b in zip(pieces, in_chunks))  # an elementwise teacher: chunking changes nothing


def test_pieces_from_a_students_own_states_start_where_its_euler_steps_land():
    """With a student, each piece after the first starts at the student's own state (one Euler step per
    piece from the noise), and the teacher integrates that piece from there."""
    teacher, student, spec = gaussian_teacher(), gaussian_teacher(mu=-0.2, s=0.8), dh.FlowSamplerSpec("euler", 6)
    noise = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(17))
    pieces = dh.trajectory_segments(teacher, noise, 3, spec, student=student, batch_size=2)
    plain = dh.trajectory_segments(teacher, noise, 3, spec)
    n, times = noise.shape[0], spec.times()
    assert torch.equal(pieces.starts[:n], noise) and torch.equal(pieces.ends[:n], plain.ends[:n])  # the first pieces: the teacher's
    assert torch.equal(pieces.t_start, plain.t_start) and torch.equal(pieces.t_end, plain.t_end)
    x = noise
    for j in range(3):
        # the same operations on the same numbers as the loop: equal bit for bit
        assert torch.equal(pieces.starts[j * n:(j + 1) * n], x)
        end = x
        for t, t_prev in zip(times[2 * j:2 * j + 2], times[2 * j + 1:2 * j + 3]):
            t, t_prev = torch.full((n,), t), torch.full((n,), t_prev)
            end = dh.euler_step(end, t, t_prev, teacher(end, t)).x_prev
        assert torch.equal(pieces.ends[j * n:(j + 1) * n], end)
        t, t_prev = torch.full((n,), times[2 * j]), torch.full((n,), times[2 * j + 2])
        x = dh.euler_step(x, t, t_prev, student(x, t)).x_prev
    assert not torch.equal(pieces.starts[n:], plain.starts[n:])  # a different student: different starts
    with pytest.raises(ValueError, match="student must be a dh.VelocityNet"):
        dh.trajectory_segments(teacher, noise, 3, spec, student=GaussianVelocity(0.0, 1.0, 1.0))


def test_a_student_whose_steps_follow_the_chords_reproduces_the_teacher_in_k_steps():
    """The aim of distillation, checked with an oracle student: answer each piece's chord at its start and
    k Euler steps land on the teacher's many-step sample."""
    teacher, spec = gaussian_teacher(), dh.FlowSamplerSpec("euler", 12)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(13))
    pieces = dh.trajectory_segments(teacher, noise, 4, spec)
    line_x0, line_eps = dh.chord_lines(pieces)
    x = noise
    for j, (t, t_prev) in enumerate(zip(dh.FlowSamplerSpec("euler", 4).times()[:-1], dh.FlowSamplerSpec("euler", 4).times()[1:])):
        piece = slice(j * 4, (j + 1) * 4)
        x = dh.euler_step(x, torch.full((4,), t), torch.full((4,), t_prev), dh.velocity_target(line_x0[piece], line_eps[piece])).x_prev
    # four steps, each a few roundings of chord-sized numbers (|chord| ≤ ~4 / 0.25)
    torch.testing.assert_close(x, pieces.ends[pieces.t_end == 0], rtol=0, atol=4 * 8 * U32 * 16)


def test_a_distillation_step_is_flow_matching_on_the_chord_at_the_pieces_start(tiny):
    cfg, _ = tiny
    config = cfg.train.replace(loss_weighting="uniform", batch_size=8)
    noise = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(14))
    pieces = dh.trajectory_segments(gaussian_teacher(), noise, 2, dh.FlowSamplerSpec("euler", 4))
    torch.manual_seed(0)
    state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), config, num_steps=1)
    chord = (pieces.starts - pieces.ends) / dh.per_sample(pieces.t_start - pieces.t_end, 4)
    with torch.no_grad():
        expected = (state.model(pieces.starts, pieces.t_start) - chord).square().mean()
    line_x0, line_eps = dh.chord_lines(pieces)
    loss = dh.train_step(state, line_x0, None, config, diffusion=dh.FlowConfig(), eps=line_eps, t=pieces.t_start)
    # the step's input (1 − t)·x0 + t·eps is the start up to a few roundings (~1e-6), and the chord up to the same:
    # the loss, a mean of O(1) squares, moves by about that much relative to itself
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=0)


def test_training_on_segments_moves_the_students_k_step_sample_towards_the_teachers(tiny):
    cfg, _ = tiny
    teacher, k = gaussian_teacher(), 2
    noise = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(15))
    pieces = dh.trajectory_segments(teacher, noise, k, dh.FlowSamplerSpec("euler", 8))
    target = pieces.ends[pieces.t_end == 0]
    config = cfg.train.replace(loss_weighting="uniform", batch_size=16, lr=3e-3, warmup_steps=1, ema_decay=0.0)
    torch.manual_seed(0)
    state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), config, num_steps=60)

    def error() -> float:
        *_, last = dh.iterate_flow(state.model.eval(), noise, dh.FlowSamplerSpec("euler", k))
        return float((last.x - target).square().mean())

    before = error()
    dh.train(state, pieces, dh.MNIST_PIXELS, None, config, diffusion=dh.FlowConfig(), progress=False)
    # an untrained student barely moves (its last convolution starts at zero), so before is about the mean square of
    # x_1 − x_0 = 0.5·x_1 − 0.3 (0.25 + 0.09) plus the teacher's own Euler error; 60 steps on 32 pieces bring it to
    # about a fifth of that: the bar of one half leaves room for any machine's roundoff along the training
    assert error() < 0.5 * before, (before, error())


def test_segments_are_refused_where_they_do_not_belong(tiny):
    cfg, data = tiny
    teacher = gaussian_teacher()
    noise = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(16))
    with pytest.raises(ValueError, match=r"spec.num_steps \(6\) must be a multiple of num_pieces \(4\)"):
        dh.trajectory_segments(teacher, noise, 4, dh.FlowSamplerSpec("euler", 6))
    with pytest.raises(ValueError, match="teacher must be a dh.VelocityNet"):
        dh.trajectory_segments(dh.UNet(cfg.unet), noise, 2, dh.FlowSamplerSpec("euler", 2))
    with pytest.raises(ValueError, match="noise"):
        dh.trajectory_segments(teacher, noise.clone().index_fill_(0, torch.tensor([1]), float("nan")), 2, dh.FlowSamplerSpec("euler", 2))
    with pytest.raises(ValueError, match=r"labels must be a \(3,\) tensor"):
        dh.trajectory_segments(teacher, noise, 2, dh.FlowSamplerSpec("euler", 2), labels=torch.zeros(2, dtype=torch.long))
    pieces = dh.trajectory_segments(teacher, noise, 2, dh.FlowSamplerSpec("euler", 2))
    flow_train = cfg.train.replace(loss_weighting="uniform")
    flow_state = dh.init_train_state(dh.VelocityNet(dh.UNet(cfg.unet)), flow_train)
    backwards = pieces._replace(t_end=pieces.t_start.flip(0))
    with pytest.raises(ValueError, match=r"train_set.t_end must be < train_set.t_start"):
        dh.train(flow_state, backwards, dh.MNIST_PIXELS, None, flow_train, diffusion=dh.FlowConfig(), progress=False)
    with pytest.raises(ValueError, match=r"train_set.starts and train_set.ends"):
        dh.train(flow_state, pieces._replace(ends=pieces.ends[:2]), dh.MNIST_PIXELS, None, flow_train, diffusion=dh.FlowConfig(), progress=False)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    ddpm_state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    with pytest.raises(ValueError, match="dh.Segments .* only a flow trains on"):
        dh.train(ddpm_state, pieces, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
    with pytest.raises(ValueError, match=r"eps and t \(noise paired with the images, fixed flow times\) are for flow matching"):
        dh.train_step(ddpm_state, data.images[:8], schedule, cfg.train, diffusion=cfg.diffusion, t=torch.full((8,), 0.5))
