"""Models the book ships, so a chapter can load a trained model instead of training one.

Each model is two files in ``ddpm_helpers/weights/``: ``<name>.pt`` (EMA weights in half
precision, the network's own config, and the diffusion it was trained for) and ``<name>.json``,
its card: how it was trained (steps, wall time, device, images) and how good it is, plus the
SHA-256 of the weights file. Loading is safe (``weights_only=True``) and checked: the file must
have the bytes its card records, the kind its card names, and (when asked) the expected configs.
Taught in: 04_training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .autoencoder import Autoencoder, AutoencoderConfig
from .config import DiffusionConfig
from .unet import UNet, UNetConfig
from .weights import WEIGHTS_DIR, half_state_dict, load_float_state_dict, read_weights, write_atomic

#: The kinds of shipped networks, and how each is built from its saved config.
KINDS: dict[str, tuple[type, type]] = {"ddpm-unet": (UNet, UNetConfig), "autoencoder": (Autoencoder, AutoencoderConfig)}
_KIND_OF = {UNet: "ddpm-unet", Autoencoder: "autoencoder"}


class Pretrained(NamedTuple):
    """A shipped network (float32, eval mode) and the diffusion it was trained for (None for an autoencoder)."""

    model: nn.Module
    diffusion: DiffusionConfig | None


def save_pretrained(model: nn.Module, name: str, card: dict, *, diffusion: DiffusionConfig | None, directory: Path) -> Path:
    """Write ``<name>.pt`` (half-precision weights + configs) and ``<name>.json`` (the card, with the
    SHA-256 of the weights) into ``directory``; returns the .pt path. Publishing into the package's
    own ``WEIGHTS_DIR`` is a script step (``scripts/``), never a chapter's."""
    kind = _KIND_OF.get(type(model))
    if kind is None:
        raise ValueError(f"model must be one of {[c.__name__ for c in _KIND_OF]}, got {type(model).__name__}")
    if (kind == "ddpm-unet") != (diffusion is not None):
        raise ValueError(f"diffusion must be given for a diffusion network and None for an autoencoder, got {diffusion!r} for a {kind}")
    reserved = sorted({"name", "kind", "sha256"} & set(card))
    if reserved:
        raise ValueError(f"card must not set {reserved}: save_pretrained writes them itself")
    state = half_state_dict(model)
    path = Path(directory) / f"{name}.pt"
    payload = {"kind": kind, "config": model.config.to_dict(), "diffusion": None if diffusion is None else diffusion.to_dict(), "state_dict": state}
    sha256 = write_atomic(payload, path)
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps({"name": name, "kind": kind, **card, "sha256": sha256}, indent=2) + "\n")
    return path


def pretrained_card(name: str, directory: Path = WEIGHTS_DIR) -> dict:
    """The card of the shipped model ``name``."""
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        available = sorted(p.stem for p in Path(directory).glob("*.json") if p.with_suffix(".pt").is_file())
        raise FileNotFoundError(f"no pretrained model named {name!r}; available: {available}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"the card {path.name} of pretrained model {name!r} is not valid JSON ({error})") from error
    if not isinstance(card, dict) or card.get("kind") not in KINDS or "sha256" not in card:
        raise ValueError(f"the card {path.name} of pretrained model {name!r} must be a JSON object with a 'kind' in {sorted(KINDS)} and a 'sha256'")
    return card


def load_pretrained(
    name: str, *, device: torch.device | str = "cpu", unet: UNetConfig | None = None, diffusion: DiffusionConfig | None = None, directory: Path = WEIGHTS_DIR
) -> Pretrained:
    """The shipped model ``name`` in float32 eval mode on ``device``, and the diffusion it was trained for.

    The weights must have the SHA-256 and kind their card records. With ``unet`` or ``diffusion``
    given, the saved configs must equal them (else a ValueError names the differences), so a
    chapter cannot silently pair weights with the wrong network or schedule.
    """
    card = pretrained_card(name, directory)
    what = f"pretrained model {name!r}"
    payload = read_weights(Path(directory) / f"{name}.pt", what, sha256=card["sha256"])
    if payload.get("kind") != card["kind"]:
        raise ValueError(f"{what}: the weights are a {payload.get('kind')!r} but the card says {card['kind']!r}")
    network_class, config_class = KINDS[card["kind"]]
    config = config_class.from_dict(payload["config"])
    saved_diffusion = None if payload["diffusion"] is None else DiffusionConfig.from_dict(payload["diffusion"])
    differences = [
        f"{label}: weights {saved!r} vs asked {asked!r}"
        for label, saved, asked in (("network", config, unet), ("diffusion", saved_diffusion, diffusion))
        if asked is not None and saved != asked
    ]
    if differences:
        raise ValueError(f"{what} does not match this configuration: " + "; ".join(differences))
    model = load_float_state_dict(network_class(config), payload["state_dict"], what)
    return Pretrained(model.eval().to(device), saved_diffusion)
