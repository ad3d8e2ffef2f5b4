"""One reverse step x_t → x_{t_prev}, as a pure function, for each sampling method.

Every step has one signature, so the methods are interchangeable values (:data:`STEPS`)::

    step(x_t, t, t_prev, eps_hat, schedule, *, eta=None, variance=None, clip_x0=None,
         previous=None, generator=None) -> Step(x_prev, x0_hat)

``t`` is the 0-based index; ``t_prev = -1`` means "past the last step" (ᾱ = 1, the clean data).
An option that does not apply to a method (η for DDPM, the variance for DDIM) is an error, not
ignored. ``clip_x0`` is the interval x0_hat is clipped to, e.g. (-1, 1) for images, or None.
``previous = (t_before, x0_hat_before)`` is the step before, which only the multistep solver uses.
Each public step checks its inputs once per call; :data:`BARE_STEPS` holds the same maths without
checks, for the sampling loop, which has checked its inputs once for all steps. Taught in: 05_sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .checks import check_earlier, check_same_shape, check_timesteps, read_back, values_checked
from .diffusion import _posterior_mean_var, _predict_eps, _predict_x0
from .schedules import NoiseSchedule, per_sample

VARIANCES = ("posterior", "beta")
Previous = tuple[torch.Tensor, torch.Tensor]


class Step(NamedTuple):
    """The result of one reverse step: the next (less noisy) state and the current estimate of x0."""

    x_prev: torch.Tensor
    x0_hat: torch.Tensor


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def _not_applicable(method: str, **options: object) -> None:
    given = {name: value for name, value in options.items() if value is not None}
    if given:
        name, value = next(iter(given.items()))
        raise ValueError(f"{name}={value!r} does not apply to method {method!r} (see dh.SamplerSpec for which options each method takes)")


def _check_step(x_t, t, t_prev, eps_hat, schedule, clip_x0=None) -> None:
    if clip_x0 is not None and not (isinstance(clip_x0, (tuple, list)) and len(clip_x0) == 2
                                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clip_x0) and clip_x0[0] < clip_x0[1]):
        raise ValueError(f"clip_x0 must be None (no clipping) or a range (low, high) with low < high, e.g. dh.MNIST_PIXELS.value_range, got {clip_x0!r}"
                         + (" (a step takes the range itself; True/False is dh.SamplerSpec's switch)" if isinstance(clip_x0, bool) else ""))
    if not isinstance(x_t, torch.Tensor) or not isinstance(eps_hat, torch.Tensor):
        raise ValueError(f"x_t and eps_hat must be tensors of one shape (B, ...), got {type(x_t).__name__} and {type(eps_hat).__name__}")
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    check_earlier(t_prev, t)


def _check_previous(previous: Previous | None, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> None:
    """``previous`` must be None or (t_before, x0_hat_before) of the step before, with t_before > t."""
    if previous is None:
        return
    if not isinstance(previous, tuple) or len(previous) != 2:
        raise ValueError(f"previous must be None or (t_before, x0_hat_before) from the step before, got {type(previous).__name__}")
    t_before, x0_before = previous
    check_timesteps(t_before, x_t.shape[0], schedule.T, "previous[0]")
    if not values_checked() and read_back((t_before <= t).any()):
        raise ValueError(f"previous[0] (the t of the step before) must be > t, got {t_before.tolist()} for t={t.tolist()}")
    check_same_shape(x0_before, x_t, "previous[1]", "x_t")


def _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0):
    x0_hat = _predict_x0(x_t, t, eps_hat, schedule)
    if clip_x0 is not None:  # keep eps consistent with the clipped x0_hat
        x0_hat = x0_hat.clamp(*clip_x0)
        eps_hat = _predict_eps(x_t, t, x0_hat, schedule)
    return x0_hat, eps_hat


def alpha_bar_at(t: torch.Tensor, schedule: NoiseSchedule, ndim: int) -> torch.Tensor:
    """ᾱ at index t, with ᾱ = 1 at t = −1 (the clean data); (B, 1, ..., 1)."""
    values = per_sample(schedule.alpha_bars[t.clamp(min=0)], ndim)
    return torch.where(per_sample(t, ndim) >= 0, values, torch.ones_like(values))


def ddpm_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    """One ancestral step x_t → x_{t−1} ~ p_θ(x_{t−1} | x_t) (Ho et al. 2020, Algorithm 2).

    1. x0_hat = (x_t − √(1 − ᾱ_t) eps_hat) / √ᾱ_t, clipped to ``clip_x0`` when given.
    2. mean = μ̃_t(x0_hat, x_t), the posterior mean; without clipping it equals
       (x_t − β_t / √(1 − ᾱ_t) · eps_hat) / √α_t (eq. 11).
    3. x_{t−1} = mean + σ_t ε_t with fresh noise ε_t ~ N(0, I) and σ_t² = β̃_t (``variance="posterior"``,
       the default) or β_t (``"beta"``), and no noise at the last step (t = 0).

    x_t, eps_hat: (B, ...); t: (B,) int64 in [0, T); t_prev must be t − 1 (DDPM visits every step).
    """
    _not_applicable("ddpm", eta=eta)
    if variance is not None and variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    _check_step(x_t, t, t_prev, eps_hat, schedule, clip_x0)
    if not values_checked() and not read_back((t_prev == t - 1).all()):
        raise ValueError(f"method 'ddpm' steps from t to t - 1 (for fewer steps use 'ddim'), got t={t.tolist()}, t_prev={t_prev.tolist()}")
    return _ddpm_step(x_t, t, t_prev, eps_hat, schedule, variance=variance, clip_x0=clip_x0, generator=generator)


def _ddpm_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    variance = "posterior" if variance is None else variance
    x0_hat, _ = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    mean, posterior_variance = _posterior_mean_var(x0_hat, x_t, t, schedule)
    sigma_sq = posterior_variance if variance == "posterior" else per_sample(schedule.betas[t], x_t.ndim)
    not_last = per_sample((t > 0).to(x_t.dtype), x_t.ndim)
    x_prev = mean + not_last * sigma_sq.sqrt() * _noise_like(x_t, generator)
    return Step(x_prev, x0_hat)


def ddim_sigma(t: torch.Tensor, t_prev: torch.Tensor, schedule: NoiseSchedule, eta: float, ndim: int) -> torch.Tensor:
    """σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (Song et al. 2021, eq. 16); (B, 1, ..., 1)."""
    alpha_bar = per_sample(schedule.alpha_bars[t], ndim)
    alpha_bar_prev = alpha_bar_at(t_prev, schedule, ndim)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()


def ddim_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    """One DDIM step x_t → x_{t_prev} (Song et al. 2021, eq. 12), for any t_prev < t.

    1. x0_hat from eps_hat as in :func:`ddpm_step` (eps_hat re-derived if x0_hat is clipped).
    2. σ = :func:`ddim_sigma` with noise η (default 0: deterministic; η = 1 on consecutive steps
       gives DDPM's β̃_t).
    3. x_prev = √ᾱ_prev · x0_hat + √(1 − ᾱ_prev − σ²) · eps_hat + σ ε_t, with fresh noise ε_t ~ N(0, I).
    """
    _not_applicable("ddim", variance=variance)
    if eta is not None and not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    _check_step(x_t, t, t_prev, eps_hat, schedule, clip_x0)
    return _ddim_step(x_t, t, t_prev, eps_hat, schedule, eta=eta, clip_x0=clip_x0, generator=generator)


def _ddim_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    eta = 0.0 if eta is None else eta
    x0_hat, eps_hat = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    alpha_bar_prev = alpha_bar_at(t_prev, schedule, x_t.ndim)
    sigma = ddim_sigma(t, t_prev, schedule, eta, x_t.ndim)
    direction = (1 - alpha_bar_prev - sigma**2).clamp(min=0).sqrt() * eps_hat
    x_prev = alpha_bar_prev.sqrt() * x0_hat + direction
    if eta > 0:
        x_prev = x_prev + sigma * _noise_like(x_t, generator)
    return Step(x_prev, x0_hat)


def log_snr_half(t: torch.Tensor, schedule: NoiseSchedule, ndim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α, σ, e^{-λ}) at index t with α = √ᾱ_t, σ = √(1 − ᾱ_t), λ = log(α/σ); t = −1 gives (1, 0, 0)."""
    alpha_bar = alpha_bar_at(t, schedule, ndim)
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).clamp(min=0).sqrt()
    return alpha, sigma, sigma / alpha


def dpm_solver_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    """One step of DPM-Solver++(2M) x_t → x_{t_prev} (Lu et al. 2022, Algorithm 2), deterministic.

    With α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ) and the step Δλ = λ_prev − λ_t > 0 (Lu et al.'s h):

    1. x0_hat from eps_hat as in :func:`ddim_step` (clipped to ``clip_x0`` when given).
    2. x̃_0 = x0_hat on the first step (``previous`` None) and on the last (t_prev = −1); otherwise,
       with ``previous = (t_before, x0_hat_before)`` from the step before and r = (λ_t − λ_before)/Δλ,
       x̃_0 = (1 + 1/(2r)) x0_hat − 1/(2r) x0_hat_before (a linear extrapolation in λ; Lu et al. write D).
    3. x_prev = (σ_prev/σ_t) x_t + α_prev (1 − e^{−Δλ}) x̃_0.

    With x̃_0 = x0_hat the step is exactly DDIM with η = 0. ``generator`` is unused (no noise).
    """
    _not_applicable("dpm-solver++", eta=eta, variance=variance)
    _check_step(x_t, t, t_prev, eps_hat, schedule, clip_x0)
    _check_previous(previous, x_t, t, schedule)
    return _dpm_solver_step(x_t, t, t_prev, eps_hat, schedule, clip_x0=clip_x0, previous=previous)


def _dpm_solver_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    x0_hat, _ = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    _, sigma, e_lam = log_snr_half(t, schedule, x_t.ndim)
    alpha_prev, sigma_prev, e_lam_prev = log_snr_half(t_prev, schedule, x_t.ndim)
    e_minus_h = e_lam_prev / e_lam  # e^{-Δλ} (Lu et al.'s e^{-h}) = e^{-λ_prev} / e^{-λ_t}; 0 at the last step
    d = _multistep_x0(x0_hat, t, t_prev, previous, schedule)
    x_prev = sigma_prev / sigma * x_t + alpha_prev * (1 - e_minus_h) * d
    return Step(x_prev, x0_hat)


def _multistep_x0(x0_hat: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, previous: Previous | None, schedule: NoiseSchedule) -> torch.Tensor:
    """x̃_0 of DPM-Solver++(2M): x0_hat, or its linear extrapolation in λ from the step before (not on the last step)."""
    if previous is None:
        return x0_hat
    t_before, x0_before = previous
    ndim = x0_hat.ndim
    _, _, e_lam = log_snr_half(t, schedule, ndim)
    _, _, e_lam_prev = log_snr_half(t_prev, schedule, ndim)
    _, _, e_lam_before = log_snr_half(t_before, schedule, ndim)
    h = torch.log(e_lam / e_lam_prev.clamp(min=1e-30))
    r = torch.log(e_lam_before / e_lam) / h
    second_order = (1 + 0.5 / r) * x0_hat - (0.5 / r) * x0_before
    return torch.where(per_sample(t_prev, ndim) > 0, second_order, x0_hat)


def dpm_solver_sde_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    """One step of SDE-DPM-Solver++(2M) x_t → x_{t_prev} (Lu et al. 2022, "DPM-Solver++", section 5),
    the stochastic sibling of :func:`dpm_solver_step`. With α, σ, λ, Δλ and x̃_0 as there:

        x_prev = (σ_prev/σ_t) e^{−Δλ} x_t + α_prev (1 − e^{−2Δλ}) x̃_0 + σ_prev √(1 − e^{−2Δλ}) ε_t,

    with fresh noise ε_t ~ N(0, I) and x̃_0 in its midpoint form (the extrapolation of
    :func:`dpm_solver_step`). With x̃_0 = x0_hat (the
    first step) it is exactly DDIM with η = 1: the same mean, and σ_prev² (1 − e^{−2Δλ}) equals
    η = 1's σ². The last step (t_prev = −1) returns x̃_0 without noise.
    """
    _not_applicable("dpm-solver++-sde", eta=eta, variance=variance)
    _check_step(x_t, t, t_prev, eps_hat, schedule, clip_x0)
    _check_previous(previous, x_t, t, schedule)
    return _dpm_solver_sde_step(x_t, t, t_prev, eps_hat, schedule, clip_x0=clip_x0, previous=previous, generator=generator)


def _dpm_solver_sde_step(x_t, t, t_prev, eps_hat, schedule: NoiseSchedule, *, eta=None, variance=None, clip_x0=None, previous=None, generator=None) -> Step:
    x0_hat, _ = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    _, sigma, e_lam = log_snr_half(t, schedule, x_t.ndim)
    alpha_prev, sigma_prev, e_lam_prev = log_snr_half(t_prev, schedule, x_t.ndim)
    e_minus_h = e_lam_prev / e_lam
    e_minus_2h = e_minus_h.square()
    d = _multistep_x0(x0_hat, t, t_prev, previous, schedule)
    x_prev = sigma_prev / sigma * e_minus_h * x_t + alpha_prev * (1 - e_minus_2h) * d
    x_prev = x_prev + sigma_prev * (1 - e_minus_2h).clamp(min=0).sqrt() * _noise_like(x_t, generator)
    return Step(x_prev, x0_hat)


def check_step_result(result: object, x: torch.Tensor) -> None:
    """A ``step=`` function must return a :class:`Step` (or a plain pair) of two tensors of x_t's shape."""
    if not isinstance(result, tuple) or len(result) != 2:
        hint = " (a bare tensor would be unpacked along the batch)" if isinstance(result, torch.Tensor) else ""
        raise ValueError(f"step must return dh.Step(x_prev, x0_hat), got {type(result).__name__}{hint}")
    for name, value in zip(Step._fields, result):
        if not isinstance(value, torch.Tensor) or value.shape != x.shape or not value.is_floating_point():
            got = f"shape {tuple(value.shape)}, dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"step must return {name} as a floating tensor of x_t's shape {tuple(x.shape)}, got {got}")


StepFunction = Callable[..., Step]

#: The sampling methods by name; each value has the signature of the module docstring.
STEPS: dict[str, StepFunction] = {"ddpm": ddpm_step, "ddim": ddim_step, "dpm-solver++": dpm_solver_step, "dpm-solver++-sde": dpm_solver_sde_step}

#: The same steps without checks (same signature), for a loop that has checked its inputs once.
BARE_STEPS: dict[str, StepFunction] = {"ddpm": _ddpm_step, "ddim": _ddim_step, "dpm-solver++": _dpm_solver_step, "dpm-solver++-sde": _dpm_solver_sde_step}

#: The options each method takes (every other option must be left at None).
OPTIONS: dict[str, tuple[str, ...]] = {"ddpm": ("variance",), "ddim": ("eta",), "dpm-solver++": (), "dpm-solver++-sde": ()}
