"""Diagnostics for "my loss went down but my samples are noise": the checklist and the loss by timestep.

Two instruments, one namespace (``dh.diagnostics``):

* the checklist, :func:`run_checklist` (here) and its checks (in :mod:`ddpm_helpers.checklist`):
  small measurements with known healthy values, each failing on one classic bug of diffusion code;
* :func:`loss_by_timestep` (here): the loss per band of timesteps beside the per-pixel Gaussian
  baseline (:class:`~ddpm_helpers.oracles.PerPixelGaussian`) that any trained network should beat.

Taught in: 08_diagnostics; `tests/test_diagnostics.py` shows each check failing on the bug it is built for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .checklist import _check_function, _checked_output, _device_of
from .checklist import (  # noqa: F401  (re-exported: chapters call them as dh.diagnostics.*; _oracle_samples for the tests)
    Check,
    Report,
    _oracle_samples,
    check_data_range,
    check_ema,
    check_eval_mode,
    check_finite_outputs,
    check_forward_moments,
    check_last_step_is_clean,
    check_reverse_variance,
    check_schedule,
    check_strided_sampling,
)
from .checks import check_batch, check_images, check_positive_int
from .diffusion import DataSpace, ddpm_loss, q_sample
from .oracles import GaussianOracle, PerPixelGaussian  # noqa: F401
from .schedules import NoiseSchedule
from .steps import StepFunction, ddim_step, ddpm_step


@dataclass(frozen=True)
class TimestepBand:
    """The loss of one band of timesteps [lo, hi): mean per-image loss (per pixel) with its standard
    error, the per-pixel Gaussian baseline's expected loss there, and the same error measured on the
    clean image, ‖x0 − x̂0‖²/D = loss / SNR(t)."""

    lo: int
    hi: int
    loss: float
    se: float
    baseline: float
    x0_error: float

    @property
    def ratio(self) -> float:
        """loss / baseline: below 1 where the network knows more than per-pixel statistics."""
        return self.loss / self.baseline


@torch.no_grad()
def loss_by_timestep(
    model: nn.Module, images: torch.Tensor, schedule: NoiseSchedule, *, num_bands: int = 20, generator: torch.Generator | None = None
) -> list[TimestepBand]:
    """The ε-loss of ``model`` on ``images`` in ``num_bands`` equal bands of timesteps, each image
    at one t drawn inside each band, beside the per-pixel Gaussian baseline fitted to the same images.
    The images' range is not checked, so that data in the wrong range can be diagnosed too.
    Healthy: far below the baseline in the low and middle bands, where the digit's shape decides
    the noise. In the noisiest bands the best prediction is almost x_t itself and the baseline's
    loss is tiny, so an ε-network can sit above it there at little cost in absolute loss (the
    book's model does from t ≈ 700; its x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ magnifies that error). A network
    above the baseline in the middle bands is undertrained, or mis-scaled (data range, schedule)."""
    check_images(images, "images")
    check_positive_int(num_bands, "num_bands")
    if num_bands > schedule.T:
        raise ValueError(f"num_bands must be at most T = {schedule.T}, got {num_bands}")
    baseline = PerPixelGaussian(images, schedule)
    edges = torch.linspace(0, schedule.T, num_bands + 1).round().long().tolist()
    snr = schedule.snr()
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        t = torch.randint(lo, hi, (images.shape[0],), device=images.device, generator=generator)
        eps = torch.randn(images.shape, device=images.device, generator=generator)
        loss = ddpm_loss(model, images, schedule, t=t, eps=eps, reduction="none", space=DataSpace(images.shape[1:])).float()  # no range: wrong data is diagnosed
        se = float(loss.std() / math.sqrt(loss.numel())) if loss.numel() > 1 else float("nan")
        bands.append(TimestepBand(lo, hi, float(loss.mean()), se, float(baseline.expected_loss(t).mean()), float((loss / snr[t]).mean())))
    return bands


def run_checklist(
    model: nn.Module,
    schedule: NoiseSchedule,
    images: torch.Tensor,
    *,
    step: StepFunction = ddpm_step,
    strided_step: StepFunction = ddim_step,
    forward: Callable = q_sample,
    ema_model: nn.Module | None = None,
    initial_model: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Report:
    """Run every check against an ε-``model`` (``model(x_t, t)`` returns x_t's shape; one without
    parameters runs on the images' device), its ``schedule``, training ``images`` ((B, C, H, W), B ≥ 1,
    in any range: the range is checked, not refused), the ancestral ``step`` (t to t − 1), the
    ``strided_step`` used with fewer steps (both with this package's step signature) and the
    ``forward`` process ``forward(x0, t, eps, schedule)``; wrap your own to check them. ``ema_model``
    (and the ``initial_model`` it started from) adds the EMA check. Returns a :class:`Report`;
    ``print(report)`` shows every check and what failures mean. Broken contracts are ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module called as model(x_t, t), got {type(model).__name__}")
    if not isinstance(schedule, NoiseSchedule):
        raise ValueError(f"schedule must be a NoiseSchedule (dh.make_schedule), got {type(schedule).__name__}")
    check_images(images, "images")
    check_batch(images, "images")
    _check_function(step, "step", "dh.ddpm_step")
    _check_function(strided_step, "strided_step", "dh.ddim_step")
    _check_function(forward, "forward", "dh.q_sample")
    if initial_model is not None and ema_model is None:
        raise ValueError("initial_model is only used by the EMA check: pass ema_model too, or leave initial_model out")
    if autocast_dtype is not None and not (isinstance(autocast_dtype, torch.dtype) and autocast_dtype.is_floating_point):
        raise ValueError(f"autocast_dtype must be None or a floating torch.dtype such as torch.bfloat16, got {autocast_dtype!r}")
    device = _device_of(model, images.device)
    x = images[:4].to(device)
    t = torch.full((x.shape[0],), schedule.T // 2, dtype=torch.long, device=device)
    with torch.no_grad():
        _checked_output(model(x, t), x)  # a broken contract stops here, before the slow checks
    ema_check = None if ema_model is None else check_ema(ema_model, model, initial_model)  # so does an EMA of another architecture
    checks = [
        check_data_range(images),
        check_schedule(schedule),
        check_forward_moments(images, schedule, forward=forward),
        check_reverse_variance(step, schedule.to("cpu")),
        check_last_step_is_clean(step, schedule.to("cpu")),
        check_strided_sampling(strided_step, schedule.to("cpu")),
        check_eval_mode(model, x, t),
        check_finite_outputs(model, x, schedule, dtype=autocast_dtype),
    ]
    return Report(tuple(checks + ([ema_check] if ema_check else [])))
