"""Weights the book ships, so a chapter can load a trained model instead of training one.

Each model is two files in ``ddpm_helpers/weights/``: ``<name>.pt`` (the EMA weights in half
precision, with the config they belong to) and ``<name>.json``, its card: how it was trained
(steps, wall time, device) and how good it is (FID with its sample count and floor, the share of
samples the classifier recognises). Loading is safe (``weights_only=True``) and checked: weights
whose config disagrees with the one asked for are refused. Taught in: 04_training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .checkpoint import MODEL_FIELDS
from .config import Config
from .unet import UNet, make_unet

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
FORMAT_VERSION = 1
KIND = "ddpm-unet"  # marks the cards of diffusion models (the classifier's card lives beside them)


def save_pretrained(model: nn.Module, config: Config, card: dict, name: str, directory: Path = WEIGHTS_DIR) -> Path:
    """Write ``<name>.pt`` (half-precision weights + config) and ``<name>.json`` (the card); returns the .pt path."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    path = directory / f"{name}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, "config": config.to_dict(), "num_classes": getattr(model, "num_classes", None), "state_dict": state}, tmp)
    tmp.replace(path)
    (directory / f"{name}.json").write_text(json.dumps({"name": name, "kind": KIND, **card}, indent=2) + "\n")
    return path


def pretrained_card(name: str, directory: Path = WEIGHTS_DIR) -> dict:
    """The card of the shipped model ``name``."""
    path = directory / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.json") if json.loads(p.read_text()).get("kind") == KIND)
        raise FileNotFoundError(f"no pretrained model named {name!r}; available: {available}")
    return json.loads(path.read_text())


def load_pretrained(name: str, config: Config | None = None, device: torch.device | str = "cpu", directory: Path = WEIGHTS_DIR) -> tuple[UNet, Config]:
    """The shipped model ``name`` in float32 eval mode on ``device``, and the config it was trained with.

    With ``config`` given, its model-defining fields must match the weights' (else a ValueError
    names the differences), so a chapter cannot silently pair weights with the wrong schedule.
    """
    path = directory / f"{name}.pt"
    if not path.is_file():
        pretrained_card(name, directory)  # raises with the list of available names
        raise FileNotFoundError(f"{path} is missing although its card exists")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved = Config.from_dict(payload["config"])
    except Exception as error:
        raise ValueError(f"pretrained weights {path} are corrupt ({type(error).__name__}: {error})") from error
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"pretrained weights {path} have format version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    if config is not None:
        differences = [f"{f}: weights {getattr(saved, f)!r} vs config {getattr(config, f)!r}" for f in MODEL_FIELDS if getattr(saved, f) != getattr(config, f)]
        if differences:
            raise ValueError(f"pretrained model {name!r} does not match this configuration: " + "; ".join(differences))
    model = make_unet(saved, num_classes=payload.get("num_classes"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    return model.eval().to(device), saved
