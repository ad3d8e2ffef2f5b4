"""Which timesteps a sampler visits: the spacings, and where the first step starts.

:func:`timesteps` turns (T, number of steps, spacing) into the decreasing indices a sampler visits.
Two spacings count indices (``uniform``, ``quadratic``); three follow the noise level, so they need
the schedule. ``max_noise`` starts every spacing below a noise level instead of at the last index:
on the cosine schedule the last index has σ = √((1 − ᾱ)/ᾱ) ≈ 2·10⁴, where an ε-network's
x̂0 = (x_t − σ_t·ε̂)/α_t multiplies its error by 1/α_t, so a few-step sampler gains from starting
lower (Karras et al. 2022 start at σ = 80). Taught in: 05_sampling.
"""

from __future__ import annotations

import torch

from .checks import check_choice, check_fraction, check_positive_int
from .schedules import NoiseSchedule

SPACINGS = ("uniform", "quadratic", "log_snr", "karras", "flow_time")
NOISE_LEVEL_SPACINGS = ("log_snr", "karras", "flow_time")
KARRAS_RHO = 7.0  # Karras et al. 2022, eq. 5


def timesteps(T: int, num_steps: int, spacing: str = "uniform", *, schedule: NoiseSchedule | None = None, max_noise: float | None = None) -> list[int]:
    """Decreasing 0-based timesteps to visit, from the first index down to 0.

    ``uniform``: evenly spaced in t; ``quadratic``: denser near t = 0 (Song et al. 2021). Three
    spacings follow the noise level instead of the index, so they need the ``schedule``:
    ``log_snr`` is evenly spaced in λ = log(ᾱ/(1 − ᾱ)); ``karras`` in σ^(1/ρ) with
    σ = √((1 − ᾱ)/ᾱ) and ρ = 7 (Karras et al. 2022, eq. 5), denser still at low noise; ``flow_time``
    in the flow's time τ = σ/(α + σ) = 1/(1 + e^(λ/2)), as a flow's Euler steps are (09_flow_matching). All take
    the index whose λ is nearest to each target, moved up to the next free index where two meet.

    The first index is T−1, or with ``max_noise`` (needs the ``schedule``) the last index whose σ is
    at most ``max_noise``; the sampler's N(0, I) start then stands for that state (whose data part,
    α·x0 with α = 1/√(1 + σ²) ≥ 1/√(1 + max_noise²), about 1/max_noise, it ignores). With ``num_steps`` = T every spacing gives T−1, ..., 0;
    with one step, [first]: a single jump from noise to the end.
    """
    check_positive_int(num_steps, "num_steps")
    check_choice(spacing, SPACINGS, "spacing")
    top = T - 1 if max_noise is None else start_index(T, max_noise, schedule)
    if num_steps > top + 1:
        below = "" if max_noise is None else f" (the indices with noise level ≤ max_noise={max_noise:g})"
        raise ValueError(f"num_steps must lie in [1, {top + 1}]{below}, got {num_steps}")
    if num_steps == 1:
        return [top]
    if spacing in NOISE_LEVEL_SPACINGS:
        return _noise_level_steps(T, top, num_steps, spacing, schedule)
    if spacing == "uniform":
        values = torch.linspace(0, top, num_steps, dtype=torch.float64).round().long()
    else:
        values = (torch.linspace(0, top ** 0.5, num_steps, dtype=torch.float64) ** 2).round().long()
    steps = sorted(set(values.tolist()), reverse=True)
    if len(steps) != num_steps:
        raise ValueError(f"{num_steps} {spacing} steps over T={T} collide; use fewer steps or uniform spacing")
    return steps


def _check_schedule(schedule: NoiseSchedule | None, T: int, what: str) -> None:
    if schedule is None or schedule.T != T:
        raise ValueError(f"{what} by noise level, so it needs the schedule (of T={T} steps), got {schedule!r}")


def start_index(T: int, max_noise: float, schedule: NoiseSchedule | None) -> int:
    """The last index of ``schedule`` whose noise level σ = √((1 − ᾱ)/ᾱ) = e^(−λ/2) is ≤ ``max_noise``."""
    check_fraction(max_noise, "max_noise", high=float("inf"), include_low=False)
    _check_schedule(schedule, T, "max_noise places the first step")
    sigma = schedule.log_snr.double().cpu().mul(-0.5).exp()  # increasing in t
    if float(sigma[0]) > max_noise:
        raise ValueError(f"max_noise must be at least the schedule's smallest noise level σ_0 = {float(sigma[0]):.3g}, got {max_noise:g}")
    return int((sigma <= max_noise).sum()) - 1


def _noise_level_steps(T: int, top: int, num_steps: int, spacing: str, schedule: NoiseSchedule | None) -> list[int]:
    _check_schedule(schedule, T, f"spacing {spacing!r} places steps")
    log_snr = schedule.log_snr.double().cpu()[: top + 1]  # decreasing in t
    low, high = float(log_snr[-1]), float(log_snr[0])
    if spacing == "log_snr":
        targets = torch.linspace(high, low, num_steps, dtype=torch.float64)
    elif spacing == "flow_time":  # τ evenly spaced, then λ = 2·log((1 − τ)/τ)
        taus = torch.linspace(*torch.tensor([high, low], dtype=torch.float64).div(2).exp().add(1).reciprocal().tolist(), num_steps, dtype=torch.float64)
        targets = ((1 - taus) / taus).log().mul(2.0)
    else:  # σ = e^{−λ/2}, evenly spaced in σ^(1/ρ) from σ_min to σ_max
        ends = torch.tensor([high, low], dtype=torch.float64).mul(-0.5).exp().pow(1 / KARRAS_RHO)
        targets = torch.linspace(float(ends[0]), float(ends[1]), num_steps, dtype=torch.float64).pow(KARRAS_RHO).log().mul(-2.0)
    indices = (log_snr[None, :] - targets[:, None]).abs().argmin(dim=1).tolist()  # increasing in t
    for i in range(1, num_steps):  # where two targets share an index, take the next one
        indices[i] = max(indices[i], indices[i - 1] + 1)
    indices[-1] = top  # the targets run from λ_0 to λ_top; the last may have been pushed past it
    for i in range(num_steps - 2, -1, -1):  # so push back down where that made room short
        indices[i] = min(indices[i], indices[i + 1] - 1)
    return indices[::-1]
