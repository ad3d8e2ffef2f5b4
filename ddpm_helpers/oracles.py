"""Two ε-"networks" whose answers are known in closed form, the yardsticks of the diagnostics.

For data x0 ~ N(mu, s²) and x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, the best prediction of ε from x_t is

    E[ε | x_t] = √(1 − ᾱ_t) (x_t − √ᾱ_t mu) / (ᾱ_t s² + 1 − ᾱ_t).

:class:`GaussianOracle` applies it to one-number data, so a correct sampler driven by it must return
N(mu, s²) exactly (the checklist's reference); :class:`PerPixelGaussian` applies it pixel by pixel
with the data's own means and variances, the baseline any trained network should beat.
Both are called like the package's networks, ``model(x_t, t)``, and have no parameters.
Taught in: 08_diagnostics.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_batch
from .schedules import NoiseSchedule, per_sample


class GaussianOracle(nn.Module):
    """The exact ε-prediction for one-number data x0 ~ N(mu, s²): with a = ᾱ_t,
    E[ε | x_t] = √(1 − a) (x_t − √a mu) / (a s² + 1 − a). A sampler driven by it must return N(mu, s²)."""

    def __init__(self, schedule: NoiseSchedule, mu: float = 0.3, s: float = 0.2) -> None:
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = per_sample(self.schedule.alpha_bars.to(x_t.device)[t], x_t.ndim)
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


class PerPixelGaussian(nn.Module):
    """The best ε-prediction if every pixel were an independent Gaussian with the data's per-pixel mean
    and variance (the oracle above, pixel by pixel): a "network" with no learning beyond two numbers
    per pixel. Its expected loss at t is known in closed form (:meth:`expected_loss`); a trained
    network that does not beat it at some t has learned nothing there about the shapes of digits."""

    def __init__(self, images: torch.Tensor, schedule: NoiseSchedule) -> None:
        super().__init__()
        check_batch(images, "images")
        self.schedule = schedule
        self.register_buffer("mean", images.float().mean(0))
        self.register_buffer("var", images.float().var(0, unbiased=False))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = per_sample(self.schedule.alpha_bars.to(x_t.device)[t], x_t.ndim)
        return (1 - a).sqrt() * (x_t - a.sqrt() * self.mean) / (a * self.var + 1 - a)

    def expected_loss(self, t: torch.Tensor) -> torch.Tensor:
        """E‖ε − ε_pixel‖² / D at each t: the mean over pixels of ᾱ v / (ᾱ v + 1 − ᾱ), v the pixel's variance; (len(t),)."""
        a = per_sample(self.schedule.alpha_bars.to(self.var.device)[t], self.var.ndim + 1)
        return (a * self.var / (a * self.var + 1 - a)).flatten(1).mean(1)
