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

from .checks import check_choice, check_class_labels, check_finite, check_fraction, check_labels, check_same_shape, check_timesteps, validated
from .schedules import PREDICTIONS, NoiseSchedule, per_sample
from .spaces import MNIST_PIXELS, DataSpace, check_x0  # noqa: F401  (MNIST_PIXELS, DataSpace: also read from here)

LOSS_TYPES = ("l2", "l1")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
_NO_ATTRIBUTE = object()


def check_model_labels(model: nn.Module, y: torch.Tensor, batch_size: int, *, null_allowed: bool = False, guided: bool = False) -> torch.Tensor:
    """``y`` checked as (B,) class labels for ``model`` and returned as int64 (any integer dtype is accepted).

    A model with ``num_classes`` is conditional: labels lie in [0, num_classes) (with
    ``null_allowed``, also the null class num_classes). ``num_classes = None`` (an unconditional
    ``dh.UNet``) takes no labels. A model without the attribute gets the labels unchecked in range,
    but cannot be guided (``guided``): guidance needs its null class."""
    num_classes = getattr(model, "num_classes", _NO_ATTRIBUTE)
    if num_classes is _NO_ATTRIBUTE:
        if guided:
            raise ValueError(f"guidance needs the model's null class, but {type(model).__name__} has no num_classes; give the model a num_classes attribute or use guidance_scale=1")
        check_labels(y, batch_size, None)  # shape and dtype; the range is the model's own
        return y.long()
    return check_class_labels(y, batch_size, num_classes, null_allowed=null_allowed)


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule, *, space: DataSpace | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) by reparameterisation: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · eps.

    x0, eps: (B, C, H, W) images in [-1, 1], or (B, *space.shape) data of ``space`` (e.g. latents:
    ``space=dh.DataSpace(latent_shape)``); t: (B,) int64 in [0, T). Returns x_t with x0's shape.
    The inputs are checked (:func:`check_x0`, eps finite, t in range). Taught in: 01_forward_process.
    """
    check_x0(x0, space)
    check_same_shape(x0, eps, "x0", "eps")
    check_finite(eps, "eps")
    check_timesteps(t, x0.shape[0], schedule.T)
    return _q_sample(x0, t, eps, schedule)


def _q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """:func:`q_sample` without checks, for loops that checked their inputs once."""
    return (
        per_sample(schedule.sqrt_alpha_bars[t], x0.ndim) * x0
        + per_sample(schedule.sqrt_one_minus_alpha_bars[t], x0.ndim) * eps
    )


def predict_x0(x_t: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Invert q_sample for x0: x0_hat = (x_t − √(1 − ᾱ_t) · eps_hat) / √ᾱ_t. Shapes as in q_sample."""
    check_same_shape(x_t, eps_hat, "x_t", "eps_hat")
    check_timesteps(t, x_t.shape[0], schedule.T)
    return _predict_x0(x_t, t, eps_hat, schedule)


def _predict_x0(x_t: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    return (
        x_t - per_sample(schedule.sqrt_one_minus_alpha_bars[t], x_t.ndim) * eps_hat
    ) / per_sample(schedule.sqrt_alpha_bars[t], x_t.ndim)


def predict_eps(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Invert q_sample for the noise: eps = (x_t − √ᾱ_t · x0) / √(1 − ᾱ_t). Shapes as in q_sample."""
    check_same_shape(x_t, x0, "x_t", "x0")
    check_timesteps(t, x_t.shape[0], schedule.T)
    return _predict_eps(x_t, t, x0, schedule)


def _predict_eps(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    return (
        x_t - per_sample(schedule.sqrt_alpha_bars[t], x_t.ndim) * x0
    ) / per_sample(schedule.sqrt_one_minus_alpha_bars[t], x_t.ndim)


def v_target(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The velocity v = √ᾱ_t · eps − √(1 − ᾱ_t) · x0 (Salimans & Ho 2022), the target of a
    v-predicting network. Shapes as in :func:`q_sample`. Taught in: 04_training."""
    check_same_shape(x0, eps, "x0", "eps")
    check_timesteps(t, x0.shape[0], schedule.T)
    return _v_target(x0, t, eps, schedule)


def _v_target(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
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
    _check_loss_options("l2", prediction, weighting, min_snr_gamma, "mean")
    return _loss_weights(t, schedule, prediction, weighting, min_snr_gamma)


def _check_loss_options(loss_type: str, prediction: str, weighting: str, min_snr_gamma: float, reduction: str) -> None:
    check_choice(loss_type, LOSS_TYPES, "loss_type")
    check_choice(prediction, PREDICTIONS, "prediction")
    check_choice(weighting, LOSS_WEIGHTINGS, "weighting")
    if weighting != "uniform":
        check_fraction(min_snr_gamma, "min_snr_gamma", high=float("inf"), include_low=False)
    check_choice(reduction, ("mean", "none"), "reduction")


def _loss_weights(t: torch.Tensor, schedule: NoiseSchedule, prediction: str, weighting: str, min_snr_gamma: float) -> torch.Tensor:
    if weighting == "uniform":
        return torch.ones(t.shape, device=t.device)
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
    return _posterior_mean_var(x0, x_t, t, schedule)


def _posterior_mean_var(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> Posterior:
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
    space: DataSpace | None = None,
) -> torch.Tensor:
    """The simple loss L_simple = E_{t, eps} ‖eps − eps_θ(x_t, t)‖² (Ho et al. 2020, eq. 14).

    Draws t uniformly from [0, T) and eps ~ N(0, I) (from ``generator``; pass ``t`` and ``eps`` to
    fix them, e.g. for a validation loss that does not jitter), forms x_t with
    :func:`q_sample` and compares the model's prediction with eps by ``loss_type`` "l2" (squared
    error) or "l1" (absolute error). ``reduction="none"`` returns one loss per image, (B,).
    ``prediction="v"`` trains the network to output :func:`v_target` instead of eps; ``weighting``
    scales each image's loss by :func:`loss_weights` of its t.
    x0: (B, C, H, W) images in [-1, 1], or (B, *space.shape) data of ``space`` (e.g. latents:
    ``space=dh.DataSpace(latent_shape)``), checked by :func:`check_x0`; t, eps: as in
    :func:`q_sample`; y: (B,) class labels of a conditional model, in [0, num_classes] (num_classes
    is the null class), any integer dtype. Every input is checked here, once; the trainer, which has
    checked its data once, calls the same loss without checks. Taught in: 04_training.
    """
    _check_loss_options(loss_type, prediction, weighting, min_snr_gamma, reduction)
    check_x0(x0, space)
    if t is None:
        t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device, generator=generator)
    else:
        check_timesteps(t, x0.shape[0], schedule.T)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    else:
        check_same_shape(x0, eps, "x0", "eps")
        check_finite(eps, "eps")
    if y is not None:
        y = check_model_labels(model, y, x0.shape[0], null_allowed=True)
    options = {"loss_type": loss_type, "prediction": prediction, "weighting": weighting, "min_snr_gamma": min_snr_gamma, "reduction": reduction}
    return _ddpm_loss(model, x0, schedule, t=t, eps=eps, y=y, **options)


def _ddpm_loss(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    t: torch.Tensor,
    eps: torch.Tensor,
    y: torch.Tensor | None = None,
    loss_type: str = "l2",
    prediction: str = "eps",
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """:func:`ddpm_loss` with t and eps given and no checks: the loss of a loop that has checked its
    data, labels and options once (:func:`ddpm_helpers.training.train`). The model runs inside
    :func:`~ddpm_helpers.checks.validated`, so its own value checks read nothing from the device."""
    x_t = _q_sample(x0, t, eps, schedule)
    target = eps if prediction == "eps" else _v_target(x0, t, eps, schedule)
    with validated():
        error = model(x_t, t, y).float() - target
    per_element = error.square() if loss_type == "l2" else error.abs()
    per_image = per_element.flatten(1).mean(dim=1)
    if weighting != "uniform":
        per_image = per_image * _loss_weights(t, schedule, prediction, weighting, min_snr_gamma)
    return per_image.mean() if reduction == "mean" else per_image
