"""The SDE view of chapter 9, section 2, checked on the book's discrete schedules.

The chapter writes the schedule in continuous time, α(t) = √ᾱ(t), σ(t) = √(1 − ᾱ(t)), one unit of time
per index, with drift f = α̇/α and diffusion g² = d(σ²)/dt − 2fσ², and states:

1. for the variance-preserving schedule f = −β/2 and g² = β, with β(t) ≈ β_t;
2. DDPM's ancestral step is a discretisation of the reverse SDE dx = [f x − g² ∇log p] dt + g dW̄;
3. deterministic DDIM (η = 0) is one of the probability-flow ODE dx/dt = f x − ½ g² ∇log p;

with the score ∇log p = −ε/σ. A discretisation with unit steps agrees with the exact update up to terms
of second order in the step's β, so each check bounds the difference by a constant times β², the
constant read off the Taylor remainders written beside it; only steps with β_t ≤ 0.1 are used, where those
remainders are valid as stated.
"""

from __future__ import annotations

import pytest
import torch

import ddpm_helpers as dh

FLOAT32_SLACK = 1e-5  # float32 tables and ~10 float32 operations per step: a few ulps (1.2e-7) each, relative


def continuous_coefficients(alpha_bars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(β, f, g²) at t = 1 … T−1 from a table of ᾱ, by backward differences over one unit of time."""
    log_alpha_bar = alpha_bars.log()
    f = 0.5 * (log_alpha_bar[1:] - log_alpha_bar[:-1])                 # d/dt log α = ½ d/dt log ᾱ
    sigma_sq = 1 - alpha_bars
    g_sq = (sigma_sq[1:] - sigma_sq[:-1]) - 2 * f * sigma_sq[1:]       # d(σ²)/dt − 2fσ²
    beta = 1 - alpha_bars[1:] / alpha_bars[:-1]
    return beta, f, g_sq


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_drift_and_diffusion_of_the_variance_preserving_schedule(name):
    schedule = dh.make_schedule(name, 1000)
    alpha_bars = torch.cumprod(1 - schedule.betas.double(), 0)         # the table, in float64
    beta, f, g_sq = continuous_coefficients(alpha_bars)
    small = beta <= 0.1
    assert small.sum() > 900  # the cosine schedule's last steps have large β; the statement is about the rest
    beta, f, g_sq = beta[small], f[small], g_sq[small]
    # f = ½ log(1 − β) = −β/2 − β²/4 − …: |f + β/2| ≤ β²/(4(1 − β)) ≤ β²/2
    assert bool(((f + beta / 2).abs() <= beta**2 / 2).all())
    # g² = ᾱ_{t−1}β + (−log(1 − β))(1 − ᾱ_t) = β + β(ᾱ_{t−1} − ᾱ_t) + O(β²)(1 − ᾱ_t), and ᾱ_{t−1} − ᾱ_t = βᾱ_{t−1}:
    # |g² − β| ≤ β² + β²/(2(1 − β)) ≤ 2β²
    assert bool(((g_sq - beta).abs() <= 2 * beta**2).all())
    # and both are first-order statements: the differences are not zero, they are of second order
    assert float((g_sq - beta).abs().max()) > 0


def noisy_batch(schedule, t_index: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x_t = torch.randn(8, 1, 8, 8, generator=gen)
    eps_hat = torch.randn(8, 1, 8, 8, generator=gen)
    return x_t, eps_hat, torch.full((8,), t_index), torch.full((8,), t_index - 1)


@pytest.mark.parametrize("t_index", [200, 400, 600, 800, 999])
def test_the_ancestral_step_is_euler_maruyama_on_the_reverse_sde(t_index):
    schedule = dh.make_schedule("linear", 1000)
    x_t, eps_hat, t, t_prev = noisy_batch(schedule, t_index, seed=t_index)
    beta = float(schedule.betas[t_index])
    sigma = float(schedule.sqrt_one_minus_alpha_bars[t_index])
    step = dh.ddpm_step(x_t, t, t_prev, eps_hat, schedule, variance="beta", generator=torch.Generator().manual_seed(1))
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))  # the same noise, drawn the same way
    score = -eps_hat / sigma
    f, g_sq = -beta / 2, beta
    euler_maruyama = x_t - (f * x_t - g_sq * score) * 1.0 + g_sq**0.5 * z  # one unit step, time decreasing
    # DDPM: (x_t − β ε̂/σ)/√(1 − β) + √β z. With (1 − β)^(−1/2) = 1 + β/2 + (3/8)β²(1 + O(β)):
    # the x_t coefficients differ by ≤ β²/2 and the ε̂ ones by (β/σ)(β/2)(1 + O(β)) ≤ β²/σ (β ≤ 0.02 here).
    bound = beta**2 * (x_t.abs() / 2 + eps_hat.abs() / sigma) + FLOAT32_SLACK * (1 + x_t.abs() + eps_hat.abs() + z.abs())
    assert bool(((step.x_prev - euler_maruyama).abs() <= bound).all())
    assert float((step.x_prev - euler_maruyama).abs().max()) > 0  # a discretisation, not an identity


@pytest.mark.parametrize("t_index", [200, 400, 600, 800, 999])
def test_deterministic_ddim_is_euler_on_the_probability_flow_ode(t_index):
    schedule = dh.make_schedule("linear", 1000)
    x_t, eps_hat, t, t_prev = noisy_batch(schedule, t_index, seed=t_index + 7)
    beta = float(schedule.betas[t_index])
    sigma = float(schedule.sqrt_one_minus_alpha_bars[t_index])
    sigma_prev = float(1 - schedule.alpha_bars_prev[t_index]) ** 0.5
    step = dh.ddim_step(x_t, t, t_prev, eps_hat, schedule, eta=0.0)
    f, g_sq = -beta / 2, beta
    euler = x_t - (f * x_t - 0.5 * g_sq * (-eps_hat / sigma)) * 1.0      # one unit step of the ODE, time decreasing
    # DDIM: x_t/√(1 − β) + (σ_{t−1} − σ_t/√(1 − β)) ε̂. The x_t coefficient differs by ≤ β²/2 (as above). With
    # σ_{t−1} = √(σ_t² − h), h = βᾱ_t/(1 − β) ≤ 1.03β, the ε̂ coefficient is −β/(2σ_t) − ᾱ_tβ²/(2σ_t(1 − β)) − R − σ_t r,
    # where R ≤ h²/(8σ_{t−1}³) (Lagrange remainder of the square root) and r ≤ β²/2 (as above): in all
    # ≤ β²(0.51/σ_t + 0.14/σ_{t−1}³ + 0.5) ≤ β²(1/σ_{t−1}³ + 1), since σ_{t−1} < σ_t ≤ 1.
    bound = beta**2 * (x_t.abs() / 2 + eps_hat.abs() * (1 / sigma_prev**3 + 1)) + FLOAT32_SLACK * (1 + x_t.abs() + eps_hat.abs())
    assert bool(((step.x_prev - euler).abs() <= bound).all())
    assert float((step.x_prev - euler).abs().max()) > 0
