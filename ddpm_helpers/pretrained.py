"""Models the book ships, so a chapter can load a trained model instead of training one.

Each model is two files in a folder (the shipped ones in ``ddpm_helpers/weights/``): ``<name>.pt``,
the EMA weights in half precision together with the model's *identity* (its name, kind, network
config, diffusion config with the prediction type, and for a latent model its latent scale and its
autoencoder's SHA-256), and ``<name>.json``, its :class:`~ddpm_helpers.cards.ModelCard`. Loading is
safe (``weights_only=True``) and checked: the weights must have the bytes the card records, their
own name, and the identity the card repeats (:func:`~ddpm_helpers.cards.read_model`).

A v-predicting network (``diffusion.prediction == "v"``) is loaded wrapped in
:class:`~ddpm_helpers.diffusion.EpsFromV`: every sampler, the ELBO and guidance read ε, and a bare
v-network handed to them would give wrong samples without any error. The raw network is
``model.model``. A flow-matching network (kind ``flow-unet``) is saved as its U-Net with its
:class:`~ddpm_helpers.flow.FlowConfig` in the identity's ``diffusion`` field, and loaded wrapped in
:class:`~ddpm_helpers.flow.VelocityNet`, so it answers only to the flow samplers. Taught in:
04_training (06_latent for latent models, 09_flow_matching for the flow).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .autoencoder import Autoencoder, AutoencoderConfig
from .cards import LatentLink, ModelCard, Provenance, read_card, read_model, write_card
from .classifier import MNISTClassifier
from .diffusion import EpsFromV
from .flow import FlowConfig, VelocityNet
from .latent import check_latent_model
from .schedules import DiffusionConfig, make_schedule
from .spaces import DataSpace
from .unet import UNet, UNetConfig
from .weights import WEIGHTS_DIR, half_state_dict, load_float_state_dict, write_atomic

#: The kinds of shipped networks: each kind's class and the config class it is built from (None: no config).
#: A flow-unet is a U-Net too; it is saved and loaded through its :class:`~ddpm_helpers.flow.VelocityNet` wrapper.
KINDS: dict[str, tuple[type, type | None]] = {"ddpm-unet": (UNet, UNetConfig), "flow-unet": (UNet, UNetConfig),
                                              "autoencoder": (Autoencoder, AutoencoderConfig), "mnist-classifier": (MNISTClassifier, None)}
_KIND_OF = {UNet: "ddpm-unet", VelocityNet: "flow-unet", Autoencoder: "autoencoder", MNISTClassifier: "mnist-classifier"}


#: The name of the shipped model for each data set and role (what a chapter's code asks for): MNIST's
#: models keep the book's first names, Fashion-MNIST's carry the prefix ``fashion_`` (10_fashion).
SHIPPED: dict[str, dict[str, str]] = {
    "mnist": {"unconditional": "unconditional", "conditional": "conditional", "latent": "latent", "autoencoder": "autoencoder"},
    "fashion-mnist": {"unconditional": "fashion_unconditional", "conditional": "fashion_conditional"},
}


def shipped_name(role: str, dataset: str = "mnist") -> str:
    """The name of the shipped model that plays ``role`` ("unconditional", "conditional", ...) for
    ``dataset`` (``cfg.data.dataset``), so that a chapter run on another data set by changing that one
    value loads that data set's model, never MNIST's silently: ``dh.load_pretrained(dh.shipped_name("unconditional", cfg.data.dataset))``."""
    if dataset not in SHIPPED:
        raise ValueError(f"dataset must be one of {list(SHIPPED)}, got {dataset!r}")
    roles = SHIPPED[dataset]
    if role not in roles:
        known = sorted({r for names in SHIPPED.values() for r in names})
        if role in known:
            raise ValueError(f"role: the book ships no {role!r} model for {dataset!r}; it ships {list(roles)} for it")
        raise ValueError(f"role must be one of {known}, got {role!r}")
    return roles[role]


class Pretrained(NamedTuple):
    """A shipped network (float32, eval mode; an ε-network, or a :class:`~ddpm_helpers.flow.VelocityNet`
    for a flow, see the module) and the process it was trained for: its diffusion, its
    :class:`~ddpm_helpers.flow.FlowConfig` for a flow, None for an autoencoder or the classifier."""

    model: nn.Module
    diffusion: DiffusionConfig | FlowConfig | None


class LatentModel(NamedTuple):
    """A latent diffusion model with the autoencoder it was trained with: sample z in ``space``, then
    x̂ = D(z / latent_scale) (06_latent). ``space`` is the autoencoder's latent shape with the range of
    the scaled training latents where the model records it (its sampler clips x̂0 to it), else none."""

    model: nn.Module
    diffusion: DiffusionConfig
    autoencoder: Autoencoder
    latent_scale: float
    space: DataSpace


def save_pretrained(
    model: nn.Module, name: str, *, directory: str | Path, diffusion: DiffusionConfig | FlowConfig | None, provenance: Provenance,
    quality: dict, train_config: dict | None, latent: LatentLink | None = None, notes: str = "",
) -> Path:
    """Write ``<name>.pt`` (half-precision weights + identity) and ``<name>.json`` (its card, with the
    SHA-256 of the weights) into ``directory``; returns the .pt path. The card is built here, so every
    card follows one schema. An :class:`EpsFromV` is saved as its v-network, with
    ``diffusion.prediction == "v"``; a :class:`~ddpm_helpers.flow.VelocityNet` as its network with
    ``diffusion`` its own :class:`~ddpm_helpers.flow.FlowConfig`. Publishing into the package's own ``WEIGHTS_DIR`` is
    ``scripts/publish_weights.py``'s step, never a chapter's."""
    if isinstance(model, EpsFromV):
        if diffusion is None or diffusion.prediction != "v":
            raise ValueError(f"an EpsFromV wraps a v-network, so diffusion.prediction must be 'v', got {diffusion!r}")
        model = model.model
    kind = _KIND_OF.get(type(model))
    if kind is None:
        raise ValueError(f"model must be one of {[c.__name__ for c in _KIND_OF]}, got {type(model).__name__}")
    if (kind in ("ddpm-unet", "flow-unet")) != (diffusion is not None):
        raise ValueError(f"diffusion must be given for a diffusion or flow network and None otherwise, got {diffusion!r} for a {kind}")
    if kind == "ddpm-unet" and not isinstance(diffusion, DiffusionConfig):
        raise ValueError(f"diffusion must be a dh.DiffusionConfig for a diffusion network, got {type(diffusion).__name__}")
    if kind == "flow-unet":
        if not isinstance(diffusion, FlowConfig) or diffusion != model.flow:
            raise ValueError(f"diffusion must be the flow network's own dh.FlowConfig ({model.flow!r}), got {diffusion!r}")
        if not isinstance(model.net, UNet):
            raise ValueError(f"model: a flow network is shipped as a dh.UNet inside its dh.VelocityNet, got a {type(model.net).__name__} inside")
        model = model.net
    network = model.config.to_dict() if hasattr(model, "config") else {}
    card = ModelCard(  # validates every field before anything is written
        name=name, kind=kind, sha256="0" * 64, network=network, diffusion=None if diffusion is None else diffusion.to_dict(),
        latent=latent, train_config=train_config, provenance=provenance, quality=quality, notes=notes,
    )
    state = half_state_dict(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    identity = card.identity()
    sha256 = write_atomic({"name": name, "kind": kind, "config": identity["network"], "diffusion": identity["diffusion"],
                           "latent": identity["latent"], "state_dict": state}, path)
    write_card(ModelCard(**{**card.__dict__, "sha256": sha256}), path.with_suffix(".json"))
    return path


def pretrained_card(name: str, directory: str | Path = WEIGHTS_DIR) -> ModelCard:
    """The card of the model ``name`` in ``directory`` (default: the shipped models)."""
    _check_exists(name, Path(directory))
    return read_card(Path(directory) / f"{name}.json", f"pretrained model {name!r}")


def _check_exists(name: str, directory: Path) -> None:
    if not isinstance(name, str) or not (directory / f"{name}.json").is_file():
        available = sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".pt").is_file())
        raise FileNotFoundError(f"no pretrained model named {name!r}; available: {available}")


def load_pretrained(
    name: str, *, device: torch.device | str = "cpu", unet: UNetConfig | None = None, diffusion: DiffusionConfig | FlowConfig | None = None,
    directory: str | Path = WEIGHTS_DIR,
) -> Pretrained:
    """The model ``name`` in float32 eval mode on ``device``, and the diffusion it was trained for.

    The weights must match their card (:func:`~ddpm_helpers.cards.read_model`). With ``unet`` or
    ``diffusion`` given, the saved configs must equal them (else a ValueError names the
    differences), so a chapter cannot silently pair weights with the wrong network or schedule.
    A v-network comes wrapped in :class:`EpsFromV`, a flow network in :class:`~ddpm_helpers.flow.VelocityNet` (see the module).
    """
    directory = Path(directory)
    _check_exists(name, directory)
    what = f"pretrained model {name!r}"
    card, payload = read_model(directory / f"{name}.pt", directory / f"{name}.json", name, what)
    network_class, config_class = KINDS[card.kind]
    config = None if config_class is None else config_class.from_dict(payload["config"])
    process = FlowConfig if card.kind == "flow-unet" else DiffusionConfig
    saved_diffusion = None if payload["diffusion"] is None else process.from_dict(payload["diffusion"])
    differences = [
        f"{label}: weights {saved!r} vs asked {asked!r}"
        for label, saved, asked in (("network", config, unet), ("diffusion", saved_diffusion, diffusion))
        if asked is not None and saved != asked
    ]
    if differences:
        raise ValueError(f"{what} does not match this configuration: " + "; ".join(differences))
    model = load_float_state_dict(network_class() if config is None else network_class(config), payload["state_dict"], what).eval().to(device)
    if card.kind == "flow-unet":
        model = VelocityNet(model, saved_diffusion).eval()
    elif saved_diffusion is not None and saved_diffusion.prediction == "v":
        model = EpsFromV(model, make_schedule(saved_diffusion.schedule, saved_diffusion.T).to(device)).eval()
    return Pretrained(model, saved_diffusion)


def load_latent_model(name: str = "latent", *, autoencoder: str | None = None, device: torch.device | str = "cpu", directory: str | Path = WEIGHTS_DIR) -> LatentModel:
    """The latent diffusion model ``name`` with its own autoencoder, both from ``directory``.

    The autoencoder is the one the latent model's weights name (or ``autoencoder``, if given); its
    weights file must have the SHA-256 the latent model records, so a latent model is never decoded
    through another autoencoder. Taught in: 06_latent.
    """
    model, diffusion = load_pretrained(name, device=device, directory=directory)
    link = pretrained_card(name, directory).latent
    if link is None:
        raise ValueError(f"name: {name!r} is not a latent diffusion model (its weights hold no latent scale or autoencoder); use dh.load_pretrained")
    autoencoder_name = link.autoencoder if autoencoder is None else autoencoder
    ae_card = pretrained_card(autoencoder_name, directory)
    if ae_card.sha256 != link.autoencoder_sha256:
        raise ValueError(
            f"autoencoder: the latent model {name!r} was trained with the autoencoder {link.autoencoder!r} whose weights have SHA-256 "
            f"{link.autoencoder_sha256[:12]}..., but {autoencoder_name!r} has {ae_card.sha256[:12]}...; decode it only through its own autoencoder"
        )
    ae, _ = load_pretrained(autoencoder_name, device=device, directory=directory)
    unet = model.model.config if isinstance(model, EpsFromV) else model.config
    check_latent_model(ae.config, unet.image_channels, unet.image_size)
    return LatentModel(model, diffusion, ae, link.scale, DataSpace(ae.config.latent_shape, link.value_range))
