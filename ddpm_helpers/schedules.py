"""Noise schedules: the β_t of the forward process and every table derived from them.

Convention (see the notation page): the code's timestep index ``t`` runs over ``0 .. T-1`` and
index ``t`` is the paper's step ``t + 1``. So ``betas[0]`` is the paper's β_1 and
``alpha_bars[t] = prod_{s <= t} (1 - betas[s])`` is the paper's ᾱ_{t+1}.

Schedules are computed in float64 and stored in float32. Taught in: 01_forward_process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .checks import ConfigMixin, check_choice, check_positive_int

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")  # what the network outputs: the noise, or v = √ᾱ·eps − √(1 − ᾱ)·x0


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020). Returns (T,) float64."""
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
    # Ho et al. used beta_end = 0.02 for T = 1000; rescale so other T keep the same total noise.
    scale = 1000 / T
    if scale * beta_end >= 1:
        raise ValueError(f"T={T} is too small for beta_end={beta_end}: rescaled beta_end would reach 1")
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(s: torch.Tensor, offset: float = 0.008) -> torch.Tensor:
    """ᾱ = ψ(t) / ψ(0) with the cosine curve ψ(t) = cos²(π/2 · (t/T + ξ) / (1 + ξ)), evaluated at ``s`` = t/T
    in [0, 1]; ξ = ``offset`` is the small offset. Nichol and Dhariwal (2021) write f for ψ and s for ξ."""
    f = torch.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    f0 = math.cos(offset / (1 + offset) * math.pi / 2) ** 2
    return f / f0


def cosine_betas(T: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t = 1 − ψ(t) / ψ(t − 1), clipped at ``max_beta`` (Nichol & Dhariwal 2021), with the cosine curve ψ and
    the offset ξ = ``offset`` of :func:`cosine_alpha_bar` (their f and s). (T,) float64."""
    if T < 2:
        raise ValueError(f"T must be at least 2, got {T}")
    s = torch.arange(T + 1, dtype=torch.float64) / T
    alpha_bar = cosine_alpha_bar(s, offset)
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """The tables of one schedule, each a (T,) float32 tensor indexed by the 0-based ``t``.

    ================================  =====================================
    name                              symbol (paper step t+1)
    ================================  =====================================
    ``betas``                         β_t
    ``alphas``                        α_t = 1 − β_t
    ``alpha_bars``                    ᾱ_t = ∏_{s≤t} α_s
    ``alpha_bars_prev``               ᾱ_{t−1}, with ᾱ_0 = 1
    ``sqrt_alpha_bars``               √ᾱ_t
    ``sqrt_one_minus_alpha_bars``     √(1 − ᾱ_t)
    ``posterior_variance``            β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t
    ``posterior_mean_coef_x0``        √ᾱ_{t−1} β_t / (1 − ᾱ_t)
    ``posterior_mean_coef_xt``        √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    ``log_snr``                       log(ᾱ_t / (1 − ᾱ_t))
    ================================  =====================================
    """

    name: str
    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor
    alpha_bars_prev: torch.Tensor
    sqrt_alpha_bars: torch.Tensor
    sqrt_one_minus_alpha_bars: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_mean_coef_x0: torch.Tensor
    posterior_mean_coef_xt: torch.Tensor
    log_snr: torch.Tensor

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.betas.shape[0]

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio SNR_t = ᾱ_t / (1 − ᾱ_t), (T,) float32.

        Computed from the float64 ``log_snr`` table: in float32, 1 − ᾱ_t cancels near t = 0.
        """
        return self.log_snr.exp()

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """A copy with every table on ``device``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return NoiseSchedule(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        )


def schedule_from_betas(betas: torch.Tensor, name: str = "custom") -> NoiseSchedule:
    """Derive every table from float64 ``betas`` of shape (T,) and store them as float32."""
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must have shape (T,) with T >= 2, got {tuple(betas.shape)}")
    betas = betas.to(torch.float64)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError("betas must lie strictly between 0 and 1")
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, dim=0)
    alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    tables = {
        "betas": betas,
        "alphas": alphas,
        "alpha_bars": alpha_bars,
        "alpha_bars_prev": alpha_bars_prev,
        "sqrt_alpha_bars": alpha_bars.sqrt(),
        "sqrt_one_minus_alpha_bars": (1 - alpha_bars).sqrt(),
        "posterior_variance": (1 - alpha_bars_prev) / (1 - alpha_bars) * betas,
        "posterior_mean_coef_x0": alpha_bars_prev.sqrt() * betas / (1 - alpha_bars),
        "posterior_mean_coef_xt": alphas.sqrt() * (1 - alpha_bars_prev) / (1 - alpha_bars),
        "log_snr": alpha_bars.log() - torch.log1p(-alpha_bars),
    }
    return NoiseSchedule(name=name, **{k: v.to(torch.float32) for k, v in tables.items()})


def per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """(B,) values → (B, 1, ..., 1), so that they broadcast against a tensor with ``ndim`` dims.

    A schedule table read at each sample's timestep is ``per_sample(schedule.betas[t], x.ndim)``.
    """
    return values.reshape(values.shape[0], *([1] * (ndim - 1)))


def make_schedule(name: str = "linear", T: int = 1000) -> NoiseSchedule:
    """The named schedule (``"linear"`` or ``"cosine"``) with ``T`` steps."""
    if name == "linear":
        return schedule_from_betas(linear_betas(T), name)
    if name == "cosine":
        return schedule_from_betas(cosine_betas(T), name)
    raise ValueError(f"schedule name must be one of {SCHEDULES}, got {name!r}")


@dataclass(frozen=True)
class DiffusionConfig(ConfigMixin):
    """The diffusion a network belongs to: ``T`` steps of the named β schedule, and what the network
    outputs (``prediction``: "eps", the noise, or "v" = √ᾱ_t·eps − √(1 − ᾱ_t)·x0). It is saved with
    the weights and checkpoints, so a model says how its output is to be read. Build the tables with
    ``make_schedule(diffusion.schedule, diffusion.T)``. Taught in: 01_forward_process (T, schedule),
    04_training (prediction)."""

    T: int = 1000
    schedule: str = "linear"
    prediction: str = "eps"

    def __post_init__(self) -> None:
        check_positive_int(self.T, "diffusion.T", minimum=2)
        check_choice(self.schedule, SCHEDULES, "diffusion.schedule")
        check_choice(self.prediction, PREDICTIONS, "diffusion.prediction")
