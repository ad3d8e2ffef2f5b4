"""The diagnostics checklist: every check passes on correct code and fails on its own bug alone."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import ddpm_helpers as dh

S = dh.make_schedule("linear", 1000)
IMAGES = dh.load_mnist("train", dh.TINY).images[:16]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,))).eval()


MODEL = tiny_model()
EMA = copy.deepcopy(MODEL)  # an EMA that has caught up with the trained weights


# the bugs, one per check ---------------------------------------------------------------------------

def shifted_alpha_bar_schedule():
    """alpha_bar shifted by one step (the product taken one factor too far, as when alpha_bar and its
    'previous' are padded on the wrong side), used consistently by everything that reads it."""
    ab = S.alpha_bars.double()
    shifted = torch.cat([ab[1:], ab[-1:] * (1 - S.betas[-1].double())])
    return dataclasses.replace(S, alpha_bars=shifted.float(), sqrt_alpha_bars=shifted.sqrt().float(),
                               sqrt_one_minus_alpha_bars=(1 - shifted).sqrt().float(), log_snr=(shifted / (1 - shifted)).log())


def forward_without_square_roots(x0, t, eps, schedule):
    a = schedule.alpha_bars[t].view(-1, 1, 1, 1)
    return a * x0 + (1 - a) * eps


def std_as_variance_step(x_t, t, t_prev, eps_hat, schedule, *, generator=None, **_):
    """The ancestral step with the posterior variance used where its square root belongs."""
    x0_hat = dh.predict_x0(x_t, t, eps_hat, schedule)
    mean, variance = dh.posterior_mean_var(x0_hat, x_t, t, schedule)
    noise = torch.randn(x_t.shape, generator=generator)
    return dh.Step(mean + (t > 0).float().view(-1, 1, 1, 1) * variance * noise, x0_hat)


def noise_at_the_last_step(x_t, t, t_prev, eps_hat, schedule, *, generator=None, **_):
    x0_hat = dh.predict_x0(x_t, t, eps_hat, schedule)
    mean, variance = dh.posterior_mean_var(x0_hat, x_t, t, schedule)
    sigma = torch.maximum(variance, schedule.betas[t].view(-1, 1, 1, 1)).sqrt()  # beta at t = 0, where beta_tilde is 0
    return dh.Step(mean + sigma * torch.randn(x_t.shape, generator=generator), x0_hat)


def previous_is_t_minus_one(x_t, t, t_prev, eps_hat, schedule, **options):
    return dh.ddim_step(x_t, t, t - 1, eps_hat, schedule, **options)


class Dropout(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.drop = model, nn.Dropout(0.5)

    def forward(self, x, t, y=None):
        return self.drop(self.model(x, t, y))


class Overflows(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, y=None):
        out = self.model(x, t, y)
        return torch.where((t == S.T - 1).view(-1, 1, 1, 1), torch.full_like(out, float("inf")), out)


BUGS = {
    "data range": dict(images=(IMAGES + 1) / 2),
    "schedule: alpha_bar": dict(schedule=shifted_alpha_bar_schedule()),
    "forward process moments": dict(forward=forward_without_square_roots),
    "reverse step variance": dict(step=std_as_variance_step),
    "no noise at the last step": dict(step=noise_at_the_last_step),
    "sampling with 20 steps": dict(strided_step=previous_is_t_minus_one),
    "network in eval mode": dict(model=Dropout(MODEL).train()),
    "finite outputs": dict(model=Overflows(MODEL).eval()),
    "EMA near the trained weights": dict(ema_model=tiny_model(), initial_model=tiny_model()),  # the EMA is still the initial network
}


def checklist(**changes):
    arguments = dict(model=MODEL, schedule=S, images=IMAGES, ema_model=EMA, initial_model=None)
    arguments.update(changes)
    if "ema_model" in changes and "initial_model" in changes:  # a trained model distinct from the initial one
        trained = tiny_model()
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        arguments["model"] = trained.eval()
    model, schedule, images = arguments.pop("model"), arguments.pop("schedule"), arguments.pop("images")
    return dh.diagnostics.run_checklist(model, schedule, images, **arguments)


def test_every_check_passes_on_correct_code():
    report = checklist()
    assert report.passed, str(report)
    assert len(report.checks) == len(BUGS)
    assert "FAIL" not in str(report)


@pytest.mark.parametrize("name", list(BUGS))
def test_each_bug_fails_its_own_check_and_no_other(name):
    report = checklist(**BUGS[name])
    assert report.failed == [name], str(report)
    assert f"FAIL  {name}" in str(report) and "-> " + name in str(report)  # the failure says what it usually means


@pytest.mark.slow
def test_the_oracle_is_exact():
    """The Gaussian oracle recovers N(0.3, 0.2^2) with all T ancestral steps: the checks rest on it."""
    samples = dh.diagnostics._oracle_samples(dh.ddpm_step, S, list(range(S.T - 1, -1, -1)), 20_000, seed=0)
    # Monte Carlo, n = 20,000: the mean's standard error 0.2/√n ≈ 0.0014 (abs 0.01 is 7 of them), the
    # std's relative one 1/√(2n) = 0.005 (rel 0.03 is 6).
    assert float(samples.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(samples.std()) == pytest.approx(0.2, rel=0.03)


def test_ema_check_without_the_initial_weights_uses_the_relative_distance():
    far = tiny_model()
    with torch.no_grad():
        for p in far.parameters():
            p.mul_(3.0)
    assert dh.diagnostics.check_ema(MODEL, MODEL).passed
    assert not dh.diagnostics.check_ema(far, MODEL).passed


def test_the_per_pixel_baseline_scores_its_own_expected_loss():
    """Fed to loss_by_timestep, the per-pixel Gaussian scores what its formula says, band by band."""
    bands = dh.diagnostics.loss_by_timestep(dh.diagnostics.PerPixelGaussian(IMAGES, S), IMAGES.repeat(16, 1, 1, 1), S,
                                            num_bands=5, generator=torch.Generator().manual_seed(0))
    assert [(b.lo, b.hi) for b in bands] == [(0, 200), (200, 400), (400, 600), (600, 800), (800, 1000)]
    for band in bands:
        # Monte Carlo: 5 standard errors of the band's mean loss, plus 1e-3 for float32 rounding: each
        # image's loss is a mean of 1024 pixels (≤ 1024·u ≈ 6e-5 relative worst case, on a loss ≲ 1)
        assert abs(band.loss - band.baseline) < 5 * band.se + 1e-3, band
        assert band.ratio == pytest.approx(band.loss / band.baseline)  # the same division of the same floats
    assert bands[0].baseline > bands[-1].baseline  # little noise: every pixel's value is in x_t, most of eps is not


@pytest.mark.slow
def test_loss_by_timestep_reads_the_x0_error_through_the_snr():
    model = dh.diagnostics.PerPixelGaussian(IMAGES, S)
    band = dh.diagnostics.loss_by_timestep(model, IMAGES, S, num_bands=1000, generator=torch.Generator().manual_seed(0))[500]
    assert (band.lo, band.hi) == (500, 501)
    # the package divides the float32 loss by SNR_500 in float32 (≤ 3 roundings, 2e-7) or float64: rel 1e-5 covers either
    assert band.x0_error == pytest.approx(band.loss / float(S.snr()[500]), rel=1e-5)
    with pytest.raises(ValueError, match="num_bands must be at most T = 1000"):
        dh.diagnostics.loss_by_timestep(model, IMAGES, S, num_bands=1001)


def test_a_textbook_ema_still_holds_most_of_its_start_after_1500_updates():
    """Chapter 8's claim: decay 0.9999 without warm-up keeps 0.9999^1500 ≈ 86% of the initial weights,
    while the package's warmed-up EMA (decay 0.995) has forgotten them."""
    start, trained = torch.ones(1), torch.zeros(1)
    textbook = start.clone()
    for _ in range(1500):
        textbook.lerp_(trained, 1 - 0.9999)
    # 0.9999^1500 = e^{−0.15001} = 0.86070; the chapter states 0.861 (3e-4 away) and 1500 float32 lerps add
    # ≤ 1500·u ≈ 9e-5: abs 0.001 covers both with room
    assert float(textbook) == pytest.approx(0.861, abs=0.001)
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = dh.EMA(net, decay=0.995)
    with torch.no_grad():
        net.weight.fill_(0.0)
    for _ in range(1500):
        ema.update(net)
    assert float(ema.model.weight) < 1e-3  # at most 0.995^1500 = 5.5e-4 (warm-up only lowers the decay)
