"""Checkpoints: one dict with a format version and the config, written atomically, loaded safely.

A checkpoint is written to ``<path>.tmp``, flushed to disk and then renamed over ``<path>``, so an
interrupted write never leaves a half-written checkpoint behind. Loading uses
``torch.load(weights_only=True)`` (no arbitrary code runs) and refuses a checkpoint whose
model-defining settings differ from the current configuration. Taught in: 04_training.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
from torch import nn

from .config import Config
from .training import History, TrainState, init_train_state

FORMAT_VERSION = 1
# Settings that change the network or the diffusion: a checkpoint must agree on all of them.
MODEL_FIELDS = (
    "image_size", "T", "schedule", "channels", "channel_mults", "num_res_blocks", "attention_resolutions",
    "patch_size", "downsample", "weight_standardization", "loss_type",
)


def save_checkpoint(path: str | os.PathLike, state: TrainState, config: Config) -> None:
    """Write ``state`` and ``config`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "step": state.step,
        "elapsed": state.elapsed,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "generator": state.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": dataclasses.asdict(state.history),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike, config: Config) -> dict:
    """The checkpoint's dict, after checking its format and that its config matches ``config``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, ...: all mean the same to the reader
        raise ValueError(f"checkpoint {path} is corrupt or not a ddpm_helpers checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {path} has format version {found!r}; this package reads version {FORMAT_VERSION}")
    saved = Config.from_dict(payload["config"])
    differences = [f"{name}: checkpoint {getattr(saved, name)!r} vs config {getattr(config, name)!r}" for name in MODEL_FIELDS if getattr(saved, name) != getattr(config, name)]
    if differences:
        raise ValueError(f"checkpoint {path} was written for another configuration (mode {saved.mode!r}): " + "; ".join(differences))
    return payload


def load_checkpoint(path: str | os.PathLike, model: nn.Module, config: Config, device: torch.device | str, *, mixed_precision: bool = True) -> TrainState:
    """Restore the :class:`TrainState` saved at ``path`` into ``model``, ready to continue training exactly."""
    payload = read_checkpoint(path, config)
    state = init_train_state(model, config, device, mixed_precision=mixed_precision)
    try:
        state.model.load_state_dict(payload["model"])
        state.ema.load_state_dict(payload["ema"])
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not fit this model: {error}") from error
    state.optimizer.load_state_dict(payload["optimizer"])
    if state.scaler is not None and payload["scaler"] is not None:
        state.scaler.load_state_dict(payload["scaler"])
    state.generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    state.step = int(payload["step"])
    state.elapsed = float(payload["elapsed"])
    state.history = History(**payload["history"])
    return state


def resume_or_init(path: str | os.PathLike, model: nn.Module, config: Config, device: torch.device | str) -> TrainState:
    """Continue from the checkpoint at ``path`` if one exists, else start fresh."""
    if Path(path).is_file():
        return load_checkpoint(path, model, config, device)
    return init_train_state(model, config, device)
