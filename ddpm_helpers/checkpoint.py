"""Checkpoints: the whole training state in one file, written atomically, restored exactly.

A checkpoint holds the network's own config, the diffusion it was trained for (its
:class:`~ddpm_helpers.schedules.DiffusionConfig`: schedule, T and what the network outputs) and the
loss, and refuses to load into anything else. Loading restores the state only: it
sets no global random state. The state serialises itself (:meth:`TrainState.state_dict`), so this
module imports nothing above it; the loop in :mod:`ddpm_helpers.training` calls it. Taught in: 04_training.
"""

from __future__ import annotations

import os

from torch import nn

from .flow import FlowConfig
from .schedules import DiffusionConfig
from .train_state import TrainConfig, TrainState, init_train_state, record_losses
from .weights import read_weights, write_atomic


def _identity(model: nn.Module, diffusion: DiffusionConfig | FlowConfig, config: TrainConfig) -> dict:
    """What a checkpoint must agree on: the network's config, the diffusion (with the prediction) and the loss.
    A flow model records its :class:`~ddpm_helpers.flow.FlowConfig` under ``flow`` instead of ``diffusion``,
    so neither kind of checkpoint restores into the other (the difference names both fields)."""
    if isinstance(diffusion, FlowConfig):
        network = model.config.to_dict() if hasattr(model, "config") else {"class": type(model).__name__}
        return {"network": network, "flow": diffusion.to_dict(), "loss_type": config.loss_type}
    if not isinstance(diffusion, DiffusionConfig):
        raise ValueError(f"diffusion must be a dh.DiffusionConfig (e.g. cfg.diffusion), got {type(diffusion).__name__} (for flow matching: a dh.FlowConfig)")
    network = model.config.to_dict() if hasattr(model, "config") else {"class": type(model).__name__}
    return {"network": network, "diffusion": diffusion.to_dict(), "loss_type": config.loss_type,
            "loss_weighting": config.loss_weighting, "min_snr_gamma": config.min_snr_gamma}


def _saved_identity(identity: dict) -> dict:
    """A checkpoint's identity in today's form: checkpoints written before the prediction moved into
    the diffusion config name the schedule, T and prediction separately."""
    if "diffusion" in identity or "schedule" not in identity:
        return identity
    rest = {key: value for key, value in identity.items() if key not in ("schedule", "T", "prediction")}
    return {**rest, "diffusion": {"T": identity["T"], "schedule": identity["schedule"], "prediction": identity.get("prediction", "eps")}}


def _flat(identity: dict) -> dict:
    """The identity with the diffusion's (or flow's) fields as ``diffusion.<field>``, so a difference names the field."""
    rest = {key: value for key, value in identity.items() if key not in ("diffusion", "flow")}
    nested = {f"{part}.{key}": value for part in ("diffusion", "flow") for key, value in identity.get(part, {}).items()}
    return {**rest, **nested}


def save_checkpoint(path: str | os.PathLike, state: TrainState, diffusion: DiffusionConfig, config: TrainConfig) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename). The losses of steps
    taken since the last record go into its history first; a state interrupted inside a step is refused."""
    if state.in_step:
        raise RuntimeError(f"this training state was interrupted in the middle of step {state.step + 1}; saving it would store a half-updated step")
    record_losses(state, os.fspath(path))
    write_atomic({"identity": _identity(state.model, diffusion, config), "train_config": config.to_dict(), **state.state_dict()}, path)


def read_checkpoint(path: str | os.PathLike, model: nn.Module, diffusion: DiffusionConfig, config: TrainConfig) -> dict:
    """The checkpoint's dict, after checking its format and that it belongs to this network,
    diffusion (schedule, T, prediction) and loss (a ValueError names every difference)."""
    current = _identity(model, diffusion, config)
    payload = read_weights(path, "checkpoint")
    saved, current = _flat(_saved_identity(payload["identity"])), _flat(current)
    differences = [f"{key}: checkpoint {saved.get(key)!r} vs now {current[key]!r}" for key in current if saved.get(key) != current[key]]
    if differences:
        raise ValueError(f"checkpoint {path} was written for another network, diffusion or loss: " + "; ".join(differences))
    return payload


def load_checkpoint(path: str | os.PathLike, model: nn.Module, diffusion: DiffusionConfig, config: TrainConfig, *, mixed_precision: bool = True) -> TrainState:
    """Restore the :class:`TrainState` saved at ``path`` into ``model`` (on its device), ready to
    continue training exactly."""
    payload = read_checkpoint(path, model, diffusion, config)
    state = init_train_state(model, config, num_steps=payload["num_steps"], max_seconds=payload["max_seconds"], mixed_precision=mixed_precision)
    state.load_state_dict(payload)
    return state


def resume_or_init(
    path: str | os.PathLike, model: nn.Module, diffusion: DiffusionConfig, config: TrainConfig, *, num_steps: int | None = None, max_seconds: float | None = None
) -> TrainState:
    """Continue from the checkpoint at ``path`` if the file exists, else start a fresh run with this plan.

    A plan given here (``num_steps`` or ``max_seconds``) must be the checkpoint's own: the learning
    rate of a resumed run follows the plan it started with.
    """
    _identity(model, diffusion, config)  # a wrong argument is refused whether or not the file exists
    if os.path.isdir(path):
        raise ValueError(f"path must name a checkpoint file, got the directory {path}")
    if not os.path.isfile(path):
        return init_train_state(model, config, num_steps=num_steps, max_seconds=max_seconds)
    state = load_checkpoint(path, model, diffusion, config)
    asked = (config.num_train_steps if num_steps is None and max_seconds is None else num_steps, max_seconds)
    if asked != (state.num_steps, state.max_seconds):
        raise ValueError(
            f"the checkpoint at {path} plans num_steps={state.num_steps}, max_seconds={state.max_seconds}, "
            f"but num_steps={asked[0]}, max_seconds={asked[1]} was asked; resume with the checkpoint's plan or start a new run"
        )
    return state

