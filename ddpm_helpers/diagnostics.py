"""A checklist for "my loss went down but my samples are noise": each check is a small measurement
with a known healthy value, run against any ε-model, schedule and reverse step.

Every check returns a :class:`Check` (passed or not, the number measured, what was expected, and
what a failure usually means). :func:`run_checklist` runs them all and returns a :class:`Report`
that prints as a table. The checks look for the bugs that diffusion code most often has: data in
the wrong range; ᾱ shifted by one step (the "previous" ᾱ padded on the wrong side); the previous
timestep taken as t − 1 when sampling with fewer steps; a standard deviation used as a variance;
noise added at the last step; a network left in training mode; EMA weights still near their
initial values; non-finite outputs under mixed precision. Each check uses exact answers where they
exist (a Gaussian "oracle" network whose ε is known in closed form), so it tests the code, not the
training. Two instruments go with the checks: :func:`loss_by_timestep`, the loss per band of
timesteps beside the per-pixel Gaussian baseline (:class:`PerPixelGaussian`) that any trained
network should beat. Taught in: 08_diagnostics; `tests/test_diagnostics.py` shows each check
failing on the bug it is built for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_batch, check_images, check_positive_int
from .diffusion import DataSpace, ddpm_loss, q_sample
from .schedules import NoiseSchedule, per_sample
from .steps import StepFunction, ddim_step, ddpm_step


@dataclass(frozen=True)
class Check:
    """One measurement of the checklist: ``value`` against the healthy ``expected`` range."""

    name: str
    passed: bool
    value: float
    expected: str
    meaning: str  # what a failure usually means

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<28} {self.value:>11.4g}   expected {self.expected}"


@dataclass(frozen=True)
class Report:
    """Every check of :func:`run_checklist`, in order; ``str(report)`` is a readable table."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]

    def __getitem__(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    def __str__(self) -> str:
        lines = [check.line() for check in self.checks]
        lines += [f"  -> {check.name}: {check.meaning}" for check in self.checks if not check.passed]
        return "\n".join(lines)


class GaussianOracle(nn.Module):
    """The exact ε-prediction for one-number data x0 ~ N(mu, s²): with a = ᾱ_t,
    E[ε | x_t] = √(1 − a) (x_t − √a mu) / (a s² + 1 − a). A sampler driven by it must return N(mu, s²)."""

    def __init__(self, schedule: NoiseSchedule, mu: float = 0.3, s: float = 0.2) -> None:
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = per_sample(self.schedule.alpha_bars.to(x_t.device)[t], x_t.ndim)
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


class PerPixelGaussian(nn.Module):
    """The best ε-prediction if every pixel were an independent Gaussian with the data's per-pixel mean
    and variance (the oracle above, pixel by pixel): a "network" with no learning beyond two numbers
    per pixel. Its expected loss at t is known in closed form (:meth:`expected_loss`); a trained
    network that does not beat it at some t has learned nothing there about the shapes of digits."""

    def __init__(self, images: torch.Tensor, schedule: NoiseSchedule) -> None:
        super().__init__()
        check_batch(images, "images")
        self.schedule = schedule
        self.register_buffer("mean", images.float().mean(0))
        self.register_buffer("var", images.float().var(0, unbiased=False))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = per_sample(self.schedule.alpha_bars.to(x_t.device)[t], x_t.ndim)
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mean) / (a * self.var + 1 - a)

    def expected_loss(self, t: torch.Tensor) -> torch.Tensor:
        """E‖ε − ε_pixel‖² / D at each t: the mean over pixels of ᾱ v / (ᾱ v + 1 − ᾱ), v the pixel's variance; (len(t),)."""
        a = per_sample(self.schedule.alpha_bars.to(self.var.device)[t], self.var.ndim + 1)
        return (a * self.var / (a * self.var + 1 - a)).flatten(1).mean(1)


@dataclass(frozen=True)
class TimestepBand:
    """The loss of one band of timesteps [lo, hi): mean per-image loss (per pixel) with its standard
    error, the per-pixel Gaussian baseline's expected loss there, and the same error measured on the
    clean image, ‖x0 − x̂0‖²/D = loss / SNR(t)."""

    lo: int
    hi: int
    loss: float
    se: float
    baseline: float
    x0_error: float

    @property
    def ratio(self) -> float:
        """loss / baseline: below 1 where the network knows more than per-pixel statistics."""
        return self.loss / self.baseline


@torch.no_grad()
def loss_by_timestep(
    model: nn.Module, images: torch.Tensor, schedule: NoiseSchedule, *, num_bands: int = 20, generator: torch.Generator | None = None
) -> list[TimestepBand]:
    """The ε-loss of ``model`` on ``images`` in ``num_bands`` equal bands of timesteps, each image
    at one t drawn inside each band, beside the per-pixel Gaussian baseline fitted to the same images.
    The images' range is not checked, so that data in the wrong range can be diagnosed too.
    Healthy: far below the baseline in the low and middle bands, where the digit's shape decides
    the noise. In the noisiest bands the best prediction is almost x_t itself and the baseline's
    loss is tiny, so an ε-network can sit above it there at little cost in absolute loss (the
    book's model does from t ≈ 700; its x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ magnifies that error). A network
    above the baseline in the middle bands is undertrained, or mis-scaled (data range, schedule)."""
    check_images(images, "images")
    check_positive_int(num_bands, "num_bands")
    if num_bands > schedule.T:
        raise ValueError(f"num_bands must be at most T = {schedule.T}, got {num_bands}")
    baseline = PerPixelGaussian(images, schedule)
    edges = torch.linspace(0, schedule.T, num_bands + 1).round().long().tolist()
    snr = schedule.snr()
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = torch.randint(lo, hi, (images.shape[0],), device=images.device, generator=generator)
        eps = torch.randn(images.shape, device=images.device, generator=generator)
        loss = ddpm_loss(model, images, schedule, t=t, eps=eps, reduction="none", space=DataSpace(images.shape[1:])).float()  # no range: wrong data is diagnosed
        se = float(loss.std() / math.sqrt(loss.numel())) if loss.numel() > 1 else float("nan")
        bands.append(TimestepBand(lo, hi, float(loss.mean()), se, float(baseline.expected_loss(t).mean()), float((loss / snr[t]).mean())))
    return bands


def _oracle_samples(step: StepFunction, schedule: NoiseSchedule, visited: list[int], n: int, seed: int) -> torch.Tensor:
    """Run ``step`` from x_T ~ N(0, 1) through ``visited`` timesteps with the Gaussian oracle."""
    generator = torch.Generator().manual_seed(seed)
    oracle = GaussianOracle(schedule)
    x = torch.randn((n, 1, 1, 1), generator=generator)
    for i, t_value in enumerate(visited):
        t = torch.full((n,), t_value, dtype=torch.long)
        t_prev = torch.full((n,), visited[i + 1] if i + 1 < len(visited) else -1, dtype=torch.long)
        x = step(x, t, t_prev, oracle(x, t), schedule, generator=generator).x_prev
    return x


def check_data_range(images: torch.Tensor) -> Check:
    """Training images must span [-1, 1]: a minimum near −1 and a maximum near +1 (MNIST: background
    at −1). Images in [0, 1] or [0, 255] train a model whose samples are then mapped wrongly."""
    check_images(images, "images")
    low, high = float(images.min()), float(images.max())
    passed = math.isfinite(low) and math.isfinite(high) and -1.0001 <= low <= -0.5 and 0.5 <= high <= 1.0001
    return Check("data range", passed, high - low, "min near -1 and max near +1 (span about 2)",
                 f"the data span [{low:.3g}, {high:.3g}]: convert images to [-1, 1] (x / 127.5 - 1 from bytes, 2x - 1 from [0, 1])")


def check_schedule(schedule: NoiseSchedule) -> Check:
    """ᾱ_t must be the running product of (1 − β) including step t itself (0-based t: ᾱ_0 = 1 − β_0),
    and the posterior variance at t = 0 must be 0. The largest deviation is reported."""
    betas = schedule.betas.double().cpu()
    expected = torch.cumprod(1 - betas, dim=0)
    deviation = float((schedule.alpha_bars.double().cpu() - expected).abs().max())
    deviation = max(deviation, abs(float(schedule.posterior_variance[0])))
    return Check("schedule: alpha_bar", deviation < 1e-5, deviation, "< 1e-5",
                 "alpha_bar is off by one step (the 'previous' alpha_bar padded on the wrong side, or 1-based t) or the posterior at t = 0 is not exact")


def check_forward_moments(images: torch.Tensor, schedule: NoiseSchedule, *, forward: Callable = q_sample, num_draws: int = 64, seed: int = 0) -> Check:
    """x_t = √ᾱ x0 + √(1 − ᾱ) ε has, per pixel, mean √ᾱ x0 and variance 1 − ᾱ; the largest error in
    standard errors, over t in {0, T/2, T − 1}, is reported. A square root forgotten or doubled fails.
    ``forward(x0, t, eps, schedule)`` is the forward process under test (default: this package's)."""
    check_images(images, "images")
    generator = torch.Generator().manual_seed(seed)
    x0 = images[:8].float().cpu()
    worst = 0.0
    for t_value in (0, schedule.T // 2, schedule.T - 1):
        t = torch.full((x0.shape[0],), t_value, dtype=torch.long)
        draws = torch.stack([forward(x0, t, torch.randn(x0.shape, generator=generator), schedule.to("cpu")) for _ in range(num_draws)])
        a = float(schedule.alpha_bars[t_value])
        mean_gap = float((draws.mean(0) - math.sqrt(a) * x0).abs().mean())
        if 1 - a < 1e-10:  # no noise at all at this step (a schedule with alpha_bar = 1): x_t must be x0
            worst = max(worst, 0.0 if mean_gap < 1e-6 and float(draws.var(0).max()) < 1e-10 else math.inf)
            continue
        variance_ratio = float(draws.var(0).mean()) / (1 - a)  # the mean |error| of a standard normal is 0.8 standard errors
        worst = max(worst, mean_gap / math.sqrt((1 - a) / num_draws) / 3, abs(variance_ratio - 1) / (3 * math.sqrt(2 / num_draws)))
    return Check("forward process moments", worst < 1.0, worst, "< 1 (3 standard errors)",
                 "q_sample does not produce x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps: check the square roots")


def check_reverse_variance(step: StepFunction, schedule: NoiseSchedule, *, n: int = 20_000, seed: int = 1) -> Check:
    """One ancestral step at t = T/2 with a fixed ε: the spread of x_{t−1} must be the posterior
    variance β̃_t (not its square root, not β̃_t squared). The ratio measured/expected is reported."""
    generator = torch.Generator().manual_seed(seed)
    t_value = schedule.T // 2
    x = torch.zeros((n, 1, 1, 1))
    t = torch.full((n,), t_value, dtype=torch.long)
    out = step(x, t, t - 1, torch.zeros_like(x), schedule, generator=generator).x_prev
    ratio = float(out.var()) / float(schedule.posterior_variance[t_value])
    return Check("reverse step variance", abs(ratio - 1) < 0.05, ratio, "1 +- 0.05",
                 "the reverse step's noise has the wrong scale: a standard deviation used as a variance, a log-variance not exponentiated, or beta vs beta_tilde mixed up")


def check_last_step_is_clean(step: StepFunction, schedule: NoiseSchedule, *, seed: int = 2) -> Check:
    """The step from t = 0 must add no noise: two draws from the same x_0 with different generators agree."""
    x = torch.randn((64, 1, 1, 1), generator=torch.Generator().manual_seed(seed))
    t = torch.zeros(64, dtype=torch.long)
    eps = torch.zeros_like(x)
    a = step(x, t, t - 1, eps, schedule, generator=torch.Generator().manual_seed(seed + 1)).x_prev
    b = step(x, t, t - 1, eps, schedule, generator=torch.Generator().manual_seed(seed + 2)).x_prev
    difference = float((a - b).abs().max())
    return Check("no noise at the last step", difference < 1e-6, difference, "0",
                 "noise is added at the final step: samples end grainy; skip the noise when t = 0")


def check_strided_sampling(step: StepFunction, schedule: NoiseSchedule, *, num_steps: int = 20, n: int = 20_000, seed: int = 3) -> Check:
    """Sampling the Gaussian oracle with ``num_steps`` evenly spaced steps must return N(0.3, 0.2²):
    the error of the samples' mean, in units of their target spread, is reported. Taking the previous
    timestep as t − 1 instead of the next visited one leaves almost all the noise in."""
    visited = torch.linspace(schedule.T - 1, 0, num_steps).round().long().tolist()
    samples = _oracle_samples(step, schedule, visited, n, seed)
    error = max(abs(float(samples.mean()) - 0.3), abs(float(samples.std()) - 0.2)) / 0.2
    # healthy DDIM with 20 uniform steps: 0.29 (it narrows this narrow Gaussian); the t - 1 bug: about 4
    return Check(f"sampling with {num_steps} steps", error < 0.5, error, "< 0.5 (of the data's spread)",
                 "with fewer steps than T the sampler must step from each visited t to the next visited one, not to t - 1")


def check_eval_mode(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> Check:
    """Sampling must run the network in eval mode: two forward passes on the same input agree. A network
    left in training mode (dropout, batch statistics) gives different answers and noisier samples."""
    with torch.no_grad():
        first, second = model(x, t), model(x, t)
    difference = float((first - second).abs().max())
    return Check("network in eval mode", difference < 1e-5 and not model.training, difference, "0, and model.training False",
                 "call model.eval() before sampling: a network in training mode (dropout, batch statistics) answers differently each time")


def check_ema(ema_model: nn.Module, model: nn.Module, initial_model: nn.Module | None = None) -> Check:
    """The EMA weights should be closer to the trained weights than to the initial ones: the ratio
    ‖ema − trained‖ / ‖ema − initial‖ is reported (early in training, with a slow EMA, it is above 1:
    the EMA still averages mostly the random initialisation)."""
    def flat(m):
        return torch.cat([p.detach().float().flatten().cpu() for p in m.parameters()])
    ema, trained = flat(ema_model), flat(model)
    if initial_model is None:
        ratio = float((ema - trained).norm() / trained.norm().clamp(min=1e-12))
        return Check("EMA near the trained weights", ratio < 0.5, ratio, "< 0.5 (relative distance)",
                     "the EMA weights are far from the trained ones: too slow a decay for this many steps")
    initial = flat(initial_model)
    ratio = float((ema - trained).norm() / (ema - initial).norm().clamp(min=1e-12))
    return Check("EMA near the trained weights", ratio < 1.0, ratio, "< 1 (closer to trained than to initial)",
                 "the EMA still averages mostly the initial weights: sample from the raw weights early in training, or use a faster decay")


def check_finite_outputs(model: nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *, dtype: torch.dtype | None = None) -> Check:
    """The network's output must be finite at the first, middle and last timestep, under autocast with
    ``dtype`` when given (fp16 overflows where bf16 does not). The count of non-finite values is reported."""
    device = x.device
    bad = 0
    with torch.no_grad():
        for t_value in (0, schedule.T // 2, schedule.T - 1):
            t = torch.full((x.shape[0],), t_value, dtype=torch.long, device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(x, t)
            bad += int((~torch.isfinite(out.float())).sum())
    return Check("finite outputs" + (f" ({dtype})" if dtype else ""), bad == 0, float(bad), "0 non-finite values",
                 "the network overflows: under fp16 use a GradScaler and keep the loss and normalisations in fp32, or use bf16")


def run_checklist(
    model: nn.Module,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    *,
    step: StepFunction = ddpm_step,
    strided_step: StepFunction = ddim_step,
    forward: Callable = q_sample,
    ema_model: nn.Module | None = None,
    initial_model: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Report:
    """Run every check against an ε-``model`` (called as ``model(x_t, t)``), its ``schedule``, a batch
    of training ``images``, the ancestral ``step`` (from t to t − 1) and the ``strided_step`` used with
    fewer steps, both with this package's step signature, and the ``forward`` process
    ``forward(x0, t, eps, schedule)`` (wrap your own to check them). ``ema_model`` (and the ``initial_model`` it started from) adds the EMA check.
    Returns a :class:`Report`; ``print(report)`` shows every check and, for failures, what they mean.
    """
    check_images(images, "images")
    device = next(model.parameters()).device
    x = images[:4].to(device)
    t = torch.full((x.shape[0],), schedule.T // 2, dtype=torch.long, device=device)
    checks = [
        check_data_range(images),
        check_schedule(schedule),
        check_forward_moments(images, schedule, forward=forward),
        check_reverse_variance(step, schedule.to("cpu")),
        check_last_step_is_clean(step, schedule.to("cpu")),
        check_strided_sampling(strided_step, schedule.to("cpu")),
        check_eval_mode(model, x, t),
        check_finite_outputs(model, x, schedule, dtype=autocast_dtype),
    ]
    if ema_model is not None:
        checks.append(check_ema(ema_model, model, initial_model))
    return Report(tuple(checks))

