"""Checkpoints: the whole training state in one file, written atomically, restored exactly.

A checkpoint holds the network's own config, the diffusion it was trained for (schedule name
and T) and the loss, and refuses to load into anything else. Loading restores the state only: it
sets no global random state. Taught in: 04_training.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from .config import TrainConfig
from .schedules import NoiseSchedule
from .training import History, TrainState, init_train_state, record_losses
from .weights import read_weights, write_atomic


def _identity(model: nn.Module, schedule: NoiseSchedule, config: TrainConfig) -> dict:
    """What a checkpoint must agree on: the network's config, the diffusion and the loss."""
    network = model.config.to_dict() if hasattr(model, "config") else {"class": type(model).__name__}
    return {"network": network, "schedule": schedule.name, "T": schedule.T, "loss_type": config.loss_type,
            "prediction": config.prediction, "loss_weighting": config.loss_weighting, "min_snr_gamma": config.min_snr_gamma}


def save_checkpoint(path: str | os.PathLike, state: TrainState, schedule: NoiseSchedule, config: TrainConfig) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename). The losses of steps
    taken since the last record go into its history first; a state interrupted inside a step is refused."""
    if state.in_step:
        raise RuntimeError(f"this training state was interrupted in the middle of step {state.step + 1}; saving it would store a half-updated step")
    record_losses(state, os.fspath(path))
    write_atomic(
        {
            "identity": _identity(state.model, schedule, config),
            "train_config": config.to_dict(),
            "step": state.step,
            "elapsed": state.elapsed,
            "num_steps": state.num_steps,
            "max_seconds": state.max_seconds,
            "model": state.model.state_dict(),
            "ema": state.ema.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler is not None else None,
            "generator": state.generator.get_state(),
            "history": dataclasses.asdict(state.history),
        },
        path,
    )


def read_checkpoint(path: str | os.PathLike, model: nn.Module, schedule: NoiseSchedule, config: TrainConfig) -> dict:
    """The checkpoint's dict, after checking its format and that it belongs to this network,
    schedule and loss (a ValueError names every difference)."""
    payload = read_weights(path, "checkpoint")
    saved, current = payload["identity"], _identity(model, schedule, config)
    differences = [f"{key}: checkpoint {saved.get(key)!r} vs now {current[key]!r}" for key in current if saved.get(key) != current[key]]
    if differences:
        raise ValueError(f"checkpoint {path} was written for another network, schedule or loss: " + "; ".join(differences))
    return payload


def load_checkpoint(path: str | os.PathLike, model: nn.Module, schedule: NoiseSchedule, config: TrainConfig, *, mixed_precision: bool = True) -> TrainState:
    """Restore the :class:`TrainState` saved at ``path`` into ``model`` (on its device), ready to
    continue training exactly."""
    payload = read_checkpoint(path, model, schedule, config)
    state = init_train_state(model, config, num_steps=payload["num_steps"], max_seconds=payload["max_seconds"], mixed_precision=mixed_precision)
    state.model.load_state_dict(payload["model"])
    state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    if state.scaler is not None and payload["scaler"] is not None:
        state.scaler.load_state_dict(payload["scaler"])
    state.generator.set_state(payload["generator"])
    state.step = int(payload["step"])
    state.elapsed = float(payload["elapsed"])
    state.history = History(**payload["history"])
    return state


def resume_or_init(
    path: str | os.PathLike, model: nn.Module, schedule: NoiseSchedule, config: TrainConfig, *, num_steps: int | None = None, max_seconds: float | None = None
) -> TrainState:
    """Continue from the checkpoint at ``path`` if the file exists, else start a fresh run with this plan.

    A plan given here (``num_steps`` or ``max_seconds``) must be the checkpoint's own: the learning
    rate of a resumed run follows the plan it started with.
    """
    if os.path.isdir(path):
        raise ValueError(f"path must name a checkpoint file, got the directory {path}")
    if not os.path.isfile(path):
        return init_train_state(model, config, num_steps=num_steps, max_seconds=max_seconds)
    state = load_checkpoint(path, model, schedule, config)
    asked = (config.num_train_steps if num_steps is None and max_seconds is None else num_steps, max_seconds)
    if asked != (state.num_steps, state.max_seconds):
        raise ValueError(
            f"the checkpoint at {path} plans num_steps={state.num_steps}, max_seconds={state.max_seconds}, "
            f"but num_steps={asked[0]}, max_seconds={asked[1]} was asked; resume with the checkpoint's plan or start a new run"
        )
    return state

