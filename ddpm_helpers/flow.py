"""Flow matching: the linear path from data to noise, its velocity, and the objective that learns it.

Convention (the diffusion's direction, so "larger t is noisier" holds throughout the book): flow
time ``t`` is a float in [0, 1], t = 0 is the data and t = 1 is pure noise. The *linear
interpolant* (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023) is

    x_t = (1 − t) · x0 + t · eps,       eps ~ N(0, I),

and its velocity along one straight path is the constant u = dx_t/dt = eps − x0. A network
v_θ(x_t, t) trained by least squares on u learns E[eps − x0 | x_t], the velocity field whose ODE
dx/dt = v(x, t), run from t = 1 to t = 0, carries N(0, I) to the data distribution. From v the
other predictions follow: x0_hat = x_t − t·v and eps_hat = x_t + (1 − t)·v.

A flow network is a :class:`VelocityNet`: any network with the U-Net's signature, wrapped so it
takes float flow time (and refuses the integer timesteps of the DDPM samplers). This module is the
training side (the interpolant, its target, the loss, the training times, reflow's
:class:`Coupling` and the :class:`Segments` that distil a few-step sampler); the ODE's steps and
the loop that samples a flow are in :mod:`ddpm_helpers.flow_sampling`. The one trainer
(:func:`ddpm_helpers.training.train`) trains the flow objective when given ``diffusion=FlowConfig()``
and no schedule. Taught in: 09_flow_matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .checks import ConfigMixin, check_batch, check_choice, check_finite, check_fraction, check_same_shape, read_back, validated, values_checked
from .schedules import NoiseSchedule, per_sample
from .spaces import DataSpace, check_x0
from .train_state import TrainConfig


@dataclass(frozen=True)
class FlowConfig(ConfigMixin):
    """The process a flow network belongs to: the linear interpolant with velocity target eps − x0,
    and ``time_scale``, the factor by which flow time t ∈ [0, 1] is multiplied before the network's
    sinusoidal time embedding.

    Why 999: the U-Net embeds its time with frequencies ω_i = 10000^(−i/half) that were chosen for
    the DDPM index range 0..999. Fed t ∈ [0, 1] directly, even the fastest frequency (ω_0 = 1)
    would turn by less than one radian over the whole path and the slower ones not at all, so the
    network could hardly tell t = 0.2 from t = 0.3; scaled to 0..999 it sees the same embedding
    range as the DDPM network, at noise levels ordered the same way (large = noisy). Saved with
    checkpoints in place of a :class:`~ddpm_helpers.schedules.DiffusionConfig`, so a flow checkpoint
    cannot be restored as a diffusion model. Taught in: 09_flow_matching.
    """

    time_scale: float = 999.0

    def __post_init__(self) -> None:
        check_fraction(self.time_scale, "flow.time_scale", high=float("inf"), include_low=False)


class VelocityNet(nn.Module):
    """A network read as a velocity field: ``VelocityNet(net, flow)(x_t, t)`` is ``net(x_t, t·time_scale)``.

    ``t``: (B,) float flow time in [0, 1]. An integer ``t`` (what :func:`ddpm_helpers.sample` and
    the DDPM steps pass) is refused with a ValueError, so a flow model cannot be sampled as a DDPM
    model by mistake; :func:`~ddpm_helpers.flow_sampling.sample_flow` refuses anything that is not a
    VelocityNet, so a DDPM model cannot be sampled as a flow either. ``config`` and ``num_classes``
    are the wrapped net's.
    """

    def __init__(self, net: nn.Module, flow: FlowConfig = FlowConfig()) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be an nn.Module taking (x_t, t, y), e.g. dh.UNet(cfg.unet), got {type(net).__name__}")
        if not isinstance(flow, FlowConfig):
            raise ValueError(f"flow must be a dh.FlowConfig, got {type(flow).__name__}")
        self.net, self.flow = net, flow
        if hasattr(net, "num_classes"):
            self.num_classes = net.num_classes

    @property
    def config(self):
        """The wrapped network's config (what a checkpoint records); AttributeError if it has none."""
        return self.net.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_flow_times(t, x_t.shape[0], "t")
        if y is None and getattr(self, "num_classes", None) is not None:  # the null class, as an int label
            y = torch.full((x_t.shape[0],), self.num_classes, dtype=torch.long, device=x_t.device)
        return self.net(x_t, t * self.flow.time_scale, y)


def check_flow_times(t: object, batch_size: int, name: str = "t") -> None:
    """``t`` must be a (batch_size,) floating tensor of flow times in [0, 1] (the range is read
    from the device only outside :func:`~ddpm_helpers.checks.validated`)."""
    if not isinstance(t, torch.Tensor) or t.ndim != 1 or t.shape[0] != batch_size:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a ({batch_size},) tensor of flow times, got {got}")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be float flow time in [0, 1], got dtype {t.dtype}: integer timesteps belong to a DDPM eps-network. "
            f"This is a flow-matching velocity network; sample it with dh.sample_flow, not dh.sample"
        )
    if not values_checked() and read_back(((t < 0) | (t > 1) | t.isnan()).any()):
        raise ValueError(f"{name} must lie in [0, 1] (0 is data, 1 is noise), got values from {float(t.min())} to {float(t.max())}")


def flow_interpolant(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t)·x0 + t·eps, the straight line from the data x0 (t = 0) to the noise eps (t = 1).

    x0, eps: (B, ...) of one shape; t: (B,) float in [0, 1]. Taught in: 09_flow_matching."""
    check_same_shape(x0, eps, "x0", "eps")
    check_flow_times(t, x0.shape[0])
    return _interpolant(x0, t, eps)


def _interpolant(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    t = per_sample(t, x0.ndim)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """u = d x_t / dt = eps − x0: the velocity of the straight path, the same at every t."""
    check_same_shape(x0, eps, "x0", "eps")
    return eps - x0


def flow_predictions(x_t: torch.Tensor, t: torch.Tensor, v_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) implied by a velocity: solving x_t = (1 − t)·x0 + t·eps and v = eps − x0 gives
    x0_hat = x_t − t·v_hat and eps_hat = x_t + (1 − t)·v_hat. Shapes as in :func:`flow_interpolant`."""
    check_same_shape(x_t, v_hat, "x_t", "v_hat")
    check_flow_times(t, x_t.shape[0])
    t = per_sample(t, x_t.ndim)
    return x_t - t * v_hat, x_t + (1 - t) * v_hat


def flow_coordinates(x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """A DDPM state seen on the flow's straight line: (χ, τ), the book's flow state χ = x_t/(α + σ) and
    flow time τ = σ/(α + σ), where α = √ᾱ_t and σ = √(1 − ᾱ_t). Since x_t = α·x0 + σ·eps,
    χ = (1 − τ)·x0 + τ·eps exactly. x_t: (B, ...); t: (B,) int64 index in [0, T).
    Returns χ (x_t's shape) and τ (B,), in x_t's dtype."""
    check_batch(x_t, "x_t")
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (x_t.shape[0],):
        raise ValueError(f"t must be a ({x_t.shape[0]},) int64 tensor of DDPM timesteps, got {t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    alpha_bar = schedule.alpha_bars[t].to(x_t.dtype)  # α and σ from ᾱ as the DDIM step takes them
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return x_t / per_sample(alpha + sigma, x_t.ndim), sigma / (alpha + sigma)


class EpsFromVelocity(nn.Module):
    """A flow network read as a DDPM ε-network on ``schedule``, so the DDPM samplers (the book's judge
    among them) run it unchanged: ``EpsFromVelocity(flow, schedule)(x_t, t, y)`` takes the DDPM state
    x_t at the int64 timestep t to the flow's line, (χ, τ) = :func:`flow_coordinates` (x_t, t), and
    returns the ε̂ = χ + (1 − τ)·v(χ, τ) of :func:`flow_predictions`. The ε is the same on both sides
    (x_t = α·x0 + σ·ε and χ = (1 − τ)·x0 + τ·ε), so the map is exact: the flow's velocity and the
    ε it implies are one prediction in two coordinates. ``flow`` must be a :class:`VelocityNet`: this
    wrapper is the deliberate route from a flow to a DDPM sampler; a bare VelocityNet still refuses
    integer timesteps. Taught in: 09_flow_matching.
    """

    def __init__(self, flow: nn.Module, schedule: NoiseSchedule) -> None:
        super().__init__()
        check_velocity_net(flow, "flow")
        if not isinstance(schedule, NoiseSchedule):
            raise ValueError(f"schedule must be a dh.NoiseSchedule (the DDPM timesteps to read the flow on), got {type(schedule).__name__}")
        self.flow, self.schedule = flow, schedule
        if hasattr(flow, "num_classes"):
            self.num_classes = flow.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        chi, tau = flow_coordinates(x_t, t, self.schedule.to(x_t.device))
        return flow_predictions(chi, tau, self.flow(chi, tau, y))[1]


def draw_flow_times(n: int, config: TrainConfig, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """n training times in (0, 1), (n,) float32, drawn as ``config.timestep_sampling`` says: ``uniform``
    t ~ U(0, 1), or ``logit_normal`` t = sigmoid(ζ) with ζ ~ N(μ_ζ, σ_ζ²), μ_ζ = ``timestep_logit_mean``,
    σ_ζ = ``timestep_logit_std`` (Esser et al. 2024): the DDPM lever of
    :func:`ddpm_helpers.train_inputs.draw_timesteps` without the floor to an index."""
    if config.timestep_sampling == "uniform":
        return torch.rand((n,), device=device, generator=generator)
    z = torch.randn((n,), device=device, generator=generator)
    return torch.sigmoid(config.timestep_logit_mean + config.timestep_logit_std * z)


def flow_loss(
    model: nn.Module,
    x0: torch.Tensor,
    *,
    t: torch.Tensor | None = None,
    eps: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    loss_type: str = "l2",
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    space: DataSpace | None = None,
) -> torch.Tensor:
    """The conditional flow-matching loss E_{t, eps} ‖v_θ(x_t, t) − (eps − x0)‖² (Lipman et al. 2023).

    t ~ U(0, 1) and eps ~ N(0, I) are drawn from ``generator`` unless given; x_t is
    :func:`flow_interpolant`. ``loss_type`` "l2" (squared error) or "l1"; ``reduction="none"``
    returns one loss per item, (B,). x0: images in [-1, 1], or data of ``space``. The model must
    be a :class:`VelocityNet`. Taught in: 09_flow_matching.
    """
    check_choice(loss_type, ("l2", "l1"), "loss_type")
    check_choice(reduction, ("mean", "none"), "reduction")
    check_velocity_net(model)
    check_x0(x0, space)
    if t is None:
        t = torch.rand((x0.shape[0],), device=x0.device, generator=generator)
    check_flow_times(t, x0.shape[0])
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    check_same_shape(x0, eps, "x0", "eps")
    check_finite(eps, "eps")
    return _flow_loss(model, x0, t=t, eps=eps, y=y, loss_type=loss_type, reduction=reduction)


def _flow_loss(model, x0, *, t, eps, y=None, loss_type="l2", reduction="mean") -> torch.Tensor:
    """:func:`flow_loss` without checks, for the trainer (which checked its data once)."""
    with validated():
        error = model(_interpolant(x0, t, eps), t, y).float() - (eps - x0)
    per_item = (error.square() if loss_type == "l2" else error.abs()).flatten(1).mean(dim=1)
    return per_item.mean() if reduction == "mean" else per_item


def check_velocity_net(model: object, name: str = "model") -> None:
    """``model`` must be a :class:`VelocityNet` (a network trained for flow matching)."""
    if not isinstance(model, VelocityNet):
        raise ValueError(f"{name} must be a dh.VelocityNet (a network trained for flow matching), got {type(model).__name__}; "
                         f"an eps-network is sampled with dh.sample, or wrap a new network as dh.VelocityNet(net) to train it as a flow")


class Coupling(NamedTuple):
    """Training pairs fixed in advance, for reflow (Liu et al. 2023): ``images`` (N, ...) the ends at
    t = 0, ``noise`` (N, ...) their starts at t = 1, ``labels`` (N,) int64. The trainer reads pair i
    as one straight line; an :class:`~ddpm_helpers.data.ImageSet` instead gets fresh noise each step."""

    images: torch.Tensor
    labels: torch.Tensor
    noise: torch.Tensor


class Segments(NamedTuple):
    """Pieces of ODE trajectories fixed in advance, for distilling a sampler of a few steps: piece i
    runs from ``starts[i]`` at flow time ``t_start[i]`` to ``ends[i]`` at ``t_end[i]`` < ``t_start[i]``
    (starts, ends: (N, ...); t_start, t_end: (N,) float in [0, 1]; labels: (N,) int64). The trainer
    teaches a student that one Euler step from the start lands on the end: its velocity at
    (starts[i], t_start[i]) is pulled towards the chord (starts − ends)/(t_start − t_end). Made by
    :func:`~ddpm_helpers.flow_sampling.trajectory_segments` from a teacher's many-step trajectories."""

    starts: torch.Tensor
    ends: torch.Tensor
    t_start: torch.Tensor
    t_end: torch.Tensor
    labels: torch.Tensor


def check_segments(segments: Segments, name: str = "train_set") -> None:
    """``segments`` must be a :class:`Segments` of finite states of one shape, each piece with
    t_start > t_end in [0, 1] (read from the device once)."""
    starts, ends = segments.starts, segments.ends
    check_same_shape(starts, ends, f"{name}.starts", f"{name}.ends")
    check_finite(starts, f"{name}.starts")
    check_finite(ends, f"{name}.ends")
    for field in ("t_start", "t_end"):
        check_flow_times(getattr(segments, field), starts.shape[0], f"{name}.{field}")
    if read_back((segments.t_end >= segments.t_start).any()):
        raise ValueError(f"{name}.t_end must be < {name}.t_start for every piece (a piece runs from noise towards data), "
                         f"got a piece from t = {float(segments.t_start[(segments.t_end >= segments.t_start).nonzero()[0]]):.3g}")


def chord_lines(segments: Segments) -> tuple[torch.Tensor, torch.Tensor]:
    """The straight line through each piece's two states, as the flow objective reads a line: its
    point at t = 0 and its point at t = 1, so that :func:`flow_interpolant` at t_start is the start,
    at t_end the end, and :func:`velocity_target` is the chord u = (start − end)/(t_start − t_end).
    From x(t) = start + (t − t_start)·u: x(0) = start − t_start·u, x(1) = start + (1 − t_start)·u.
    This is how the one trainer distils: flow matching on the chord, read only at t_start."""
    t_start = per_sample(segments.t_start, segments.starts.ndim)
    chord = (segments.starts - segments.ends) / (t_start - per_sample(segments.t_end, segments.starts.ndim))
    return segments.starts - t_start * chord, segments.starts + (1 - t_start) * chord


def segments_as_coupling(segments: Segments) -> tuple[Coupling, torch.Tensor]:
    """What the trainer reads of checked ``segments``: the chords' lines as a :class:`Coupling`
    (:func:`chord_lines`) and the times (t_start) at which each line is read."""
    check_segments(segments)
    line_x0, line_eps = chord_lines(segments)
    return Coupling(line_x0, segments.labels, line_eps), segments.t_start
