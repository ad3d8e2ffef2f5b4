"""The package's reverse steps against diffusers' schedulers on the same eps_hat and the same noise.

An independent implementation of the same equations (Ho et al. 2020, Algorithm 2; Song et al.
2021, eq. 12) must give the same x_{t-1}. Skipped where diffusers is not installed; CI installs it.
"""

import pytest
import torch

import ddpm_helpers as dh

diffusers = pytest.importorskip("diffusers")

T = 1000


def inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 8, 8, generator=g), 1.5 * torch.randn(3, 1, 8, 8, generator=g)


@pytest.mark.parametrize("variance,variance_type", [("posterior", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("t_value", [999, 500, 10, 0])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(variance, variance_type, t_value, clip):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                        variance_type=variance_type, clip_sample=clip, clip_sample_range=1.0)
    scheduler.set_timesteps(T)
    x_t, eps_hat = inputs(t_value)
    theirs = scheduler.step(eps_hat, t_value, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    t = torch.full((3,), t_value)
    ours = dh.ddpm_step(x_t, t, t - 1, eps_hat, dh.make_schedule("linear", T), variance=variance,
                        clip_x0=(-1.0, 1.0) if clip else None, generator=torch.Generator().manual_seed(1))
    # diffusers keeps ᾱ as a float32 cumprod (relative error up to ~T·u ≈ 6e-5 at t = 999, see
    # test_schedules_are_computed_in_float64_before_storing); ours is float64 rounded once. x0_hat moves
    # by that relative amount, but the posterior coefficient on it is ≤ 1.3e-4 where x0_hat is large
    # (t = 999, |x0_hat| ≲ 1000): ≤ 6e-5·1000·1.3e-4 ≈ 8e-6; elsewhere ~10 roundings of u·|x_t| ≤ u·4 and
    # the coefficients' relative 6e-5 on |x_prev| ≤ 4 (2.4e-4 ≤ rtol·|x_prev| + atol). rtol = atol = 1e-4.
    torch.testing.assert_close(ours.x_prev, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t_value", [999, 599, 99])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(eta, t_value, clip):
    num_steps = 10  # diffusers steps from t to t - T / num_steps; t_prev < 0 means ᾱ = 1 (set_alpha_to_one)
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                        clip_sample=clip, clip_sample_range=1.0, set_alpha_to_one=True)
    scheduler.set_timesteps(num_steps)
    x_t, eps_hat = inputs(t_value)
    theirs = scheduler.step(eps_hat, t_value, x_t, eta=eta, use_clipped_model_output=True, generator=torch.Generator().manual_seed(1)).prev_sample
    t = torch.full((3,), t_value)
    t_prev = (t - T // num_steps).clamp(min=-1)
    ours = dh.ddim_step(x_t, t, t_prev, eps_hat, dh.make_schedule("linear", T), eta=eta,
                        clip_x0=(-1.0, 1.0) if clip else None, generator=torch.Generator().manual_seed(1))
    # As for DDPM: unclipped at t = 999, x_prev ≈ √(ᾱ_899/ᾱ_999)·(x_t − √(1 − ᾱ)·eps_hat) + ..., and in the
    # ratio the first 900 factors of diffusers' float32 cumprod cancel, leaving ~100·u ≈ 6e-6 relative
    # on terms ≲ 8 (5e-5); the rest is relative 6e-5 on coefficients of terms ≤ |x_prev|. rtol = atol = 1e-4.
    torch.testing.assert_close(ours.x_prev, theirs, rtol=1e-4, atol=1e-4)
