"""The variational bound of a DDPM term by term, and the negative log-likelihood in bits per dimension.

−log p_θ(x0) ≤ L = L_T + Σ_{t=1}^{T−1} L_t + L_0 (Ho et al. 2020, eq. 5). In code indices, with x_t
the state that q_sample returns at index t and x_{t−1} the state one step less noisy:

* L_T = KL(q(x_T | x0) ‖ N(0, I)), the prior term, with no network: :func:`prior_kl`;
* L_t = KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t)) for t ≥ 1: :func:`vlb_terms`;
* L_0 = −log p_θ(x0 | x_t) at t = 0, a discretised Gaussian decoder: :func:`vlb_terms` at t = 0.

Code index t is the paper's step t + 1, so the term at code index t is exactly the paper's L_t
and the sum runs over every index 0 … T−1. Taught in: 02_elbo.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.special import log_ndtr

from .checks import check_images, check_positive_int, check_signed_range, check_timesteps, read_back
from .diffusion import MNIST_PIXELS, posterior_mean_var, predict_x0, q_sample
from .schedules import NoiseSchedule, per_sample
from .steps import VARIANCES

BIN_HALF_WIDTH = 1 / 255  # 256 pixel levels in [-1, 1] lie 2/255 apart


class NLL(NamedTuple):
    """The bound in bits per dimension: per image (B,), its mean and standard error, and the mean of each part."""

    bits_per_dim: torch.Tensor
    mean: float
    standard_error: float
    prior: float  # L_T
    kl: float  # Σ_{t≥1} L_t
    decoder: float  # L_0


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) per element, in nats.

    KL = ½ [logvar2 − logvar1 + e^(logvar1 − logvar2) − 1 + (mean1 − mean2)² e^(−logvar2)],
    computed with expm1 so that nearly equal variances keep their digits. The four arguments
    broadcast against each other (tensors or numbers); the result has the broadcast shape.
    Taught in: 02_elbo.
    """
    names = ("mean1", "logvar1", "mean2", "logvar2")
    values = [torch.as_tensor(v) for v in (mean1, logvar1, mean2, logvar2)]
    try:
        torch.broadcast_shapes(*(v.shape for v in values))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(v.shape)}" for n, v in zip(names, values))
        raise ValueError(f"{', '.join(names)} must broadcast against each other, got shapes {shapes}") from None
    mean1, logvar1, mean2, logvar2 = values
    log_ratio = logvar1 - logvar2
    return 0.5 * (torch.expm1(log_ratio) - log_ratio + (mean1 - mean2).square() * torch.exp(-logvar2))


def prior_kl(x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """L_T = KL(q(x_T | x0) ‖ N(0, I)) in nats, summed over pixels.

    q(x_T | x0) = N(√ᾱ_T x0, (1 − ᾱ_T) I), so per pixel L_T = ½ [ᾱ_T x0² − ᾱ_T − log(1 − ᾱ_T)].
    No network is involved: the forward process alone decides how close to 0 it is.
    x0: (B, C, H, W) in [-1, 1]. Returns (B,). Taught in: 02_elbo.
    """
    check_images(x0, "x0")
    check_signed_range(x0, "x0", MNIST_PIXELS.value_range)
    alpha_bar = schedule.alpha_bars[-1].to(x0.dtype)
    kl = normal_kl(alpha_bar.sqrt() * x0, torch.log1p(-alpha_bar), 0.0, 0.0)
    return kl.flatten(1).sum(dim=1)


def discretized_gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log of the mass that N(mean, e^(2·log_scale)) puts on the pixel bin holding x0, per element.

    Pixels take 256 levels in [-1, 1], 2/255 apart, so the bin of x0 is [x0 − 1/255, x0 + 1/255],
    except that the bin of −1 extends down to −∞ and the bin of +1 up to +∞ (the masses of all 256
    bins then sum to 1). With the edges standardised, a = (lower − mean)/σ and b = (upper − mean)/σ,
    the mass is Φ(b) − Φ(a) (Ho et al. 2020, eq. 13). Far in the right tail both Φ are ≈ 1 and the
    difference loses every digit, so such bins are reflected, Φ(b) − Φ(a) = Φ(−a) − Φ(−b), and the
    logarithm is taken as log Φ(b) + log(1 − e^(log Φ(a) − log Φ(b))) with log Φ from log_ndtr.
    x0 in [-1, 1] on the 256-level grid; mean, log_scale broadcast against x0. Taught in: 02_elbo.
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating torch.Tensor, got {getattr(x0, 'dtype', type(x0).__name__)}")
    low, high = read_back(torch.stack([x0.min(), x0.max()])) if x0.numel() else (-1.0, 1.0)  # one device read, counted
    if low < -1 - 1e-4 or high > 1 + 1e-4:
        raise ValueError(f"x0 must lie in [-1, 1], got values in [{float(x0.min()):.3g}, {float(x0.max()):.3g}]")
    try:
        torch.broadcast_shapes(x0.shape, torch.as_tensor(mean).shape, torch.as_tensor(log_scale).shape)
    except RuntimeError:
        raise ValueError(f"mean and log_scale must broadcast against x0 {tuple(x0.shape)}, got "
                         f"{tuple(torch.as_tensor(mean).shape)} and {tuple(torch.as_tensor(log_scale).shape)}") from None
    inv_scale = torch.exp(-log_scale)
    a = (x0 - BIN_HALF_WIDTH - mean) * inv_scale
    b = (x0 + BIN_HALF_WIDTH - mean) * inv_scale
    a = torch.where(x0 < -1 + BIN_HALF_WIDTH, torch.full_like(a, -math.inf), a)  # the bin of -1 is open below
    b = torch.where(x0 > 1 - BIN_HALF_WIDTH, torch.full_like(b, math.inf), b)  # the bin of +1 is open above
    right_tail = a > 0
    a, b = torch.where(right_tail, -b, a), torch.where(right_tail, -a, b)
    log_b = log_ndtr(b)
    return log_b + torch.log1p(-torch.exp(log_ndtr(a) - log_b))


def reverse_variance(schedule: NoiseSchedule, variance: str = "posterior") -> torch.Tensor:
    """σ_t², the fixed variance of p_θ(x_{t−1} | x_t): β̃_t ("posterior") or β_t ("beta"). (T,) float32.

    Index 0 is the decoder's variance σ_0², the same for both choices: β̃ at index 1. β̃ at index 0 is 0
    (x0 given x_t=0 is known exactly under q) and would make the decoder a spike; Ho et al.'s and
    Nichol and Dhariwal's code take β̃ at index 1 there for both choices. Taught in: 02_elbo.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    table = (schedule.posterior_variance if variance == "posterior" else schedule.betas).clone()
    table[0] = schedule.posterior_variance[1]
    return table


def vlb_weights(schedule: NoiseSchedule, variance: str = "posterior") -> torch.Tensor:
    """λ_t = β_t² / (2 σ_t² α_t (1 − ᾱ_t)), the weight with which L_t = λ_t ‖ε − ε_θ‖² + const. (T,).

    For t ≥ 1 the constant is the KL between the variances (0 for "posterior"); L_simple sets every
    λ_t to 1. At t = 0 the same formula is the weight of a continuous Gaussian decoder,
    β_0 / (2 σ_0² α_0), which the discretised decoder approximates. Taught in: 02_elbo.
    """
    sigma_sq = reverse_variance(schedule, variance)
    one_minus_alpha_bars = schedule.sqrt_one_minus_alpha_bars**2  # from float64: 1 − ᾱ_t in float32 cancels at small t
    return schedule.betas**2 / (2 * sigma_sq * schedule.alphas * one_minus_alpha_bars)


def vlb_terms(
    model: nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    eps: torch.Tensor | None = None,
    variance: str = "posterior",
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The term L_t of the bound for each image at its own code index t, in nats summed over pixels.

    1. x_t = q_sample(x0, t, eps), with eps ~ N(0, I) drawn from ``generator`` unless given.
    2. eps_hat = model(x_t, t, y); x0_hat = predict_x0(x_t, t, eps_hat), *not* clipped, so that
       μ_θ = μ̃_t(x0_hat, x_t) = (x_t − β_t/√(1 − ᾱ_t) · eps_hat)/√α_t (eq. 11).
    3. t ≥ 1: L_t = KL(N(μ̃_t(x0, x_t), β̃_t) ‖ N(μ_θ, σ_t²)), σ_t² from :func:`reverse_variance`.
       t = 0: L_0 = −log p_θ(x0 | x_t) with the discretised Gaussian of mean μ_θ = x0_hat and
       variance σ_0² (:func:`discretized_gaussian_log_likelihood`).

    x0: (B, C, H, W) in [-1, 1] on the 256-level grid; t: (B,) int64 in [0, T); y: optional (B,).
    Returns (B,). Gradients flow to the model (call under torch.no_grad() to evaluate only).
    Taught in: 02_elbo.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    check_images(x0, "x0")
    check_signed_range(x0, "x0", MNIST_PIXELS.value_range)
    check_timesteps(t, x0.shape[0], schedule.T)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_t = q_sample(x0, t, eps, schedule)
    eps_hat = model(x_t, t, y).to(x0.dtype)
    x0_hat = predict_x0(x_t, t, eps_hat, schedule)
    true_mean, _ = posterior_mean_var(x0, x_t, t, schedule)
    model_mean, _ = posterior_mean_var(x0_hat, x_t, t, schedule)
    # log β̃_t; index 0 holds β̃ at index 1 instead of log 0, so the (unused) t = 0 KL stays finite.
    true_logvar = per_sample(reverse_variance(schedule, "posterior").log()[t], x0.ndim)
    model_logvar = per_sample(reverse_variance(schedule, variance).log()[t], x0.ndim)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).sum(dim=1)
    decoder = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar).flatten(1).sum(dim=1)
    return torch.where(t == 0, decoder, kl)


def _terms_for_pairs(model, x0, image, t, schedule, variance, y, generator, batch_size) -> torch.Tensor:
    """vlb_terms for the pairs (x0[image[i]], t[i]), evaluated batch_size pairs at a time; (P,)."""
    parts = []
    with torch.no_grad():
        for start in range(0, t.shape[0], batch_size):
            rows = image[start : start + batch_size]
            parts.append(vlb_terms(model, x0[rows], t[start : start + batch_size], schedule, variance=variance,
                                   y=None if y is None else y[rows], generator=generator))
    return torch.cat(parts) if parts else x0.new_zeros(0)


def vlb_table(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    timesteps: torch.Tensor | None = None,
    variance: str = "posterior",
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """L_t for every image and every code index in ``timesteps`` (default: all T), in nats; (B, len(timesteps)).

    Column j holds :func:`vlb_terms` at t = timesteps[j], each with its own draw of x_t. Images and
    timesteps are packed into network batches of ``batch_size``; no gradients. Taught in: 02_elbo.
    """
    check_positive_int(batch_size, "batch_size")
    check_images(x0, "x0")
    check_signed_range(x0, "x0", MNIST_PIXELS.value_range)
    num_images = x0.shape[0]
    if timesteps is None:
        timesteps = torch.arange(schedule.T, device=x0.device)
    if not isinstance(timesteps, torch.Tensor) or timesteps.ndim != 1:
        raise ValueError(f"timesteps must be a 1-D int64 tensor, got {getattr(timesteps, 'shape', type(timesteps).__name__)}")
    check_timesteps(timesteps, timesteps.shape[0], schedule.T, "timesteps")
    timesteps = timesteps.to(x0.device)
    image = torch.arange(num_images, device=x0.device).repeat(timesteps.shape[0])
    t = timesteps.repeat_interleave(num_images)
    terms = _terms_for_pairs(model, x0, image, t, schedule, variance, y, generator, batch_size)
    return terms.reshape(timesteps.shape[0], num_images).T


def nll_bits_per_dim(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    num_timesteps: int | None = None,
    variance: str = "posterior",
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> NLL:
    """The bound on −log₂ p_θ(x0) per pixel: bits/dim = (L_T + Σ_{t≥1} L_t + L_0) / (D ln 2).

    D = C·H·W counts every pixel, for MNIST padded to 32×32 D = 1024 *including the padding*, which
    is always −1 and costs the model almost nothing (so bits/dim of 28×28 pixels would be higher).

    * ``num_timesteps=None``: every term, T network calls per image.
    * ``num_timesteps=k``: L_0 exactly (one call) and an unbiased estimate of the KL sum from k code
      indices drawn uniformly from [1, T) with replacement: Σ_{t≥1} L_t ≈ (T − 1)/k · Σ_j L_{t_j}.

    Each term uses one draw of x_t, as in the papers, so both are unbiased estimates of the bound.
    standard_error is the standard deviation of the per-image bits/dim over √B (NaN for B = 1): it
    covers the spread of the images and of the random x_t and t together. The model should be in
    eval mode. x0: (B, C, H, W) in [-1, 1] on the 256-level grid. Taught in: 02_elbo.
    """
    check_images(x0, "x0")
    check_signed_range(x0, "x0", MNIST_PIXELS.value_range)
    check_positive_int(batch_size, "batch_size")
    if num_timesteps is not None and (isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1):
        raise ValueError(f"num_timesteps must be None (all T terms) or a positive int, got {num_timesteps!r}")
    num_images, T = x0.shape[0], schedule.T
    prior = prior_kl(x0, schedule)
    if num_timesteps is None:
        terms = vlb_table(model, x0, schedule, variance=variance, y=y, generator=generator, batch_size=batch_size)
        decoder, kl = terms[:, 0], terms[:, 1:].sum(dim=1)
    else:
        images = torch.arange(num_images, device=x0.device)
        decoder = _terms_for_pairs(model, x0, images, torch.zeros_like(images), schedule, variance, y, generator, batch_size)
        t = torch.randint(1, T, (num_images * num_timesteps,), device=x0.device, generator=generator)
        drawn = _terms_for_pairs(model, x0, images.repeat_interleave(num_timesteps), t, schedule, variance, y, generator, batch_size)
        kl = drawn.reshape(num_images, num_timesteps).mean(dim=1) * (T - 1)
    to_bits = 1 / (x0[0].numel() * math.log(2))
    bits = (prior + kl + decoder) * to_bits
    standard_error = float(bits.std() / math.sqrt(num_images)) if num_images > 1 else math.nan
    return NLL(bits, float(bits.mean()), standard_error, float(prior.mean() * to_bits),
               float(kl.mean() * to_bits), float(decoder.mean() * to_bits))
