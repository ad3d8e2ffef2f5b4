"""Reverse-process samplers: one step as a pure function, and one short loop that uses them.

Each step maps x_t and the network's eps_hat to x_{t_prev} and returns ``Step(x_prev, x0_hat)``.
``t`` is the 0-based index; ``t_prev = -1`` means "past the last step" (ᾱ = 1, the clean image).
Taught in: 05_sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from .checks import check_same_shape, check_timesteps
from .diffusion import gather, posterior_mean_var, predict_eps, predict_x0
from .schedules import NoiseSchedule

METHODS = ("ddpm", "ddim", "dpm-solver++")
VARIANCES = ("posterior", "beta")


class Step(NamedTuple):
    """The result of one reverse step: the next (less noisy) state and the current estimate of x0."""

    x_prev: torch.Tensor
    x0_hat: torch.Tensor


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) → (B, 1, ..., 1) so it broadcasts against a tensor with ``ndim`` dims."""
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0):
    x0_hat = predict_x0(x_t, t, eps_hat, schedule)
    if clip_x0:  # images live in [-1, 1]; keep eps consistent with the clipped x0_hat
        x0_hat = x0_hat.clamp(-1, 1)
        eps_hat = predict_eps(x_t, t, x0_hat, schedule)
    return x0_hat, eps_hat


def ddpm_step(
    x_t: torch.Tensor,
    t: torch.Tensor,
    eps_hat: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    variance: str = "posterior",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> Step:
    """One ancestral step x_t → x_{t−1} ~ p_θ(x_{t−1} | x_t) (Ho et al. 2020, Algorithm 2).

    1. x0_hat = (x_t − √(1 − ᾱ_t) eps_hat) / √ᾱ_t, clipped to [-1, 1] when ``clip_x0``.
    2. mean = μ̃_t(x0_hat, x_t), the posterior mean; without clipping it equals
       (x_t − β_t / √(1 − ᾱ_t) · eps_hat) / √α_t (eq. 11).
    3. x_{t−1} = mean + σ_t z with σ_t² = β̃_t (``variance="posterior"``) or β_t (``"beta"``),
       and no noise at the last step (t = 0).

    x_t, eps_hat: (B, C, H, W); t: (B,) int64 in [0, T).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    x0_hat, _ = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    mean, posterior_variance = posterior_mean_var(x0_hat, x_t, t, schedule)
    sigma_sq = posterior_variance if variance == "posterior" else gather(schedule.betas, t, x_t.ndim)
    not_last = _per_sample((t > 0).to(x_t.dtype), x_t.ndim)
    x_prev = mean + not_last * sigma_sq.sqrt() * _noise_like(x_t, generator)
    return Step(x_prev, x0_hat)


def ddim_sigma(t: torch.Tensor, t_prev: torch.Tensor, schedule: NoiseSchedule, eta: float, ndim: int) -> torch.Tensor:
    """σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (Song et al. 2021, eq. 16); (B, 1, 1, 1)."""
    alpha_bar = gather(schedule.alpha_bars, t, ndim)
    alpha_bar_prev = alpha_bar_at(t_prev, schedule, ndim)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)).sqrt()


def alpha_bar_at(t: torch.Tensor, schedule: NoiseSchedule, ndim: int) -> torch.Tensor:
    """ᾱ at index t, with ᾱ = 1 at t = −1 (the clean image); (B, 1, ..., 1)."""
    values = gather(schedule.alpha_bars, t.clamp(min=0), ndim)
    return torch.where(_per_sample(t, ndim) >= 0, values, torch.ones_like(values))


def ddim_step(
    x_t: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    eps_hat: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    eta: float = 0.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> Step:
    """One DDIM step x_t → x_{t_prev} (Song et al. 2021, eq. 12), for any t_prev < t.

    1. x0_hat from eps_hat as in :func:`ddpm_step` (eps_hat re-derived if x0_hat is clipped).
    2. σ = :func:`ddim_sigma` (η = 0: deterministic; η = 1 on consecutive steps: DDPM's β̃_t).
    3. x_prev = √ᾱ_prev · x0_hat + √(1 − ᾱ_prev − σ²) · eps_hat + σ z.

    t, t_prev: (B,) int64 with −1 ≤ t_prev < t < T.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    if t_prev.shape != t.shape or bool((t_prev >= t).any()) or bool((t_prev < -1).any()):
        raise ValueError(f"t_prev must have t's shape and satisfy -1 <= t_prev < t, got t_prev={t_prev.tolist()}")
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


def dpm_solver_step(
    x_t: torch.Tensor,
    t: torch.Tensor,
    t_prev: torch.Tensor,
    eps_hat: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    previous: tuple[torch.Tensor, torch.Tensor] | None = None,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> Step:
    """One step of DPM-Solver++(2M) x_t → x_{t_prev} (Lu et al. 2022, Algorithm 2), deterministic.

    With α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ) and h = λ_prev − λ_t > 0:

    1. x0_hat from eps_hat as in :func:`ddim_step` (clipped to [-1, 1] when ``clip_x0``).
    2. D = x0_hat on the first step (``previous`` None) and on the last (t_prev = −1); otherwise,
       with ``previous = (t_before, x0_hat_before)`` from the step before and r = (λ_t − λ_before)/h,
       D = (1 + 1/(2r)) x0_hat − 1/(2r) x0_hat_before (a linear extrapolation in λ).
    3. x_prev = (σ_prev/σ_t) x_t + α_prev (1 − e^{−h}) D.

    With D = x0_hat the step is exactly DDIM with η = 0. ``generator`` is accepted for the shared
    signature and unused. t, t_prev: (B,) int64 with −1 ≤ t_prev < t < T.
    """
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    if t_prev.shape != t.shape or bool((t_prev >= t).any()) or bool((t_prev < -1).any()):
        raise ValueError(f"t_prev must have t's shape and satisfy -1 <= t_prev < t, got t_prev={t_prev.tolist()}")
    x0_hat, _ = _x0_and_eps(x_t, t, eps_hat, schedule, clip_x0)
    alpha, sigma, e_lam = log_snr_half(t, schedule, x_t.ndim)
    alpha_prev, sigma_prev, e_lam_prev = log_snr_half(t_prev, schedule, x_t.ndim)
    e_minus_h = e_lam_prev / e_lam  # e^{-h} = e^{-λ_prev} / e^{-λ_t}; 0 at the last step
    d = x0_hat
    if previous is not None:
        t_before, x0_before = previous
        if t_before.shape != t.shape or bool((t_before <= t).any()):
            raise ValueError(f"previous[0] (t of the step before) must have t's shape and be > t, got {t_before.tolist()}")
        check_same_shape(x0_before, x_t, "previous[1]", "x_t")
        _, _, e_lam_before = log_snr_half(t_before, schedule, x_t.ndim)
        h = torch.log(e_lam / e_lam_prev.clamp(min=1e-30))
        r = torch.log(e_lam_before / e_lam) / h
        second_order = (1 + 0.5 / r) * x0_hat - (0.5 / r) * x0_before
        d = torch.where(_per_sample(t_prev, x_t.ndim) > 0, second_order, x0_hat)
    x_prev = sigma_prev / sigma * x_t + alpha_prev * (1 - e_minus_h) * d
    return Step(x_prev, x0_hat)


def timesteps(T: int, num_steps: int, spacing: str = "uniform") -> list[int]:
    """Decreasing 0-based timesteps to visit, from near T−1 down to 0.

    ``uniform``: evenly spaced; ``quadratic``: denser near t = 0 (Song et al. 2021).
    With ``num_steps == T`` both give T−1, T−2, ..., 0.
    """
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must lie in [1, {T}], got {num_steps}")
    if spacing == "uniform":
        values = torch.linspace(0, T - 1, num_steps, dtype=torch.float64).round().long()
    elif spacing == "quadratic":
        values = (torch.linspace(0, (T - 1) ** 0.5, num_steps, dtype=torch.float64) ** 2).round().long()
    else:
        raise ValueError(f"spacing must be 'uniform' or 'quadratic', got {spacing!r}")
    steps = sorted(set(values.tolist()), reverse=True)
    if len(steps) != num_steps:
        raise ValueError(f"{num_steps} {spacing} steps over T={T} collide; use fewer steps or uniform spacing")
    return steps


def guided_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The noise prediction of classifier-free guidance: ε̃ = ε(x_t, t, ∅) + s·(ε(x_t, t, y) − ε(x_t, t, ∅)).

    ``s = guidance_scale``: 0 is the unconditional model and 1 the conditional one (one network
    call each; with ``y`` None, the model's own default, the null class); s > 1 pushes the sample
    further towards what distinguishes class y. Ho & Salimans (2022) write the same mix as
    (1 + w)·ε_y − w·ε_∅, so s = 1 + w. Otherwise the two predictions come from one batched call;
    the null class is ``model.num_classes``.
    """
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be non-negative, got {guidance_scale}")
    if y is None or guidance_scale == 1.0:
        return model(x_t, t, y)
    null = torch.full_like(y, model.num_classes)
    if guidance_scale == 0.0:
        return model(x_t, t, null)
    eps_y, eps_null = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return eps_null + guidance_scale * (eps_y - eps_null)


class SamplerState(NamedTuple):
    """What the loop yields after each step: the step's index t, the new state and x0_hat."""

    t: int
    x: torch.Tensor
    x0_hat: torch.Tensor


@torch.no_grad()
def iterate_sampler(
    model: nn.Module,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    method: str = "ddpm",
    num_steps: int | None = None,
    eta: float = 0.0,
    spacing: str = "uniform",
    variance: str = "posterior",
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[SamplerState]:
    """Run the reverse process from ``x_T`` and yield a :class:`SamplerState` after every step.

    ``method="ddpm"`` visits every t = T−1, ..., 0 (``num_steps`` must be None or T) with the
    ``variance`` of :func:`ddpm_step`; ``method="ddim"`` visits ``num_steps`` timesteps (default T,
    ``spacing`` uniform or quadratic) with noise η; ``method="dpm-solver++"`` visits the same
    timesteps with :func:`dpm_solver_step` (second order, deterministic; ``eta`` must be 0).
    A conditional model gets the labels ``y`` and, with ``guidance_scale`` ≠ 1, classifier-free
    guidance (:func:`guided_eps`). The last state's ``x`` is the sample.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "ddpm" and num_steps not in (None, schedule.T):
        raise ValueError(f"method='ddpm' visits all {schedule.T} steps; for fewer use method='ddim' (got num_steps={num_steps})")
    if method == "dpm-solver++" and eta != 0:
        raise ValueError(f"method='dpm-solver++' is deterministic: eta must be 0, got {eta}")
    if guidance_scale != 1.0 and y is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs class labels y (guidance mixes conditional and unconditional predictions)")
    steps = timesteps(schedule.T, num_steps or schedule.T, spacing)
    x = x_T
    batch = x.shape[0]
    previous = None  # (t, x0_hat) of the step before, for the multistep solver
    for i, t_value in enumerate(steps):
        t = torch.full((batch,), t_value, device=x.device, dtype=torch.long)
        eps_hat = guided_eps(model, x, t, y, guidance_scale).to(x.dtype)
        t_prev = torch.full_like(t, steps[i + 1] if i + 1 < len(steps) else -1)
        if method == "ddpm":
            x, x0_hat = ddpm_step(x, t, eps_hat, schedule, variance=variance, clip_x0=clip_x0, generator=generator)
        elif method == "ddim":
            x, x0_hat = ddim_step(x, t, t_prev, eps_hat, schedule, eta=eta, clip_x0=clip_x0, generator=generator)
        else:
            x, x0_hat = dpm_solver_step(x, t, t_prev, eps_hat, schedule, previous=previous, clip_x0=clip_x0)
            previous = (t, x0_hat)
        yield SamplerState(t_value, x, x0_hat)


@torch.no_grad()
def sample(
    model: nn.Module,
    num_samples: int,
    schedule: NoiseSchedule,
    *,
    method: str = "ddpm",
    num_steps: int | None = None,
    eta: float = 0.0,
    spacing: str = "uniform",
    variance: str = "posterior",
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    image_shape: tuple[int, int, int] = (1, 32, 32),
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Draw x_T ~ N(0, I) and run :func:`iterate_sampler` to the end; returns (N, C, H, W) in [-1, 1].

    The noise comes from ``generator`` when given (on the schedule's device), so results repeat.
    ``batch_size`` bounds how many images go through the network at once (None: all of them).
    On a CPU a batch of about a hundred images is over twice as fast per image as a batch of
    a thousand, whose activations no longer fit the caches (``benchmarks/sample_speed.py``).
    All of x_T is drawn first, so the starting noise does not depend on ``batch_size``; the
    fresh noise of stochastic steps is drawn chunk after chunk, so those samples repeat for a
    given ``batch_size``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if y is not None and y.shape != (num_samples,):
        raise ValueError(f"y must hold one label per sample, shape ({num_samples},), got {tuple(y.shape)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images or None, got {batch_size}")
    x_T = torch.randn((num_samples, *image_shape), device=schedule.device, generator=generator)
    chunk = batch_size or num_samples
    samples = []
    for start in range(0, num_samples, chunk):
        state = None
        for state in iterate_sampler(
            model, x_T[start:start + chunk], schedule, method=method, num_steps=num_steps, eta=eta, spacing=spacing,
            variance=variance, y=None if y is None else y[start:start + chunk], guidance_scale=guidance_scale,
            clip_x0=clip_x0, generator=generator,
        ):
            pass
        samples.append(state.x.clamp(-1, 1))
    return torch.cat(samples)
