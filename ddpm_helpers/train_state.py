"""What a training run is: its settings (:class:`TrainConfig`), the learning-rate plan, and the state
that decides how it continues (:class:`TrainState`), which knows its own ``state_dict``.

The loop that moves the state is :mod:`ddpm_helpers.training`; :mod:`ddpm_helpers.checkpoint`
writes ``state.state_dict()`` atomically and restores it exactly. Taught in: 04_training.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .checks import ConfigMixin, check_choice, check_fraction, check_positive_int
from .diffusion import LOSS_TYPES, LOSS_WEIGHTINGS
from .ema import EMA
from .runtime import mixed_precision_dtype


TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    """How a diffusion model is trained (chosen for time to quality on two CPU cores; see 04_training).
    What the network outputs (eps or v) belongs to the diffusion: ``DiffusionConfig.prediction``."""

    batch_size: int = 64
    num_train_steps: int = 12_000  # a plan between min-SNR-γ + cosine's 8,458-step judgement and the previous recipe's 18,000 (benchmarks/results/recipe-cpu.md); chapter 4 checks it against its measurement
    lr: float = 2e-3
    warmup_steps: int = 50
    lr_cooldown_fraction: float = 1 / 3  # the learning rate falls linearly to 0 over this share of the run
    channels_last: bool = True  # NHWC memory format: about 16% more images/s on a CPU
    ema_decay: float = 0.995
    grad_clip: float = 1.0  # the largest gradient norm
    loss_type: str = "l2"
    loss_weighting: str = "min_snr"  # min(SNR, gamma) / SNR per timestep (diffusion.loss_weights; Hang et al. 2023), or "uniform" (Ho et al.)
    min_snr_gamma: float = 5.0
    timestep_sampling: str = "uniform"  # or "logit_normal": t = ⌊T·sigmoid(ζ)⌋, ζ ~ N(μ_ζ, σ_ζ²) (Esser et al. 2024)
    timestep_logit_mean: float = 0.0  # μ_ζ: where the logit-normal draws centre (0: the middle of the chain)
    timestep_logit_std: float = 1.0  # σ_ζ: how widely they spread
    label_dropout: float = 0.1  # conditional models: share of labels replaced by the null class
    eval_every: int = 250
    checkpoint_every: int = 500
    num_val_loss_images: int = 256  # validation images behind the validation loss
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_train_steps", "eval_every", "checkpoint_every", "num_val_loss_images"):
            check_positive_int(getattr(self, name), f"train.{name}")
        check_positive_int(self.warmup_steps, "train.warmup_steps", minimum=0)
        check_positive_int(self.seed, "train.seed", minimum=0)
        check_fraction(self.lr, "train.lr", low=0.0, high=float("inf"), include_low=False)
        check_fraction(self.lr_cooldown_fraction, "train.lr_cooldown_fraction")
        check_fraction(self.ema_decay, "train.ema_decay", include_high=False)
        check_fraction(self.grad_clip, "train.grad_clip", low=0.0, high=float("inf"), include_low=False)
        check_fraction(self.label_dropout, "train.label_dropout", include_high=False)
        check_choice(self.loss_type, LOSS_TYPES, "train.loss_type")
        check_choice(self.loss_weighting, LOSS_WEIGHTINGS, "train.loss_weighting")
        check_fraction(self.min_snr_gamma, "train.min_snr_gamma", low=0.0, high=float("inf"), include_low=False)
        check_choice(self.timestep_sampling, TIMESTEP_SAMPLINGS, "train.timestep_sampling")
        check_fraction(self.timestep_logit_mean, "train.timestep_logit_mean", low=-float("inf"), high=float("inf"))
        check_fraction(self.timestep_logit_std, "train.timestep_logit_std", low=0.0, high=float("inf"), include_low=False)
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"train.channels_last must be True or False, got {self.channels_last!r}")


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

    @property
    def plan_complete(self) -> bool:
        """True once the planned steps are taken or the planned seconds spent: a further step would
        run at learning rate 0, so :func:`~ddpm_helpers.training.train` takes none."""
        return self.progress >= 1.0

    def describe_plan(self) -> str:
        """The plan in words, e.g. '600 s of training (612.3 s done)' or '4 steps (4 done)'."""
        if self.max_seconds is not None:
            return f"{self.max_seconds:g} s of training ({self.elapsed:.1f} s done)"
        return f"{self.num_steps} steps ({self.step} done)"

    def check_consistent(self) -> None:
        """Refuse a state left half-updated by an interrupt inside a step."""
        if self.in_step:
            raise RuntimeError(
                f"this training state was interrupted in the middle of step {self.step + 1} (e.g. by Ctrl-C): its weights, "
                f"optimizer and EMA may hold part of that step, so continuing would silently differ from an uninterrupted run. "
                f"Resume from the last checkpoint instead (dh.load_checkpoint or dh.resume_or_init)"
            )

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and primitives (loadable with ``weights_only``):
        weights, EMA, optimizer, loss scaler, generator, step, training time, plan and history.
        The losses of steps taken since the last record go into the history first."""
        self.check_consistent()
        record_losses(self)
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "num_steps": self.num_steps,
            "max_seconds": self.max_seconds,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generator": self.generator.get_state(),
            "history": dataclasses.asdict(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved, in place (the model stays on its device)."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # torch would share the moment tensors with `state`
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.num_steps, self.max_seconds = state["num_steps"], state["max_seconds"]
        self.history = History(**state["history"])
        self.unrecorded.clear()


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
