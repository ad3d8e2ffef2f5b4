"""A 2-D playground: a mixture of Gaussians whose score and flow velocity are known exactly, and a
small MLP that learns them in seconds on a CPU.

For data x0 ~ Σ_k w_k N(μ_k, s² I) and a state x = a·x0 + σ·eps with eps ~ N(0, I), every
posterior mean has a closed form. Given the component k, (x0, x) is jointly Gaussian, so

    E[x0 | x, k] = μ_k + a s² / (a² s² + σ²) · (x − a μ_k),
    E[eps | x, k] = σ / (a² s² + σ²) · (x − a μ_k),

and the component's posterior weight r_k(x) ∝ w_k N(x; a μ_k, (a² s² + σ²) I). Averaging over r_k
gives the ideal predictions of every network of the book at once: eps* = E[eps | x], x0* = E[x0 | x],
the score ∇ log p(x) = −eps*/σ and, on the flow's line (a = 1 − t, σ = t), the velocity
v* = E[eps − x0 | x]. The diffusion's marginals use a = √ᾱ_t, σ = √(1 − ᾱ_t). Taught in: 09_flow_matching.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .checks import check_fraction, check_positive_int
from .layers import timestep_embedding


class Posterior2D(NamedTuple):
    """E[x0 | x] and E[eps | x] under a :class:`GaussianMixture`, each (B, 2) float64."""

    x0_mean: torch.Tensor
    eps_mean: torch.Tensor


class GaussianMixture:
    """Equally weighted isotropic Gaussians N(μ_k, std² I) in the plane: ``means`` (K, 2), ``std`` > 0."""

    def __init__(self, means: torch.Tensor, std: float) -> None:
        if not isinstance(means, torch.Tensor) or means.ndim != 2 or means.shape[1] != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be a (K, 2) tensor of component centres, got {tuple(means.shape) if isinstance(means, torch.Tensor) else type(means).__name__}")
        check_fraction(std, "std", high=float("inf"), include_low=False)
        self.means, self.std = means.double(), float(std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points, (n, 2) float32: a component uniformly at random, then its Gaussian."""
        check_positive_int(n, "n")
        k = torch.randint(0, self.means.shape[0], (n,), generator=generator)
        return (self.means[k] + self.std * torch.randn((n, 2), generator=generator, dtype=torch.float64)).float()

    def posterior(self, x: torch.Tensor, a: torch.Tensor | float, sigma: torch.Tensor | float) -> Posterior2D:
        """E[x0 | x] and E[eps | x] for x = a·x0 + sigma·eps (see the module); x: (B, 2); a, sigma:
        scalars or (B,), with a ≥ 0, sigma ≥ 0 and a² s² + sigma² > 0. Computed in float64."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must be a (B, 2) tensor of points, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        x = x.double()
        a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 1, 1)  # (B or 1, 1, 1) against (B, K, 2)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1)
        if bool((a < 0).any() or (sigma < 0).any()):
            raise ValueError("a and sigma must be ≥ 0 (x = a·x0 + sigma·eps)")
        variance = a.square() * self.std**2 + sigma.square()  # of x given the component, per coordinate
        offset = x[:, None, :] - a * self.means[None]  # (B, K, 2): x − a μ_k
        log_weight = -offset.square().sum(-1) / (2 * variance[..., 0])  # equal w_k and a shared variance: the normaliser cancels
        r = torch.softmax(log_weight, dim=1)[..., None]  # (B, K, 1) posterior weight of each component
        x0_mean = (r * (self.means[None] + a * self.std**2 / variance * offset)).sum(1)
        eps_mean = (r * (sigma / variance * offset)).sum(1)
        return Posterior2D(x0_mean, eps_mean)


def eight_gaussians(radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Eight Gaussians evenly spaced on a circle of ``radius`` (the standard 2-D test of generative flows)."""
    check_fraction(radius, "radius", high=float("inf"), include_low=False)
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], dim=1), std)


class ToyMLP(nn.Module):
    """A small network for 2-D points with the U-Net's signature ``(x_t, t, y) -> (B, 2)``: the
    sinusoidal embedding of t (an index or a scaled flow time), concatenated with x_t, through
    ``depth`` hidden layers of ``width`` with SiLU. Unconditional (``num_classes`` is None)."""

    num_classes = None

    def __init__(self, width: int = 128, depth: int = 3, time_dim: int = 32) -> None:
        super().__init__()
        for value, name in ((width, "width"), (depth, "depth"), (time_dim, "time_dim")):
            check_positive_int(value, name)
        if time_dim % 2:
            raise ValueError(f"time_dim must be even, got {time_dim}")
        self.time_dim = time_dim
        layers, size = [], 2 + time_dim
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.SiLU()]
            size = width
        self.body = nn.Sequential(*layers, nn.Linear(size, 2))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 2 or x_t.shape[1] != 2:
            raise ValueError(f"x_t must be a (B, 2) tensor of points, got {tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__}")
        if y is not None:
            raise ValueError("y was given but ToyMLP is unconditional")
        return self.body(torch.cat([x_t, timestep_embedding(t, self.time_dim)], dim=1))
