"""The inputs of a training step: what is drawn for each batch, and the checks of what the trainer is given.

Drawn: the timesteps t of a batch (:func:`draw_timesteps`, uniform or logit-normal over [0, T)) and,
for a conditional model, the labels hidden behind the null class (:func:`drop_labels`, the label
dropout of classifier-free guidance); a flow's training times are
:func:`~ddpm_helpers.flow.draw_flow_times`. Checked: that the process matches the schedule
(:func:`check_diffusion`), that a flow is trained as one (:func:`check_flow_training`), and the
points at which :func:`~ddpm_helpers.training.train` evaluates. The step and the loop that use them
are in :mod:`ddpm_helpers.training`. Taught in: 04_training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .checks import check_fraction, check_positive_int
from .flow import FlowConfig, check_velocity_net
from .schedules import DiffusionConfig, NoiseSchedule
from .train_state import TrainConfig


def draw_timesteps(n: int, T: int, config: TrainConfig, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """The n training timesteps of one batch, (n,) int64 in [0, T), drawn as ``config.timestep_sampling`` says.

    ``uniform``: every t equally often, as Ho et al. (2020). ``logit_normal``: t = ⌊T·sigmoid(ζ)⌋
    with ζ ~ N(μ_ζ, σ_ζ²), μ_ζ = ``timestep_logit_mean`` and σ_ζ = ``timestep_logit_std``, so
    P(t ≤ k) = Φ((logit((k + 1)/T) − μ_ζ)/σ_ζ): the middle of the chain, where the loss can still
    move, is drawn more often than its ends (Esser et al. 2024). The drawing changes which
    timesteps the gradient sees, not the weight each one has in the loss.
    """
    if config.timestep_sampling == "uniform":
        return torch.randint(0, T, (n,), device=device, generator=generator)
    z = torch.randn((n,), device=device, generator=generator, dtype=torch.float64)
    u = torch.sigmoid(config.timestep_logit_mean + config.timestep_logit_std * z)
    return (u * T).long().clamp(max=T - 1)


def drop_labels(y: torch.Tensor, num_classes: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by the null class ``num_classes`` with probability ``p``, independently.

    Training on such labels teaches one network both ε(x_t, t, y) and the unconditional
    ε(x_t, t, ∅), the two predictions that classifier-free guidance mixes (Ho & Salimans 2022).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    if y.ndim != 1 or y.dtype != torch.long:
        raise ValueError(f"y must be a 1-D int64 tensor of labels, got shape {tuple(y.shape)} and dtype {y.dtype}")
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p
    return torch.where(drop, torch.full_like(y, num_classes), y)


def check_diffusion(diffusion: DiffusionConfig | FlowConfig, schedule: NoiseSchedule | None) -> None:
    """``diffusion`` must be a :class:`DiffusionConfig` that describes ``schedule`` (same name and T),
    or a :class:`~ddpm_helpers.flow.FlowConfig` (flow matching), which has no noise schedule: then
    ``schedule`` must be None."""
    if isinstance(diffusion, FlowConfig):
        if schedule is not None:
            raise ValueError(f"a flow (diffusion=dh.FlowConfig(...)) has no noise schedule: pass schedule=None, got a {type(schedule).__name__}")
        return
    if not isinstance(diffusion, DiffusionConfig):
        raise ValueError(f"diffusion must be a dh.DiffusionConfig (e.g. cfg.diffusion), got {type(diffusion).__name__} (for flow matching: a dh.FlowConfig)")
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be the dh.NoiseSchedule that diffusion describes (dh.make_schedule(diffusion.schedule, diffusion.T)), got {type(schedule).__name__}")
    if (schedule.name, schedule.T) != (diffusion.schedule, diffusion.T):
        raise ValueError(f"schedule ({schedule.name!r}, T={schedule.T}) must be the one diffusion describes ({diffusion.schedule!r}, T={diffusion.T}); "
                         f"build it with dh.make_schedule(diffusion.schedule, diffusion.T)")


def check_flow_training(model: nn.Module, config: TrainConfig) -> None:
    """What training a flow needs: a :class:`~ddpm_helpers.flow.VelocityNet` and unweighted loss
    (min-SNR weighting is defined on the diffusion's timesteps; the flow loss weights every t alike)."""
    check_velocity_net(model, "state.model")
    if config.loss_weighting != "uniform":
        raise ValueError(f"train.loss_weighting={config.loss_weighting!r} weights the diffusion's timesteps; the flow objective takes 'uniform' "
                         f"(e.g. cfg.train.replace(loss_weighting='uniform'))")


def _check_points(values: Sequence, name: str, kind: type) -> list:
    """The distinct evaluation points of :func:`~ddpm_helpers.training.train`, sorted; ``values`` must be
    a list of positive ints (steps) or floats (seconds), as ``kind`` says."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of {kind.__name__}s, got {type(values).__name__}")
    for value in values:
        if kind is int:
            check_positive_int(value, f"each of {name}")
        else:
            check_fraction(value, f"each of {name}", high=float("inf"), include_low=False)
    return sorted(set(values))
