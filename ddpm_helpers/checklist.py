"""The checks of the diagnostics checklist: each is a small measurement with a known healthy value,
run against any ε-model, schedule and reverse step, for "my loss went down but my samples are noise".

Every check returns a :class:`Check` (passed or not, the number measured, what was expected, and
what a failure usually means); :func:`ddpm_helpers.diagnostics.run_checklist` runs them all and
returns a :class:`Report` that prints as a table. The checks look for the bugs that diffusion code most often has: data in
the wrong range; ᾱ shifted by one step (the "previous" ᾱ padded on the wrong side); the previous
timestep taken as t − 1 when sampling with fewer steps; a standard deviation used as a variance;
noise added at the last step; a network left in training mode; EMA weights still near their
initial values; non-finite outputs under mixed precision. Each check uses exact answers where they
exist (:class:`~ddpm_helpers.oracles.GaussianOracle`), so it tests the code, not the training. A
broken contract (an output that is not ε̂ of x_t's shape, an EMA of another architecture, a string
where a function belongs, no images) is a ``ValueError`` naming the argument, not a check.
Chapters call these names as ``dh.diagnostics.*``. Taught in: 08_diagnostics;
`tests/test_diagnostics.py` shows each check failing on the bug it is built for.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_batch, check_images
from .diffusion import DataSpace, q_sample
from .oracles import GaussianOracle
from .schedules import NoiseSchedule
from .steps import STEPS, StepFunction


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
        found = [check for check in self.checks if check.name == name]
        if not found:
            raise KeyError(f"no check named {name!r} in this report; its checks: {[check.name for check in self.checks]}")
        return found[0]

    def __str__(self) -> str:
        lines = [check.line() for check in self.checks]
        lines += [f"  -> {check.name}: {check.meaning}" for check in self.checks if not check.passed]
        return "\n".join(lines)


def _check_function(value: object, name: str, example: str) -> None:
    """``value`` must be callable; a string naming a step gets the table to look it up in."""
    if isinstance(value, str):
        hint = f"; a step by name is dh.STEPS[{value!r}]" if value in STEPS else f" (steps by name: dh.STEPS, {sorted(STEPS)})"
        raise ValueError(f"{name} must be a function such as {example}, got the string {value!r}{hint}")
    if not callable(value):
        raise ValueError(f"{name} must be a function such as {example}, got {type(value).__name__}")


def _device_of(model: nn.Module, fallback: torch.device) -> torch.device:
    """Where ``model`` keeps its weights (or buffers); ``fallback`` for a network with neither, e.g. an oracle."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return fallback if tensor is None else tensor.device


def _checked_output(out: object, x: torch.Tensor) -> torch.Tensor:
    """``out = model(x_t, t)`` must be ε̂: a tensor of x_t's shape (one prediction per value of x_t)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ValueError(f"model(x_t, t) must return eps_hat, a tensor of x_t's shape {tuple(x.shape)}, got {got}: "
                         "check the last layer's channels and the up-sampling path (no check can judge another shape)")
    return out


def _flat_weights(model: nn.Module, name: str, like: nn.Module | None = None) -> torch.Tensor:
    """Every parameter of ``model`` as one float32 vector on the CPU; with ``like``, the two networks
    must have the same parameter names and shapes (one architecture)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name} must be an nn.Module, got {type(model).__name__}")
    parameters = list(model.named_parameters())
    if not parameters:
        raise ValueError(f"{name} has no parameters: there are no weights to average, so leave out the EMA check")
    if like is not None:  # the same parameter shapes in the same order (names may differ: a wrapper adds a prefix)
        shapes, wanted = [tuple(p.shape) for _, p in parameters], [tuple(p.shape) for p in like.parameters()]
        if shapes != wanted:
            i = next(i for i, (a, b) in enumerate(zip(shapes + [None], wanted + [None])) if a != b)
            mine = f"{parameters[i][0]} {shapes[i]}" if i < len(shapes) else "nothing"
            raise ValueError(f"{name} must have model's architecture (the same parameter shapes in the same order): {len(shapes)} "
                             f"parameters against model's {len(wanted)}; parameter {i} is {mine}, model's is {wanted[i] if i < len(wanted) else 'nothing'}")
    return torch.cat([p.detach().float().flatten().cpu() for _, p in parameters])


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
    at −1). Images in [0, 1] or [0, 255] train a model whose samples are then mapped wrongly.
    images: (B, C, H, W), B ≥ 1."""
    check_images(images, "images")
    check_batch(images, "images")
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
    ``forward(x0, t, eps, schedule)`` is the forward process under test (default: this package's,
    told the data's space so that images in any range are measured, not refused)."""
    check_images(images, "images")
    generator = torch.Generator().manual_seed(seed)
    x0 = images[:8].float().cpu()
    if forward is q_sample:
        forward = functools.partial(q_sample, space=DataSpace(tuple(x0.shape[1:])))
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
    left in training mode (dropout, batch statistics) gives different answers and noisier samples.
    x: (B, C, H, W), t: (B,); ``model(x, t)`` must return a tensor of x's shape (else ``ValueError``)."""
    with torch.no_grad():
        first, second = _checked_output(model(x, t), x), _checked_output(model(x, t), x)
    difference = float((first - second).abs().max())
    return Check("network in eval mode", difference < 1e-5 and not model.training, difference, "0, and model.training False",
                 "call model.eval() before sampling: a network in training mode (dropout, batch statistics) answers differently each time")


def check_ema(ema_model: nn.Module, model: nn.Module, initial_model: nn.Module | None = None) -> Check:
    """The EMA weights should be closer to the trained weights than to the initial ones: the ratio
    ‖ema − trained‖ / ‖ema − initial‖ is reported (early in training, with a slow EMA, it is above 1:
    the EMA still averages mostly the random initialisation). The networks must share one
    architecture (the same parameter names and shapes), else ``ValueError``."""
    trained = _flat_weights(model, "model")
    ema = _flat_weights(ema_model, "ema_model", like=model)
    if initial_model is None:
        ratio = float((ema - trained).norm() / trained.norm().clamp(min=1e-12))
        return Check("EMA near the trained weights", ratio < 0.5, ratio, "< 0.5 (relative distance)",
                     "the EMA weights are far from the trained ones: too slow a decay for this many steps")
    initial = _flat_weights(initial_model, "initial_model", like=model)
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
                out = _checked_output(model(x, t), x)
            bad += int((~torch.isfinite(out.float())).sum())
    return Check("finite outputs" + (f" ({dtype})" if dtype else ""), bad == 0, float(bad), "0 non-finite values",
                 "the network overflows: under fp16 use a GradScaler and keep the loss and normalisations in fp32, or use bf16")
