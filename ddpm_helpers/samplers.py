"""Sampling: the spec of a sampler, and one short loop over the steps (which timesteps it visits: :mod:`ddpm_helpers.spacings`).

A :class:`SamplerSpec` says how to sample (method, number of steps, η, spacing, variance,
clipping) and is checked when it is made, so an option that does not apply to the method is an
error there. :func:`iterate_sampler` is the loop a reader could retype: ask the network for
eps_hat, take one step of :data:`~ddpm_helpers.steps.STEPS`, repeat. Taught in: 05_sampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .checks import ConfigMixin, check_batch, check_choice, check_finite, check_fraction, check_positive_int, read_back, validated
from .diffusion import DataSpace, check_model_labels
from .schedules import NoiseSchedule
from .spacings import SPACINGS, start_index, timesteps
from .steps import BARE_STEPS, OPTIONS, STEPS, VARIANCES, StepFunction, check_step_result


@dataclass(frozen=True)
class SamplerSpec(ConfigMixin):
    """How to sample: ``method`` (a key of :data:`~ddpm_helpers.steps.STEPS`), ``num_steps``
    (None: all T; "ddpm" always visits all T), ``eta`` (DDIM's noise, default 0), ``spacing`` of the
    visited timesteps, ``variance`` (DDPM's σ_t², default β̃_t), ``clip_x0`` (clip x0_hat to the
    data's range; needs a data space with a known range) and ``max_noise`` (start at the last index whose
    noise level σ = √((1 − ᾱ)/ᾱ) is at most this, not at T−1; :func:`~ddpm_helpers.spacings.timesteps`)."""

    method: str = "ddpm"
    num_steps: int | None = None
    eta: float | None = None
    spacing: str = "uniform"
    variance: str | None = None
    clip_x0: bool = True
    max_noise: float | None = None

    def __post_init__(self) -> None:
        check_choice(self.method, tuple(STEPS), "method")
        if self.num_steps is not None:
            check_positive_int(self.num_steps, "num_steps")
        check_choice(self.spacing, SPACINGS, "spacing")
        for name in ("eta", "variance"):
            if getattr(self, name) is not None and name not in OPTIONS[self.method]:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to method {self.method!r}; it takes {OPTIONS[self.method] or 'no options'}")
        if self.eta is not None:
            check_fraction(self.eta, "eta")
        if self.variance is not None:
            check_choice(self.variance, VARIANCES, "variance")
        if self.max_noise is not None:
            check_fraction(self.max_noise, "max_noise", high=float("inf"), include_low=False)
        if self.method == "ddpm" and (self.spacing != "uniform" or self.num_steps is not None or self.max_noise is not None):
            raise ValueError(
                f"method 'ddpm' visits every one of the T steps, so num_steps and max_noise must be None and spacing 'uniform' "
                f"(got num_steps={self.num_steps!r}, spacing={self.spacing!r}, max_noise={self.max_noise!r}); for fewer steps use method 'ddim'"
            )
        if not isinstance(self.clip_x0, bool):
            raise ValueError(f"clip_x0 must be True or False, got {self.clip_x0!r}")

    def steps(self, T: int, schedule: NoiseSchedule | None = None) -> list[int]:
        """The decreasing timesteps this spec visits for a schedule of ``T`` steps (the noise-level
        spacings and ``max_noise`` need the ``schedule`` itself)."""
        every = T if self.max_noise is None else start_index(T, self.max_noise, schedule) + 1
        return timesteps(T, self.num_steps or every, self.spacing, schedule=schedule, max_noise=self.max_noise)

    def __str__(self) -> str:
        options = "".join(f" {k}={v}" for k, v in (("eta", self.eta), ("variance", self.variance)) if v is not None)
        spacing = ("" if self.spacing == "uniform" else f" {self.spacing}") + ("" if self.max_noise is None else f" max_noise={self.max_noise:g}")
        return f"{self.method}-{self.num_steps or 'T'}{options}{spacing}{'' if self.clip_x0 else ' unclipped'}"


def guided_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, guidance_scale: float = 1.0) -> torch.Tensor:
    """The noise prediction of classifier-free guidance: ε̃ = ε(x_t, t, ∅) + s·(ε(x_t, t, y) − ε(x_t, t, ∅)).

    ``s = guidance_scale``: 0 is the unconditional model and 1 the conditional one (one network
    call each; with ``y`` None, the model's own default, the null class); s > 1 pushes the sample
    further towards what distinguishes class y. Ho & Salimans (2022) write the same mix as
    (1 + w)·ε_y − w·ε_∅, so s = 1 + w. Otherwise the two predictions come from one batched call;
    the null class is ``model.num_classes``. ``y``: (B,) labels in [0, num_classes) of any integer
    dtype, checked here (labels for a model without ``num_classes`` are refused). Taught in: 07_conditional.
    """
    check_fraction(guidance_scale, "guidance_scale", high=float("inf"))
    check_batch(x_t, "x_t")
    if y is not None:
        y = check_model_labels(model, y, x_t.shape[0], guided=guidance_scale != 1.0)
    return _guided_eps(model, x_t, t, y, guidance_scale)


def _guided_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """:func:`guided_eps` without checks, for the sampling loop (which checked y once)."""
    if y is None or guidance_scale == 1.0:
        return model(x_t, t, y)
    null = torch.full_like(y, model.num_classes)
    if guidance_scale == 0.0:
        return model(x_t, t, null)
    eps_y, eps_null = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return eps_null + guidance_scale * (eps_y - eps_null)


def _clip_range(spec: SamplerSpec, space: DataSpace) -> tuple[float, float] | None:
    if spec.clip_x0 and space.value_range is None:
        raise ValueError(f"clip_x0=True needs data with a known range, but {space} has none; use SamplerSpec(..., clip_x0=False)")
    return space.value_range if spec.clip_x0 else None


def _check_call(model, batch: int, space, spec, y, guidance_scale, step) -> torch.Tensor | None:
    """The checks shared by :func:`iterate_sampler` and :func:`sample`, once per call; returns y as int64."""
    if not isinstance(space, DataSpace):
        raise ValueError(f"space must be a dh.DataSpace (e.g. dh.MNIST_PIXELS), got {type(space).__name__}")
    if not isinstance(spec, SamplerSpec):
        raise ValueError(f"spec must be a dh.SamplerSpec (e.g. cfg.judge), got {type(spec).__name__}")
    check_fraction(guidance_scale, "guidance_scale", high=float("inf"))
    if guidance_scale != 1.0 and y is None:
        raise ValueError(f"guidance_scale={guidance_scale} needs class labels y (guidance mixes conditional and unconditional predictions)")
    if y is not None:
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (batch,):
            raise ValueError(f"y must hold one label per sample, shape ({batch},), got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        y = check_model_labels(model, y, batch, guided=guidance_scale != 1.0)
    if step is not None and not callable(step):
        raise ValueError(f"step must be a step function with the signature of dh.STEPS (or None for spec.method's own), got {type(step).__name__}")
    _clip_range(spec, space)
    return y


class SamplerState(NamedTuple):
    """What the loop yields after each step: the step's index t, the new state and x0_hat."""

    t: int
    x: torch.Tensor
    x0_hat: torch.Tensor


class _Health:
    """The first step at which the network's eps_hat, or the step's result, was not finite: kept on
    the device and read once at the end of the run, so the loop never waits for the device."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.full((2,), -1, dtype=torch.long, device=device)

    def update(self, t_value: int, eps_hat: torch.Tensor, x: torch.Tensor, x0_hat: torch.Tensor) -> None:
        bad = torch.stack([~torch.isfinite(eps_hat).all(), ~(torch.isfinite(x).all() & torch.isfinite(x0_hat).all())])
        self.first_bad = torch.where(bad & (self.first_bad < 0), t_value, self.first_bad)

    def check(self, step: StepFunction | None) -> None:
        bad_eps, bad_state = read_back(self.first_bad)
        if bad_eps >= 0 and not bad_state > bad_eps:  # t decreases: the larger t came first
            raise ValueError(f"model returned a non-finite eps_hat at t={bad_eps} (NaN or infinity), so the samples are not valid; check the network (e.g. its weights and precision)")
        if bad_state >= 0:
            who = "the step function passed as step=" if step is not None else "the sampler"
            raise ValueError(f"{who} produced a non-finite state (x_prev or x0_hat) at t={bad_state}, so the samples are not valid")


def _iterate(model, x_T, space, schedule, spec, y, guidance_scale, generator, step, health) -> Iterator[SamplerState]:
    """The loop of :func:`iterate_sampler` on checked inputs: no device reads, whatever the steps."""
    steps = spec.steps(schedule.T, schedule)
    take_step, clip = step or BARE_STEPS[spec.method], _clip_range(spec, space)
    x, batch = x_T, x_T.shape[0]
    previous = None  # (t, x0_hat) of the step before, for the multistep solver
    for i, t_value in enumerate(steps):
        t = torch.full((batch,), t_value, device=x.device, dtype=torch.long)
        t_prev = torch.full_like(t, steps[i + 1] if i + 1 < len(steps) else -1)
        with validated():  # t, t_prev and y are known to be valid: nothing below reads them back
            eps_hat = _guided_eps(model, x, t, y, guidance_scale)
            if not isinstance(eps_hat, torch.Tensor) or eps_hat.shape != x.shape:
                raise ValueError(f"model must return eps_hat of x_t's shape {tuple(x.shape)}, got {tuple(eps_hat.shape) if isinstance(eps_hat, torch.Tensor) else type(eps_hat).__name__}")
            eps_hat = eps_hat.to(x.dtype)
            result = take_step(x, t, t_prev, eps_hat, schedule, eta=spec.eta, variance=spec.variance, clip_x0=clip, previous=previous, generator=generator)
        if step is not None:
            check_step_result(result, x)
        x, x0_hat = result
        health.update(t_value, eps_hat, x, x0_hat)
        previous = (t, x0_hat)
        yield SamplerState(t_value, x, x0_hat)


@torch.no_grad()
def iterate_sampler(
    model: nn.Module,
    x_T: torch.Tensor,
    space: DataSpace,
    schedule: NoiseSchedule,
    spec: SamplerSpec,
    *,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    step: StepFunction | None = None,
) -> Iterator[SamplerState]:
    """Run the reverse process from ``x_T`` as ``spec`` says and yield a :class:`SamplerState` after
    every step; the last state's ``x`` is the sample.

    A conditional model gets the labels ``y`` ((B,) in [0, num_classes), any integer dtype) and, with
    ``guidance_scale`` ≠ 1, classifier-free guidance (:func:`guided_eps`). ``step`` replaces the
    method's step function; it must return a :class:`~ddpm_helpers.steps.Step` of x_t's shape.
    Inputs are checked once here and the steps run without checks: no device read per step. That
    every eps_hat and state stayed finite is recorded on the device and checked once, when the
    last state has been yielded.
    """
    check_batch(x_T, "x_T")
    y = _check_call(model, x_T.shape[0], space, spec, y, guidance_scale, step)
    if tuple(x_T.shape[1:]) != space.shape:
        raise ValueError(f"x_T must have shape (B, {', '.join(map(str, space.shape))}) for this data space, got {tuple(x_T.shape)}")
    check_finite(x_T, "x_T")
    health = _Health(x_T.device)
    yield from _iterate(model, x_T, space, schedule, spec, y, guidance_scale, generator, step, health)
    health.check(step)


@torch.no_grad()
def sample(
    model: nn.Module,
    num_samples: int,
    space: DataSpace,
    schedule: NoiseSchedule,
    spec: SamplerSpec,
    *,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    step: StepFunction | None = None,
) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``space.shape`` and run :func:`iterate_sampler` to the end; returns
    (N, *space.shape), clamped to the space's range when it has one (images), untouched otherwise.

    The noise comes from ``generator`` when given (on the schedule's device), so results repeat.
    ``batch_size`` bounds how many items go through the network at once (None: all of them).
    On a CPU a batch of about a hundred images is over twice as fast per image as a batch of
    a thousand, whose activations no longer fit the caches (``benchmarks/sample_speed.py``).
    All of x_T is drawn first, so the starting noise does not depend on ``batch_size``; the
    fresh noise of stochastic steps is drawn chunk after chunk, so those samples repeat for a
    given ``batch_size``. ``step`` replaces the method's step function (see :func:`iterate_sampler`).
    Inputs are checked once for all chunks; finiteness is read back once, at the end.
    """
    check_positive_int(num_samples, "num_samples")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    y = _check_call(model, num_samples, space, spec, y, guidance_scale, step)
    x_T = torch.randn((num_samples, *space.shape), device=schedule.device, generator=generator)
    chunk = batch_size or num_samples
    health, samples = _Health(x_T.device), []
    for start in range(0, num_samples, chunk):
        labels = None if y is None else y[start:start + chunk]
        for state in _iterate(model, x_T[start:start + chunk], space, schedule, spec, labels, guidance_scale, generator, step, health):
            pass
        samples.append(state.x if space.value_range is None else state.x.clamp(*space.value_range))
    health.check(step)
    return torch.cat(samples)
