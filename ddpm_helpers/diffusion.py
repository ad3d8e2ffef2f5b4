"""The forward process q(x_t | x_0), its posterior q(x_{t-1} | x_t, x_0) and the training loss.

Everything here is a pure function of tensors and a :class:`~ddpm_helpers.schedules.NoiseSchedule`;
the model is passed in, never owned. ``t`` is the 0-based index (the paper's step t + 1).
Taught in: 01_forward_process (q_sample), 02_elbo (posterior, loss).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_batch, check_choice, check_fraction, check_same_shape, check_timesteps
from .schedules import PREDICTIONS, NoiseSchedule, per_sample

LOSS_TYPES = ("l2", "l1")
LOSS_WEIGHTINGS = ("uniform", "min_snr")


class DataSpace(NamedTuple):
    """What is being diffused: the shape of one item and, when known, the interval its values lie in.

    Decided once, where the data is: MNIST pixels are ``DataSpace((1, 32, 32), (-1.0, 1.0))``
    (:data:`MNIST_PIXELS`); an autoencoder's latents have its latent shape and no known range. The
    process code works on any shape; clipping x0_hat and clamping samples happen only where the
    range is known. Taught in: 06_latent.
    """

    shape: tuple[int, ...]
    value_range: tuple[float, float] | None = None


MNIST_PIXELS = DataSpace((1, 32, 32), (-1.0, 1.0))


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) by reparameterisation: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · eps.

    x0, eps: (B, ...) of any item shape; t: (B,) int64 in [0, T). Returns x_t with x0's shape.
    Taught in: 01_forward_process.
    """
    check_batch(x0, "x0")
    check_same_shape(x0, eps, "x0", "eps")
    check_timesteps(t, x0.shape[0], schedule.T)
    return (
        per_sample(schedule.sqrt_alpha_bars[t], x0.ndim) * x0
        + per_sample(schedule.sqrt_one_minus_alpha_bars[t], x0.ndim) * eps
    )


def predict_x0(x_t: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Invert q_sample for x0: x0_hat = (x_t − √(1 − ᾱ_t) · eps_hat) / √ᾱ_t. Shapes as in q_sample."""
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    return (
        x_t - per_sample(schedule.sqrt_one_minus_alpha_bars[t], x_t.ndim) * eps_hat
    ) / per_sample(schedule.sqrt_alpha_bars[t], x_t.ndim)


def predict_eps(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Invert q_sample for the noise: eps = (x_t − √ᾱ_t · x0) / √(1 − ᾱ_t). Shapes as in q_sample."""
    check_same_shape(x_t, x0, "x_t", "x0")
    check_timesteps(t, x_t.shape[0], schedule.T)
    return (
        x_t - per_sample(schedule.sqrt_alpha_bars[t], x_t.ndim) * x0
    ) / per_sample(schedule.sqrt_one_minus_alpha_bars[t], x_t.ndim)


def v_target(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The velocity v = √ᾱ_t · eps − √(1 − ᾱ_t) · x0 (Salimans & Ho 2022), the target of a
    v-predicting network. Shapes as in :func:`q_sample`. Taught in: 04_training."""
    check_same_shape(x0, eps, "x0", "eps")
    check_timesteps(t, x0.shape[0], schedule.T)
    return (
        per_sample(schedule.sqrt_alpha_bars[t], x0.ndim) * eps
        - per_sample(schedule.sqrt_one_minus_alpha_bars[t], x0.ndim) * x0
    )


def eps_from_v(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The noise a v-prediction implies: eps = √ᾱ_t · v + √(1 − ᾱ_t) · x_t (since ᾱ + (1 − ᾱ) = 1).

    Every sampler in this package takes eps; :class:`EpsFromV` applies this to a v-network."""
    check_same_shape(x_t, v, "x_t", "v")
    check_timesteps(t, x_t.shape[0], schedule.T)
    return (
        per_sample(schedule.sqrt_alpha_bars[t], x_t.ndim) * v
        + per_sample(schedule.sqrt_one_minus_alpha_bars[t], x_t.ndim) * x_t
    )


class EpsFromV(nn.Module):
    """A v-predicting network seen as an eps-network: ``EpsFromV(net, schedule)(x_t, t, y)`` is
    :func:`eps_from_v` of ``net(x_t, t, y)``, so the samplers, the ELBO and guidance use it unchanged."""

    def __init__(self, model: nn.Module, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.model = model
        self.schedule = schedule
        if hasattr(model, "num_classes"):
            self.num_classes = model.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return eps_from_v(x_t, t, self.model(x_t, t, y), self.schedule.to(x_t.device))


def loss_weights(t: torch.Tensor, schedule: NoiseSchedule, *, prediction: str = "eps", weighting: str = "uniform", min_snr_gamma: float = 5.0) -> torch.Tensor:
    """The weight of each timestep's loss, (B,) float32.

    "uniform": 1. "min_snr" (Hang et al. 2023): the eps-loss weighted by min(SNR_t, γ) / SNR_t, so
    nearly clean steps (large SNR) stop dominating the gradient; for a v-network, whose squared
    error is the eps error times (SNR_t + 1) / SNR_t, the same weighting is min(SNR_t, γ) / (SNR_t + 1).
    """
    check_choice(prediction, PREDICTIONS, "prediction")
    check_choice(weighting, LOSS_WEIGHTINGS, "weighting")
    if weighting == "uniform":
        return torch.ones(t.shape, device=t.device)
    check_fraction(min_snr_gamma, "min_snr_gamma", high=float("inf"), include_low=False)
    snr = schedule.snr()[t]
    weight = snr.clamp(max=min_snr_gamma) / (snr if prediction == "eps" else snr + 1)
    return weight.float()


class Posterior(NamedTuple):
    """Mean and variance of the Gaussian q(x_{t-1} | x_t, x_0)."""

    mean: torch.Tensor
    variance: torch.Tensor  # (B, 1, 1, 1), broadcasts against mean


def posterior_mean_var(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> Posterior:
    """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020, eqs. 6-7).

    μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t. At t = 0 the variance is 0: x_{-1} is x0 itself.
    x0, x_t: (B, C, H, W); t: (B,) int64. Taught in: 02_elbo.
    """
    check_same_shape(x0, x_t, "x0", "x_t")
    check_timesteps(t, x0.shape[0], schedule.T)
    mean = (
        per_sample(schedule.posterior_mean_coef_x0[t], x0.ndim) * x0
        + per_sample(schedule.posterior_mean_coef_xt[t], x0.ndim) * x_t
    )
    return Posterior(mean, per_sample(schedule.posterior_variance[t], x0.ndim))


def ddpm_loss(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    t: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    loss_type: str = "l2",
    prediction: str = "eps",
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """The simple loss L_simple = E_{t, eps} ‖eps − eps_θ(x_t, t)‖² (Ho et al. 2020, eq. 14).

    Draws t uniformly from [0, T) and eps ~ N(0, I) (from ``generator``; pass ``t`` and ``eps`` to
    fix them, e.g. for a validation loss that does not jitter), forms x_t with
    :func:`q_sample` and compares the model's prediction with eps by ``loss_type`` "l2" (squared
    error) or "l1" (absolute error). ``reduction="none"`` returns one loss per image, (B,).
    ``prediction="v"`` trains the network to output :func:`v_target` instead of eps; ``weighting``
    scales each image's loss by :func:`loss_weights` of its t.
    x0: (B, ...) data of any shape (images in [-1, 1], or latents); y: optional (B,) class labels.
    The data's range is checked where it enters training (:func:`ddpm_helpers.training.train`),
    not here. Taught in: 04_training.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    check_choice(prediction, PREDICTIONS, "prediction")
    check_choice(weighting, LOSS_WEIGHTINGS, "weighting")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    check_batch(x0, "x0")
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device, generator=generator)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_t = q_sample(x0, t, eps, schedule)
    target = eps if prediction == "eps" else v_target(x0, t, eps, schedule)
    error = model(x_t, t, y).float() - target
    per_element = error.square() if loss_type == "l2" else error.abs()
    per_image = per_element.flatten(1).mean(dim=1)
    if weighting != "uniform":
        per_image = per_image * loss_weights(t, schedule, prediction=prediction, weighting=weighting, min_snr_gamma=min_snr_gamma)
    return per_image.mean() if reduction == "mean" else per_image
