"""Sampling a flow: integrate dx/dt = v_θ(x, t) from noise (t = 1) down to data (t = 0).

The ODE of :mod:`ddpm_helpers.flow` is solved with pure steps ``step(x_t, t, t_prev, v_hat[,
v_hat_prev]) -> Step(x_prev, x0_hat)``, the same shape as the DDPM steps: :func:`euler_step` (first
order, one network evaluation) and :func:`heun_step` (second order, two; the loop takes its last
step, to t = 0, by Euler, as Karras et al. 2022 do, so n Heun steps cost 2n − 1 evaluations). A
:class:`FlowSamplerSpec` names the method and the number of equal steps of t; :func:`iterate_flow`
is the loop, yielding a :class:`FlowState` after every step, and :func:`sample_flow` draws the noise
and runs it. :func:`flow_sample_quality` judges the samples as
:func:`ddpm_helpers.evaluation.sample_quality` judges a diffusion's. The model is always a
:class:`~ddpm_helpers.flow.VelocityNet`. Taught in: 09_flow_matching.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .checks import ConfigMixin, check_batch, check_choice, check_finite, check_positive_int, check_same_shape, read_back, validated, values_checked
from .flow import Segments, check_flow_times, check_velocity_net
from .schedules import per_sample
from .spaces import MNIST_PIXELS, DataSpace
from .steps import Step

FLOW_METHODS = ("euler", "heun")
EVALUATIONS_PER_STEP = {"euler": 1, "heun": 2}


def _check_flow_step(x_t, t, t_prev, v_hat) -> None:
    if not isinstance(x_t, torch.Tensor) or not isinstance(v_hat, torch.Tensor):
        raise ValueError(f"x_t and v_hat must be tensors of one shape (B, ...), got {type(x_t).__name__} and {type(v_hat).__name__}")
    check_same_shape(x_t, v_hat, "x_t", "v_hat")
    check_flow_times(t, x_t.shape[0], "t")
    check_flow_times(t_prev, x_t.shape[0], "t_prev")
    if not values_checked() and read_back((t_prev >= t).any()):
        raise ValueError(f"t_prev must be < t (the sampler runs from noise, t = 1, to data, t = 0), got t={t.tolist()}, t_prev={t_prev.tolist()}")


def euler_step(x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, v_hat: torch.Tensor) -> Step:
    """One Euler step of dx/dt = v: x_prev = x_t + (t_prev − t)·v_hat; x0_hat = x_t − t·v_hat.

    x_t, v_hat: (B, ...); t, t_prev: (B,) float flow times with t_prev < t. On a straight path
    (v constant in t) the step is exact, whatever its size. Taught in: 09_flow_matching."""
    _check_flow_step(x_t, t, t_prev, v_hat)
    return _euler_step(x_t, t, t_prev, v_hat)


def _euler_step(x_t, t, t_prev, v_hat) -> Step:
    dt = per_sample(t_prev - t, x_t.ndim)
    return Step(x_t + dt * v_hat, x_t - per_sample(t, x_t.ndim) * v_hat)


def heun_step(x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, v_hat: torch.Tensor, v_hat_prev: torch.Tensor) -> Step:
    """One step of Heun's method (the explicit trapezoidal rule), second order:
    x_prev = x_t + (t_prev − t)·(v_hat + v_hat_prev)/2, where v_hat = v(x_t, t) and v_hat_prev =
    v(x̃, t_prev) at the Euler prediction x̃ = :func:`euler_step`'s x_prev. x0_hat = x_t − t·v_hat.
    Two network evaluations per step. Shapes as in :func:`euler_step`."""
    _check_flow_step(x_t, t, t_prev, v_hat)
    check_same_shape(x_t, v_hat_prev, "x_t", "v_hat_prev")
    return _heun_step(x_t, t, t_prev, v_hat, v_hat_prev)


def _heun_step(x_t, t, t_prev, v_hat, v_hat_prev) -> Step:
    dt = per_sample(t_prev - t, x_t.ndim)
    return Step(x_t + dt * (v_hat + v_hat_prev) / 2, x_t - per_sample(t, x_t.ndim) * v_hat)


@dataclass(frozen=True)
class FlowSamplerSpec(ConfigMixin):
    """How to sample a flow: ``method`` "euler" or "heun" over ``num_steps`` equal steps of t from 1 to 0."""

    method: str = "euler"
    num_steps: int = 20

    def __post_init__(self) -> None:
        check_choice(self.method, FLOW_METHODS, "method")
        check_positive_int(self.num_steps, "num_steps")

    @property
    def num_evaluations(self) -> int:
        """Network evaluations per sample (NFE): one per Euler step, two per Heun step but the last
        (Heun's last step, to t = 0, is an Euler step: see :func:`iterate_flow`)."""
        return EVALUATIONS_PER_STEP[self.method] * self.num_steps - (self.method == "heun")

    def times(self) -> list[float]:
        """The num_steps + 1 flow times visited, 1 = t_0 > t_1 > ... > t_n = 0, evenly spaced."""
        return torch.linspace(1.0, 0.0, self.num_steps + 1, dtype=torch.float64).tolist()

    def __str__(self) -> str:
        return f"{self.method}-{self.num_steps}"


class FlowState(NamedTuple):
    """What the flow loop yields after each step: the time reached, the state there and x0_hat."""

    t: float
    x: torch.Tensor
    x0_hat: torch.Tensor


@torch.no_grad()
def iterate_flow(model: nn.Module, x_1: torch.Tensor, spec: FlowSamplerSpec, *, y: torch.Tensor | None = None) -> Iterator[FlowState]:
    """Integrate dx/dt = v_θ(x, t) from ``x_1`` (noise, t = 1) to t = 0 as ``spec`` says, yielding a
    :class:`FlowState` after every step; the last state's ``x`` is the sample. ``model``: a
    :class:`VelocityNet`. Deterministic: the sample is a function of x_1.

    Heun's corrector would evaluate the network at t = 0 on the Euler prediction, a time a flow
    trained with logit-normal t has practically never seen (sigmoid(ζ) < 0.01 for ζ ~ N(0, 1) has
    probability 2·10⁻⁶); so, as in Karras et al. 2022 (Algorithm 1), the last step of "heun" is an
    Euler step (on the shipped flow, evaluating there raised the FID of 4 Heun steps from 2.47 to
    72). Taught in: 09_flow_matching."""
    check_velocity_net(model)
    if not isinstance(spec, FlowSamplerSpec):
        raise ValueError(f"spec must be a dh.FlowSamplerSpec (e.g. dh.FlowSamplerSpec('euler', 4)), got {type(spec).__name__}")
    check_batch(x_1, "x_1")
    check_finite(x_1, "x_1")
    x = x_1
    for state in _integrate(model, x_1, spec.times(), spec.method, y):
        x = state.x
        yield state
    check_finite(x, "the flow's sample (the network's velocity may have overflowed)")


def _integrate(model, x, times, method, y) -> Iterator[FlowState]:
    """The steps of :func:`iterate_flow` over the decreasing ``times`` (from x at times[0]), unchecked."""
    for t_value, t_prev_value in zip(times[:-1], times[1:]):
        t = torch.full((x.shape[0],), t_value, device=x.device, dtype=x.dtype)
        t_prev = torch.full_like(t, t_prev_value)
        with validated():  # the times are in [0, 1] and decreasing by construction
            v_hat = model(x, t, y).to(x.dtype)
            if method == "euler" or t_prev_value == 0:   # Heun's last step too: no evaluation at t = 0
                x, x0_hat = _euler_step(x, t, t_prev, v_hat)
            else:
                x_euler = _euler_step(x, t, t_prev, v_hat).x_prev
                x, x0_hat = _heun_step(x, t, t_prev, v_hat, model(x_euler, t_prev, y).to(x.dtype))
        yield FlowState(t_prev_value, x, x0_hat)


@torch.no_grad()
def sample_flow(
    model: nn.Module,
    num_samples: int,
    space: DataSpace,
    spec: FlowSamplerSpec,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Draw x_1 ~ N(0, I) of ``space.shape`` (from ``generator``, on the model's device) and run
    :func:`iterate_flow` to t = 0; returns (N, *space.shape), clamped to the space's range when it
    has one. ``batch_size`` bounds how many items go through the network at once. Taught in: 09_flow_matching."""
    check_velocity_net(model)
    check_positive_int(num_samples, "num_samples")
    if not isinstance(space, DataSpace):
        raise ValueError(f"space must be a dh.DataSpace (e.g. dh.MNIST_PIXELS), got {type(space).__name__}")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    noise = torch.randn((num_samples, *space.shape), device=device, generator=generator)
    chunks = []
    for x_1 in noise.split(batch_size or num_samples):
        *_, last = iterate_flow(model, x_1, spec)
        chunks.append(last.x)
    samples = torch.cat(chunks)
    return samples.clamp(*space.value_range) if space.value_range is not None else samples


@torch.no_grad()
def trajectory_segments(
    teacher: nn.Module, noise: torch.Tensor, num_pieces: int, spec: FlowSamplerSpec, *,
    labels: torch.Tensor | None = None, batch_size: int | None = None, student: nn.Module | None = None,
) -> Segments:
    """Cut the teacher's trajectories into ``num_pieces`` equal pieces of flow time, for distilling a
    sampler of ``num_pieces`` = k Euler steps (a student trained on them steps from t = 1 to 1 − 1/k, ...).

    ``teacher``: a :class:`~ddpm_helpers.flow.VelocityNet`; ``noise``: (N, ...) its starts at t = 1;
    ``spec``: how the teacher integrates, with ``spec.num_steps`` a multiple of ``num_pieces`` so that
    every piece's ends are states the teacher visits. Returns :class:`~ddpm_helpers.flow.Segments`
    of N·num_pieces pieces, piece by piece of time (all first pieces, then all second ones, ...);
    the final ends (t = 0) are the teacher's samples, unclamped. ``labels`` (N,) (default zeros) go
    with each trajectory; ``batch_size`` bounds how many go through the network at once.

    ``student`` (a :class:`~ddpm_helpers.flow.VelocityNet`, e.g. one already distilled on the teacher's
    pieces): each piece after the first then starts where the *student* is after its own Euler steps
    (the states it will meet when sampled, not the teacher's), and the teacher integrates that piece
    from there; the first pieces are unchanged. Training on these corrects the errors a student makes
    on its own earlier steps (as DAgger does for imitation: Ross et al. 2011)."""
    check_velocity_net(teacher, "teacher")
    if student is not None:
        check_velocity_net(student, "student")
    check_positive_int(num_pieces, "num_pieces")
    if not isinstance(spec, FlowSamplerSpec):
        raise ValueError(f"spec must be a dh.FlowSamplerSpec (e.g. dh.FlowSamplerSpec('euler', 24)), got {type(spec).__name__}")
    if spec.num_steps % num_pieces:
        raise ValueError(f"spec.num_steps ({spec.num_steps}) must be a multiple of num_pieces ({num_pieces}), so that each piece ends on a state the teacher visits")
    check_batch(noise, "noise")
    check_finite(noise, "noise")
    if labels is None:
        labels = torch.zeros(noise.shape[0], dtype=torch.long, device=noise.device)
    elif not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (noise.shape[0],):
        raise ValueError(f"labels must be a ({noise.shape[0]},) tensor, one per trajectory, got {tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    every = spec.num_steps // num_pieces
    times = spec.times()
    chunks = []  # per chunk of noise: (starts, ends), each (k, n, ...)
    for x_1, y in zip(noise.split(batch_size or noise.shape[0]), labels.split(batch_size or noise.shape[0])):
        y = y if getattr(teacher, "num_classes", None) is not None else None
        starts, ends, x = [], [], x_1
        for j in range(num_pieces):
            piece_times = times[j * every:(j + 1) * every + 1]
            *_, end = _integrate(teacher, x, piece_times, spec.method, y)
            starts.append(x)
            ends.append(end.x)
            if student is None or j == num_pieces - 1:
                x = end.x
            else:  # the student's own Euler step over the piece
                x = next(_integrate(student, x, piece_times[::every], "euler", y)).x
        chunks.append((torch.stack(starts), torch.stack(ends)))
    starts, ends = (torch.cat(part, dim=1) for part in zip(*chunks))  # (k, N, ...)
    check_finite(ends, "the teacher's states (its velocity may have overflowed)")
    ends_at = times[::every]  # 1, 1 − 1/k, ..., 0
    n = noise.shape[0]
    t_start = torch.tensor(ends_at[:-1], dtype=noise.dtype, device=noise.device).repeat_interleave(n)
    t_end = torch.tensor(ends_at[1:], dtype=noise.dtype, device=noise.device).repeat_interleave(n)
    return Segments(starts.flatten(0, 1), ends.flatten(0, 1), t_start, t_end, labels.repeat(num_pieces))


def flow_sample_quality(model: nn.Module, reference, spec: FlowSamplerSpec, *, seed: int = 0, batch_size: int | None = None):
    """:func:`ddpm_helpers.evaluation.sample_quality` for a flow: ``reference.num_samples`` images
    from :func:`sample_flow` (noise from a generator seeded by ``seed``), scored by the book's
    judge (FID, confident share, class histogram). Returns (report, samples)."""
    from .metrics import quality_report  # the metrics need the classifier; imported when judging

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = sample_flow(model, reference.num_samples, MNIST_PIXELS, spec, generator=generator, batch_size=batch_size)
    return quality_report(reference.classifier, samples, reference.features), samples

