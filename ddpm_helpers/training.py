"""Training: the step, the loop, and the state that a checkpoint captures.

The loop is resumable: everything that decides the next step (weights, EMA, optimizer and
loss-scaler state, the step count, the run's planned length and the random generator) lives in a
:class:`TrainState`, which :mod:`ddpm_helpers.checkpoint` writes atomically and restores exactly.
Taught in: 04_training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .checks import check_data, check_fraction, check_positive_int
from .config import TrainConfig
from .data import ImageSet
from .diffusion import DataSpace, ddpm_loss
from .ema import EMA
from .runtime import all_average, any_process, mixed_precision_dtype, world
from .schedules import DiffusionConfig, NoiseSchedule


@dataclass
class History:
    """Losses recorded during training: one train loss per step, a validation loss every ``eval_every``."""

    train_loss: list[float] = field(default_factory=list)  # train_loss[i] is the loss of step i + 1
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_wall_time: list[float] = field(default_factory=list)  # seconds of training when measured


@dataclass
class TrainState:
    """Everything that decides how training continues.

    The run's plan, ``num_steps`` or ``max_seconds``, is what the learning-rate schedule spans:
    a run planned by time cools down over the last part of its time budget.
    """

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator  # draws batches, timesteps and noise
    device: torch.device
    num_steps: int | None  # the run's planned length in steps ...
    max_seconds: float | None = None  # ... or in seconds of training
    mixed_precision: bool = True  # autocast on CUDA; ignored on the CPU
    in_step: bool = False  # True while train_step runs: still True afterwards only if a step was interrupted
    unrecorded: list = field(default_factory=list)  # losses of steps taken, not yet copied into history (one host sync per flush)
    step: int = 0
    elapsed: float = 0.0  # seconds spent in train(), summed over resumed runs
    history: History = field(default_factory=History)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 on CUDA where supported, fp16 on older GPUs (with loss scaling), none on the CPU."""
        if self.device.type != "cuda" or not self.mixed_precision:
            return None
        return torch.float16 if self.scaler is not None else torch.bfloat16

    @property
    def progress(self) -> float:
        """The share of the planned run that is done, in [0, 1]."""
        if self.max_seconds is not None:
            return min(1.0, self.elapsed / self.max_seconds)
        return min(1.0, self.step / self.num_steps)


def init_train_state(
    model: nn.Module, config: TrainConfig, *, num_steps: int | None = None, max_seconds: float | None = None, mixed_precision: bool = True
) -> TrainState:
    """A fresh :class:`TrainState` that trains ``model`` in place, on the device the model is on.

    The run is planned by ``num_steps`` (default ``config.num_train_steps``) or, for a run on a
    time budget, by ``max_seconds``; the learning-rate schedule spans that plan. The model's
    memory format becomes channels-last when ``config.channels_last`` (same numbers, faster on a
    CPU). The generator is seeded by ``config.seed``. Mixed precision applies on CUDA only: bf16
    where the GPU computes it natively, else fp16 with a GradScaler (see
    :func:`ddpm_helpers.runtime.mixed_precision_dtype`). To continue a run, use
    :func:`ddpm_helpers.checkpoint.load_checkpoint`.
    """
    if num_steps is not None and max_seconds is not None:
        raise ValueError("plan the run by num_steps or by max_seconds, not both")
    if max_seconds is not None:
        check_fraction(max_seconds, "max_seconds", high=float("inf"), include_low=False)
    else:
        num_steps = config.num_train_steps if num_steps is None else num_steps
        check_positive_int(num_steps, "num_steps")
    device = next(model.parameters()).device
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    use_fp16 = mixed_precision and mixed_precision_dtype(device) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None
    generator = torch.Generator(device=device).manual_seed(config.seed)
    return TrainState(model, EMA(model, config.ema_decay), optimizer, scaler, generator, device, num_steps, max_seconds, mixed_precision)


def learning_rate(step: int, config: TrainConfig, progress: float) -> float:
    """The learning rate of step ``step`` (0-based) when a share ``progress`` of the run is done:
    linear warm-up over ``config.warmup_steps``, constant ``config.lr``, then a linear cool-down to 0
    over the last ``config.lr_cooldown_fraction`` of the run. For a run of N steps, progress = step/N,
    so the last step uses lr / (N · lr_cooldown_fraction)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    cool = 1.0
    if config.lr_cooldown_fraction:
        cool = min(1.0, max(0.0, (1.0 - progress) / config.lr_cooldown_fraction))
    return config.lr * min(warm, cool)


def loss_options(config: TrainConfig, diffusion: DiffusionConfig) -> dict:
    """The keyword arguments of :func:`~ddpm_helpers.diffusion.ddpm_loss` that the run decides: the
    loss from ``config``, what the network outputs from ``diffusion.prediction``."""
    return {"loss_type": config.loss_type, "prediction": diffusion.prediction, "weighting": config.loss_weighting, "min_snr_gamma": config.min_snr_gamma}


def check_diffusion(diffusion: DiffusionConfig, schedule: NoiseSchedule) -> None:
    """``diffusion`` must be a :class:`DiffusionConfig` that describes ``schedule`` (same name and T)."""
    if not isinstance(diffusion, DiffusionConfig):
        raise ValueError(f"diffusion must be a dh.DiffusionConfig (e.g. cfg.diffusion), got {type(diffusion).__name__}")
    if (schedule.name, schedule.T) != (diffusion.schedule, diffusion.T):
        raise ValueError(f"schedule ({schedule.name!r}, T={schedule.T}) must be the one diffusion describes ({diffusion.schedule!r}, T={diffusion.T}); "
                         f"build it with dh.make_schedule(diffusion.schedule, diffusion.T)")


def num_classes_of(model: nn.Module) -> int | None:
    """The number of classes of a conditional model (its null class has this index), else None."""
    return getattr(model, "num_classes", None)


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


def train_step(
    state: TrainState, x0: torch.Tensor, schedule: NoiseSchedule, config: TrainConfig, y: torch.Tensor | None = None, *, diffusion: DiffusionConfig
) -> torch.Tensor:
    """One optimisation step on the batch ``x0``; returns the batch's mean loss, detached.

    Draw t and eps for the whole batch → this process's slice of it → loss → backward (scaled
    under fp16) → average gradients over processes → clip the gradient norm → AdamW → EMA.
    With labels ``y`` (a conditional model), a share ``config.label_dropout`` of them is first
    replaced by the null class, drawn after t and eps from the same generator.
    Under torchrun every process passes the same global batch and generator state and trains on
    its own contiguous slice, so W processes compute exactly the step of one process; alone, the
    slice is the whole batch. The network learns to output ``diffusion.prediction`` (eps or v).
    """
    _check_consistent(state)
    check_diffusion(diffusion, schedule)
    model, optimizer = state.model, state.optimizer
    rank, size = world()
    if x0.shape[0] % size:
        raise ValueError(f"the batch size ({x0.shape[0]}) must be divisible by the number of processes ({size})")
    t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device, generator=state.generator)
    eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=state.generator)
    if y is not None:
        num_classes = num_classes_of(model)
        if num_classes is None:
            raise ValueError("labels y were given but the model is unconditional (it has no num_classes)")
        y = drop_labels(y, num_classes, config.label_dropout, state.generator)
    mine = slice(rank * x0.shape[0] // size, (rank + 1) * x0.shape[0] // size)
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(state.step, config, state.progress)
    dtype = state.autocast_dtype
    with torch.autocast(state.device.type, dtype=dtype, enabled=dtype is not None):
        loss = ddpm_loss(model, x0[mine], schedule, t=t[mine], eps=eps[mine], y=None if y is None else y[mine], **loss_options(config, diffusion))
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


def _check_consistent(state: TrainState) -> None:
    if state.in_step:
        raise RuntimeError(
            f"this training state was interrupted in the middle of step {state.step + 1} (e.g. by Ctrl-C): its weights, "
            f"optimizer and EMA may hold part of that step, so continuing would silently differ from an uninterrupted run. "
            f"Resume from the last checkpoint instead (dh.load_checkpoint or dh.resume_or_init)"
        )


@torch.no_grad()
def validation_loss(model: nn.Module, val_set: ImageSet, schedule: NoiseSchedule, config: TrainConfig, *, diffusion: DiffusionConfig) -> float:
    """The loss on the first ``config.num_val_loss_images`` validation items with t and eps fixed by
    ``config.seed``, so that successive evaluations differ only because the model changed (a
    conditional model gets the true labels, none dropped); the network's output is read as
    ``diffusion.prediction``. Runs on the model's device."""
    check_diffusion(diffusion, schedule)
    device = next(model.parameters()).device
    x0 = val_set.images[: config.num_val_loss_images].to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    t = torch.randint(0, schedule.T, (x0.shape[0],), device=device, generator=generator)
    eps = torch.randn(x0.shape, device=device, generator=generator)
    y = val_set.labels[: config.num_val_loss_images].to(device) if num_classes_of(model) is not None else None
    was_training = model.training
    model.eval()
    loss = ddpm_loss(model, x0, schedule.to(device), t=t, eps=eps, y=y, **loss_options(config, diffusion))
    model.train(was_training)
    return float(loss)


def record_losses(state: TrainState, checkpoint_path: str | None = None) -> None:
    """Move the losses of the steps taken into ``state.history`` (one host sync), so that
    ``history.train_loss[i]`` is the loss of step i + 1; stop at a non-finite one."""
    history, pending = state.history, state.unrecorded
    if not pending:
        return
    losses = torch.stack(pending).tolist()
    pending.clear()
    first = len(history.train_loss)
    history.train_loss.extend(losses)
    bad = next((i for i, value in enumerate(losses) if not math.isfinite(value)), None)
    if bad is not None:
        kept = f"the checkpoint at {checkpoint_path} holds the last good state" if checkpoint_path else "no checkpoint was written"
        raise FloatingPointError(
            f"the training loss became non-finite ({losses[bad]}) at step {first + bad + 1}; training stopped and {kept}. "
            f"Check the data and the learning rate, then resume from the checkpoint."
        )


def train(
    state: TrainState,
    train_set: ImageSet,
    space: DataSpace,
    schedule: NoiseSchedule,
    config: TrainConfig,
    *,
    diffusion: DiffusionConfig,
    num_steps: int | None = None,
    val_set: ImageSet | None = None,
    checkpoint_path: str | None = None,
    progress: bool = True,
) -> History:
    """Train until ``state.step`` reaches ``num_steps`` (default: the end of the run's plan), or
    until the planned ``state.max_seconds`` of training are spent.

    ``train_set.images`` holds the items of ``space`` (images, or an autoencoder's scaled latents),
    checked once here; batches are drawn with replacement (held on the model's device). A
    conditional model (one with ``num_classes``) gets the batch's labels, see :func:`train_step`.
    ``diffusion`` (e.g. ``cfg.diffusion``) describes ``schedule`` and says what the network outputs.
    Every ``config.eval_every`` steps the validation loss is recorded; every
    ``config.checkpoint_every`` steps and at the end, the state is written atomically to
    ``checkpoint_path`` (if given). Calling again with a larger ``num_steps`` continues where the
    last call stopped. An interrupt (Ctrl-C) keeps the losses of the steps taken; if it fell inside
    a step, the next call refuses the half-updated state and says to resume from the checkpoint.
    """
    _check_consistent(state)
    check_diffusion(diffusion, schedule)
    check_data(train_set.images, space, "train_set.images")
    if num_steps is not None:
        check_positive_int(num_steps, "num_steps", minimum=0)
    if state.num_steps is None:  # a run planned by time: it ends when its time is spent
        target = float("inf") if num_steps is None else num_steps
    else:
        target = state.num_steps if num_steps is None else num_steps
        if target > state.num_steps:
            raise ValueError(f"num_steps ({num_steps}) is past the run's plan of {state.num_steps} steps, which its learning rate spans; plan a longer run")
    device = state.device
    images = train_set.images.to(device)
    labels = train_set.labels.to(device) if num_classes_of(state.model) is not None else None
    schedule = schedule.to(device)
    is_main = world()[0] == 0  # under torchrun, only the first process writes and reports
    bar = tqdm(total=None if target == float("inf") else target, initial=state.step, disable=not (progress and is_main), desc="training", mininterval=2.0)
    started = time.perf_counter() - state.elapsed
    try:
        _loop(state, images, labels, schedule, config, diffusion, target, val_set, checkpoint_path, bar, started, is_main)
    finally:  # also on Ctrl-C: the losses of the steps taken reach the history, none is lost
        bar.close()
        record_losses(state, checkpoint_path)
        state.elapsed = time.perf_counter() - started
    return state.history


def _loop(state, images, labels, schedule, config, diffusion, target, val_set, checkpoint_path, bar, started, is_main) -> None:
    """The body of :func:`train`: steps, validation losses and checkpoints until the target or the time is reached."""
    from .checkpoint import save_checkpoint

    device, history = state.device, state.history
    out_of_time = False
    while state.step < target and not out_of_time:
        index = torch.randint(0, images.shape[0], (config.batch_size,), device=device, generator=state.generator)
        train_step(state, images[index], schedule, config, None if labels is None else labels[index], diffusion=diffusion)
        state.elapsed = time.perf_counter() - started
        bar.update(1)
        if state.max_seconds is not None:
            out_of_time = any_process(state.elapsed >= state.max_seconds, device)
        at_end = state.step == target or out_of_time
        if state.step % config.eval_every == 0 or at_end:
            record_losses(state, checkpoint_path)
            if val_set is not None:
                history.val_steps.append(state.step)
                history.val_loss.append(validation_loss(state.model, val_set, schedule, config, diffusion=diffusion))
                history.val_wall_time.append(state.elapsed)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}")
        if checkpoint_path is not None and (state.step % config.checkpoint_every == 0 or at_end):
            record_losses(state, checkpoint_path)
            if is_main:
                save_checkpoint(checkpoint_path, state, diffusion, config)
