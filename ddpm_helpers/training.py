"""Training: the step, the loop and its hooks (what a step draws and the checks of the trainer's
inputs are in :mod:`ddpm_helpers.train_inputs`).

One loop serves the chapters, the scripts and the benchmarks: :func:`train` runs to the end of the
run's plan, to a step count or to a number of seconds of training, and calls back at chosen steps or
seconds (to judge samples, say) without counting the callback as training time. Everything that
decides the next step lives in a :class:`~ddpm_helpers.train_state.TrainState`, which
:mod:`ddpm_helpers.checkpoint` writes atomically and restores exactly. Taught in: 04_training.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .checks import check_class_labels, check_data, check_finite, check_fraction, check_positive_int, validated
from .data import ImageSet
from .diffusion import DataSpace, _ddpm_loss
from .flow import Coupling, FlowConfig, Segments, _flow_loss, check_flow_times, draw_flow_times, segments_as_coupling
from .runtime import all_average, any_process, world
from .schedules import DiffusionConfig, NoiseSchedule
from .train_inputs import _check_points, check_diffusion, check_flow_training, draw_timesteps, drop_labels
from .train_state import History, TrainConfig, TrainState, learning_rate, record_losses

EvalCallback = Callable[[TrainState], object]


def loss_options(config: TrainConfig, diffusion: DiffusionConfig) -> dict:
    """The keyword arguments of :func:`~ddpm_helpers.diffusion.ddpm_loss` that the run decides: the
    loss from ``config``, what the network outputs from ``diffusion.prediction``."""
    return {"loss_type": config.loss_type, "prediction": diffusion.prediction, "weighting": config.loss_weighting, "min_snr_gamma": config.min_snr_gamma}


def _loss(model, x0, schedule, t, eps, y, config: TrainConfig, diffusion: DiffusionConfig | FlowConfig) -> torch.Tensor:
    """The run's loss on checked inputs: the flow-matching loss for a flow, else the diffusion's."""
    if isinstance(diffusion, FlowConfig):
        return _flow_loss(model, x0, t=t, eps=eps, y=y, loss_type=config.loss_type)
    return _ddpm_loss(model, x0, schedule, t=t, eps=eps, y=y, **loss_options(config, diffusion))


def num_classes_of(model: nn.Module) -> int | None:
    """The number of classes of a conditional model (its null class has this index), else None."""
    return getattr(model, "num_classes", None)


def train_step(
    state: TrainState, x0: torch.Tensor, schedule: NoiseSchedule | None, config: TrainConfig, y: torch.Tensor | None = None, *,
    diffusion: DiffusionConfig | FlowConfig, eps: torch.Tensor | None = None, t: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on the batch ``x0``; returns the batch's mean loss, detached.

    Draw t and eps for the whole batch → this process's slice of it → loss → backward (scaled
    under fp16) → average gradients over processes → clip the gradient norm → AdamW → EMA.
    With labels ``y`` (a conditional model), a share ``config.label_dropout`` of them is first
    replaced by the null class, drawn after t and eps from the same generator.
    Under torchrun every process passes the same global batch and generator state and trains on
    its own contiguous slice, so W processes compute exactly the step of one process; alone, the
    slice is the whole batch. The network learns to output ``diffusion.prediction`` (eps or v).

    With ``diffusion`` a :class:`~ddpm_helpers.flow.FlowConfig` (and ``schedule`` None) the step
    trains flow matching instead: t ∈ (0, 1) from :func:`~ddpm_helpers.flow.draw_flow_times`, the
    network a :class:`~ddpm_helpers.flow.VelocityNet`, the target eps − x0. ``eps`` given (the
    noise paired with each image, for reflow; flows only) is used instead of fresh noise, and ``t``
    given ((B,) flow times, for distillation; flows only) instead of drawn times.
    """
    state.check_consistent()
    check_diffusion(diffusion, schedule)
    is_flow = isinstance(diffusion, FlowConfig)
    if is_flow:
        check_flow_training(state.model, config)
    elif eps is not None or t is not None:
        raise ValueError("eps and t (noise paired with the images, fixed flow times) are for flow matching (reflow, distillation); a diffusion step draws its own")
    model, optimizer = state.model, state.optimizer
    rank, size = world()
    if x0.shape[0] % size:
        raise ValueError(f"the batch size ({x0.shape[0]}) must be divisible by the number of processes ({size})")
    if is_flow:
        t = draw_flow_times(x0.shape[0], config, state.generator, x0.device) if t is None else t
        check_flow_times(t, x0.shape[0], "t")  # reads the device only outside the trainer's validated loop
    else:
        t = draw_timesteps(x0.shape[0], schedule.T, config, state.generator, x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=state.generator)
    elif eps.shape != x0.shape:
        raise ValueError(f"eps must have x0's shape {tuple(x0.shape)}, got {tuple(eps.shape)}")
    if y is not None:  # its values are read here only when called by hand: train() checked its labels once, then steps inside validated()
        y = check_class_labels(y, x0.shape[0], num_classes_of(model), "y")
        y = drop_labels(y, num_classes_of(model), config.label_dropout, state.generator)
    mine = slice(rank * x0.shape[0] // size, (rank + 1) * x0.shape[0] // size)
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(state.step, config, state.progress)
    dtype = state.autocast_dtype
    with torch.autocast(state.device.type, dtype=dtype, enabled=dtype is not None):
        loss = _loss(model, x0[mine], schedule, t[mine], eps[mine], None if y is None else y[mine], config, diffusion)
    optimizer.zero_grad(set_to_none=True)
    state.in_step = True  # from here to the end of the step, an interrupt leaves the state half-updated
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        mean_loss = all_average(model, loss)
        state.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        state.scaler.step(optimizer)
        state.scaler.update()
    else:
        loss.backward()
        mean_loss = all_average(model, loss)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    state.ema.update(model)
    state.step += 1
    state.unrecorded.append(mean_loss.detach())
    state.in_step = False
    return mean_loss.detach()


@torch.no_grad()
def validation_loss(model: nn.Module, val_set: ImageSet, schedule: NoiseSchedule | None, config: TrainConfig, *, diffusion: DiffusionConfig | FlowConfig) -> float:
    """The loss on the first ``config.num_val_loss_images`` validation items with t and eps fixed by
    ``config.seed``, so that successive evaluations differ only because the model changed (a
    conditional model gets the true labels, none dropped); the network's output is read as
    ``diffusion.prediction``. For a flow (``diffusion`` a FlowConfig), t ~ U(0, 1) whatever the
    training draw, so runs with different timestep samplings are measured alike. Runs on the model's device."""
    check_diffusion(diffusion, schedule)
    device = next(model.parameters()).device
    x0 = val_set.images[: config.num_val_loss_images].to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    if isinstance(diffusion, FlowConfig):
        t = torch.rand((x0.shape[0],), device=device, generator=generator)
    else:
        t = torch.randint(0, schedule.T, (x0.shape[0],), device=device, generator=generator)
    eps = torch.randn(x0.shape, device=device, generator=generator)
    y = val_set.labels[: config.num_val_loss_images].to(device) if num_classes_of(model) is not None else None
    y = None if y is None else check_class_labels(y, x0.shape[0], num_classes_of(model), "val_set.labels")  # once per evaluation
    was_training = model.training
    model.eval()
    loss = _loss(model, x0, None if schedule is None else schedule.to(device), t, eps, y, config, diffusion)
    model.train(was_training)
    return float(loss)


def train(
    state: TrainState,
    train_set: ImageSet | Coupling | Segments,
    space: DataSpace,
    schedule: NoiseSchedule | None,
    config: TrainConfig,
    *,
    diffusion: DiffusionConfig | FlowConfig,
    num_steps: int | None = None,
    stop_at_seconds: float | None = None,
    val_set: ImageSet | None = None,
    checkpoint_path: str | None = None,
    on_eval: EvalCallback | None = None,
    eval_at_steps: Sequence[int] = (),
    eval_at_seconds: Sequence[float] = (),
    progress: bool = True,
) -> History:
    """Train until ``state.step`` reaches ``num_steps`` (default: the end of the run's plan), until
    ``stop_at_seconds`` of training are spent (summed over calls; the plan, and so the learning
    rate, is unchanged), or until the planned ``state.max_seconds`` are spent.

    ``train_set.images`` holds the items of ``space`` (images, or an autoencoder's scaled latents),
    checked once here; batches are drawn with replacement (held on the model's device). A
    conditional model (one with ``num_classes``) gets the batch's labels, see :func:`train_step`.
    ``diffusion`` (e.g. ``cfg.diffusion``) describes ``schedule`` and says what the network outputs.
    Every ``config.eval_every`` steps the validation loss is recorded; every
    ``config.checkpoint_every`` steps and at the end, the state is written atomically to
    ``checkpoint_path`` (if given). At each step of ``eval_at_steps`` and after the step at which
    the training time first reaches each of ``eval_at_seconds`` (points already passed are skipped),
    the losses are recorded, the validation loss computed and the checkpoint written, then
    ``on_eval(state)`` is called; its time is not training time. Calling again with a larger
    ``num_steps`` continues where the last call stopped. A run whose plan is complete (its steps
    taken or its seconds spent) takes no step: a further step would run at learning rate 0, so
    the call warns, changes nothing (no step, no checkpoint) and returns the history. An interrupt
    (Ctrl-C) keeps the losses of the steps taken; if it fell inside a step, the next call refuses
    the half-updated state and says to resume from the checkpoint.

    Flow matching trains through the same loop: ``diffusion=dh.FlowConfig()``, ``schedule=None``
    and a :class:`~ddpm_helpers.flow.VelocityNet` in the state (see :func:`train_step`). A
    :class:`~ddpm_helpers.flow.Coupling` as ``train_set`` fixes the noise of each image (reflow);
    :class:`~ddpm_helpers.flow.Segments` teach a student each piece of a teacher's trajectory in one
    Euler step (distillation; see :func:`~ddpm_helpers.flow.segments_as_coupling`).
    """
    state.check_consistent()
    check_diffusion(diffusion, schedule)
    if isinstance(train_set, Segments):  # distillation: the chords' lines, each read at its piece's start
        if not isinstance(diffusion, FlowConfig):
            raise ValueError("train_set is dh.Segments (pieces of a flow's trajectories, for distillation), which only a flow trains on; pass diffusion=dh.FlowConfig()")
        train_set, times = segments_as_coupling(train_set)
    else:
        check_data(train_set.images, space, "train_set.images")
        times = None
    noise = train_set.noise if isinstance(train_set, Coupling) else None
    if isinstance(diffusion, FlowConfig):
        check_flow_training(state.model, config)
    elif noise is not None:
        raise ValueError("train_set is a dh.Coupling (images with fixed noise, for reflow), which only a flow trains on; pass diffusion=dh.FlowConfig()")
    if noise is not None:
        if not isinstance(noise, torch.Tensor) or noise.shape != train_set.images.shape:
            raise ValueError(f"train_set.noise must have the images' shape {tuple(train_set.images.shape)}, got {tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__}")
        check_finite(noise, "train_set.noise")
    if num_steps is not None:
        check_positive_int(num_steps, "num_steps", minimum=0)
    if stop_at_seconds is not None:
        check_fraction(stop_at_seconds, "stop_at_seconds", high=float("inf"), include_low=False)
    steps_points, seconds_points = _check_points(eval_at_steps, "eval_at_steps", int), _check_points(eval_at_seconds, "eval_at_seconds", float)
    if (steps_points or seconds_points) and on_eval is None:
        raise ValueError("eval_at_steps or eval_at_seconds were given without on_eval: pass the callable to call there")
    if state.num_steps is None:  # a run planned by time: it ends when its time is spent
        target = float("inf") if num_steps is None else num_steps
    else:
        target = state.num_steps if num_steps is None else num_steps
        if target > state.num_steps:
            raise ValueError(f"num_steps ({num_steps}) is past the run's plan of {state.num_steps} steps, which its learning rate spans; plan a longer run")
    if state.plan_complete:
        warnings.warn(f"this run's plan of {state.describe_plan()} is complete: train() took no step (one more would run at learning rate 0) "
                      f"and wrote no checkpoint; to train further, start a run with a longer plan", stacklevel=2)
        return state.history
    device = state.device
    images = train_set.images.to(device)
    labels = train_set.labels.to(device) if num_classes_of(state.model) is not None else None
    labels = None if labels is None else check_class_labels(labels, images.shape[0], num_classes_of(state.model), "train_set.labels")  # once per call
    noise, times = (None if v is None else v.to(device) for v in (noise, times))
    schedule = None if schedule is None else schedule.to(device)
    is_main = world()[0] == 0  # under torchrun, only the first process writes and reports
    bar = tqdm(total=None if target == float("inf") else target, initial=state.step, disable=not (progress and is_main), desc="training", mininterval=2.0)
    clock = _Clock(state, stop_at_seconds, [p for p in steps_points if p > state.step], [p for p in seconds_points if p > state.elapsed])
    try:
        _loop(state, images, labels, noise, times, schedule, config, diffusion, target, val_set, checkpoint_path, on_eval, bar, clock, is_main)
    finally:  # also on Ctrl-C: the losses of the steps taken reach the history, none is lost
        bar.close()
        record_losses(state, checkpoint_path)
        state.elapsed = clock.now()
    return state.history


class _Clock:
    """The training time of a call of :func:`train` (callbacks excluded) and the points it stops or evaluates at."""

    def __init__(self, state: TrainState, stop_at_seconds: float | None, steps: list[int], seconds: list[float]) -> None:
        self.started = time.perf_counter() - state.elapsed
        self.stop = min(x for x in (state.max_seconds, stop_at_seconds, float("inf")) if x is not None)
        self.steps, self.seconds = steps, seconds

    def now(self) -> float:
        return time.perf_counter() - self.started

    def pause(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` without counting its time as training time."""
        start = time.perf_counter()
        try:
            callback()
        finally:
            self.started += time.perf_counter() - start

    def reached(self, state: TrainState) -> tuple[bool, bool]:
        """(out of time, at an evaluation point) after a step, agreed by every process."""
        at_point = bool(self.steps) and self.steps[0] == state.step
        while self.steps and self.steps[0] <= state.step:
            self.steps.pop(0)
        while self.seconds and any_process(state.elapsed >= self.seconds[0], state.device):
            self.seconds.pop(0)
            at_point = True
        out_of_time = self.stop != float("inf") and any_process(state.elapsed >= self.stop, state.device)
        return out_of_time, at_point


def _loop(state, images, labels, noise, times, schedule, config, diffusion, target, val_set, checkpoint_path, on_eval, bar, clock, is_main) -> None:
    """The body of :func:`train`: steps, validation losses, checkpoints and callbacks until the target or the time is reached."""
    device, history = state.device, state.history
    out_of_time = clock.stop != float("inf") and any_process(state.elapsed >= clock.stop, device)
    while state.step < target and not out_of_time:
        index = torch.randint(0, images.shape[0], (config.batch_size,), device=device, generator=state.generator)
        with validated():  # the labels were checked once by train()
            train_step(state, images[index], schedule, config, None if labels is None else labels[index], diffusion=diffusion,
                       eps=None if noise is None else noise[index], t=None if times is None else times[index])
        state.elapsed = clock.now()
        bar.update(1)
        out_of_time, at_point = clock.reached(state)
        at_end = state.step == target or out_of_time
        if state.step % config.eval_every == 0 or at_end or at_point:
            record_losses(state, checkpoint_path)
            if val_set is not None:
                history.val_steps.append(state.step)
                history.val_loss.append(validation_loss(state.model, val_set, schedule, config, diffusion=diffusion))
                history.val_wall_time.append(state.elapsed)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}")
        if checkpoint_path is not None and (state.step % config.checkpoint_every == 0 or at_end or at_point):
            record_losses(state, checkpoint_path)
            if is_main:
                save_checkpoint(checkpoint_path, state, diffusion, config)
        if at_point:
            clock.pause(lambda: on_eval(state))
