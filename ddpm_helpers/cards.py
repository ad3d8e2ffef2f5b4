"""One card schema for every shipped model, bound to the checksummed weights it describes.

A shipped model is two files: ``<name>.pt`` (written by :func:`~ddpm_helpers.weights.write_atomic`,
with its content digest) and ``<name>.json``, its :class:`ModelCard`. What the model needs to work
lives inside the weights (its *identity*: name, kind, network config, diffusion config with the
prediction type, and for a latent model its latent scale and its autoencoder's SHA-256); the card
repeats the identity so a reader sees it, and :func:`read_model` refuses a card that disagrees with
the weights on any of it, naming the field. The rest of the card is what the weights cannot say:
how the model was trained (``train_config``, :class:`Provenance`) and how good it is (``quality``:
metric → :class:`Measure`). A fact nobody recorded is None, and ``notes`` says so.

Cards are written like the weights: to a temporary file, flushed to disk, renamed into place.
Taught in: 04_training.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .train_state import TrainConfig
from .weights import read_weights

CARD_VERSION = 1
KINDS = ("ddpm-unet", "flow-unet", "autoencoder", "mnist-classifier")
#: The kinds whose identity holds the process they were trained for: a diffusion's
#: :class:`~ddpm_helpers.schedules.DiffusionConfig` or a flow's :class:`~ddpm_helpers.flow.FlowConfig`.
PROCESS_KINDS = ("ddpm-unet", "flow-unet")
#: The training settings a card's ``train_config`` may hold, per kind: the fields of
#: :class:`~ddpm_helpers.train_state.TrainConfig`, or the arguments of ``train_autoencoder`` / ``train_classifier``.
TRAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "ddpm-unet": tuple(field.name for field in dataclasses.fields(TrainConfig)),
    "flow-unet": tuple(field.name for field in dataclasses.fields(TrainConfig)),
    "autoencoder": ("num_steps", "batch_size", "lr", "warmup_steps", "seed"),
    "mnist-classifier": ("epochs", "batch_size", "lr", "seed"),
}
IDENTITY = ("name", "kind", "network", "diffusion", "latent")  # the fields the weights carry too
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_optional(value: object, kinds: tuple[type, ...], name: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
        raise ValueError(f"{name} must be {' or '.join(k.__name__ for k in kinds)} or None (unknown), got {value!r}")


def _check_sha256(value: object, name: str) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError(f"{name} must be a SHA-256 as 64 lowercase hex digits, got {value!r}")


@dataclass(frozen=True)
class Measure:
    """One measured number: its ``value``, the images behind it (``num_samples``) and the
    ``sampler`` that made them (None when real images or reconstructions were measured)."""

    value: float
    num_samples: int | None
    sampler: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"a measure's value must be a finite number (a card is strict JSON), got {self.value!r}")
        _check_optional(self.num_samples, (int,), "num_samples")
        _check_optional(self.sampler, (str,), "sampler")


@dataclass(frozen=True)
class Provenance:
    """The run that made the weights: when, on what, how long, on how many images, how many
    optimisation steps, and which script or chapter trained it. None: not recorded."""

    date: str | None
    device: str | None
    train_seconds: float | None
    num_train_images: int | None
    num_steps: int | None
    trained_by: str | None

    def __post_init__(self) -> None:
        for name in ("date", "device", "trained_by"):
            _check_optional(getattr(self, name), (str,), f"provenance.{name}")
        _check_optional(self.train_seconds, (int, float), "provenance.train_seconds")
        for name in ("num_train_images", "num_steps"):
            _check_optional(getattr(self, name), (int,), f"provenance.{name}")


@dataclass(frozen=True)
class LatentLink:
    """What a latent diffusion model needs beyond its network: z_scaled = ``scale``·E(x) (06_latent),
    the autoencoder E, D it was trained with, by name and by the SHA-256 of its weights file, and
    ``value_range``, the interval (low, high) its scaled training latents fill, which its sampler clips
    x̂0 to (:func:`~ddpm_helpers.latent.latent_range`; None for a model that records none, sampled unclipped)."""

    scale: float
    autoencoder: str
    autoencoder_sha256: str
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"latent.scale must be a positive finite number (1 / std of the latents), got {self.scale!r}")
        if not isinstance(self.autoencoder, str) or not self.autoencoder:
            raise ValueError(f"latent.autoencoder must name the autoencoder's weights, got {self.autoencoder!r}")
        _check_sha256(self.autoencoder_sha256, "latent.autoencoder_sha256")
        if self.value_range is not None:
            low_high = self.value_range
            ok = isinstance(low_high, (tuple, list)) and len(low_high) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in low_high)
            if not ok or not low_high[0] < low_high[1]:
                raise ValueError(f"latent.value_range must be None or a pair (low, high) of finite numbers with low < high "
                                 f"(the scaled training latents' min and max), got {low_high!r}")
            object.__setattr__(self, "value_range", (float(low_high[0]), float(low_high[1])))  # a JSON list reads back as the tuple

    def stored(self) -> dict:
        """As the weights and the card store it; a link without a range is stored as before ranges were recorded."""
        values = dataclasses.asdict(self)
        if values["value_range"] is None:
            del values["value_range"]
        return values


@dataclass(frozen=True)
class ModelCard:
    """The card of one shipped model (every kind: diffusion networks, the autoencoder, the classifier).

    Identity (also inside the weights): ``name``, ``kind``, ``network`` (the network's config),
    ``diffusion`` (a diffusion network's T, schedule and prediction; a flow network's
    :class:`~ddpm_helpers.flow.FlowConfig`; None for other kinds), ``latent`` (:class:`LatentLink`
    for a latent model, else None). Then ``sha256`` of the weights file, ``train_config`` (the
    training settings as saved, keys from :data:`TRAIN_FIELDS`), ``provenance``, ``quality``
    (metric name → :class:`Measure`) and ``notes`` (e.g. which facts are unknown).
    """

    name: str
    kind: str
    sha256: str
    network: dict
    diffusion: dict | None
    latent: LatentLink | None
    train_config: dict | None
    provenance: Provenance
    quality: dict
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"name must be a file stem of letters, digits, '_', '-' or '.', got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        _check_sha256(self.sha256, "sha256")
        if not isinstance(self.network, dict):
            raise ValueError(f"network must be the network's config as a dict, got {type(self.network).__name__}")
        if (self.kind in PROCESS_KINDS) != isinstance(self.diffusion, dict):
            raise ValueError(f"diffusion must be a dict for a {' or '.join(map(repr, PROCESS_KINDS))} (its process's config) and None otherwise, "
                             f"got {self.diffusion!r} for a {self.kind!r}")
        if self.latent is not None and (self.kind != "ddpm-unet" or not isinstance(self.latent, LatentLink)):
            raise ValueError(f"latent must be a LatentLink of a 'ddpm-unet', or None; got {self.latent!r} for a {self.kind!r}")
        if self.train_config is not None:
            if not isinstance(self.train_config, dict):
                raise ValueError(f"train_config must be a dict or None (unknown), got {type(self.train_config).__name__}")
            unknown = sorted(set(self.train_config) - set(TRAIN_FIELDS[self.kind]))
            if unknown:
                raise ValueError(f"train_config of a {self.kind!r} holds unknown settings {unknown}; known: {list(TRAIN_FIELDS[self.kind])}")
        if not isinstance(self.provenance, Provenance):
            raise ValueError(f"provenance must be a dh.cards.Provenance, got {type(self.provenance).__name__}")
        if not isinstance(self.quality, dict) or not all(isinstance(k, str) and isinstance(v, Measure) for k, v in self.quality.items()):
            raise ValueError(f"quality must map metric names to dh.cards.Measure, got {self.quality!r}")
        if not isinstance(self.notes, str):
            raise ValueError(f"notes must be a string, got {type(self.notes).__name__}")

    def identity(self) -> dict:
        """The fields the weights carry too, as they are stored there."""
        return {"name": self.name, "kind": self.kind, "network": self.network, "diffusion": self.diffusion,
                "latent": None if self.latent is None else self.latent.stored()}

    def to_dict(self) -> dict:
        """The card as JSON-ready primitives, with the schema's version."""
        values = dataclasses.asdict(self)
        if self.latent is not None:
            values["latent"] = self.latent.stored()
        return {"card_version": CARD_VERSION, **values}

    @classmethod
    def from_dict(cls, values: dict) -> "ModelCard":
        """Inverse of :meth:`to_dict`; a missing or unknown field is an error naming it."""
        if not isinstance(values, dict):
            raise ValueError(f"a card must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        version = values.pop("card_version", None)
        if version != CARD_VERSION:
            raise ValueError(f"card_version must be {CARD_VERSION} (this package's card schema), got {version!r}")
        names = [field.name for field in dataclasses.fields(cls)]
        missing, unknown = [n for n in names[:-1] if n not in values], sorted(set(values) - set(names))
        if missing or unknown:
            raise ValueError(f"a card must have the fields {names}: missing {missing}, unknown {unknown}")
        try:
            latent = None if values["latent"] is None else LatentLink(**values["latent"])
            provenance = Provenance(**values["provenance"])
            quality = {k: Measure(**v) for k, v in values["quality"].items()}
        except (TypeError, AttributeError) as error:
            raise ValueError(f"a card's latent, provenance or quality is malformed ({error})") from error
        return cls(**{**values, "latent": latent, "provenance": provenance, "quality": quality})


def measures(values: dict, *, num_samples: int | None, sampler: str | None = None) -> dict:
    """``{metric: Measure(value, num_samples, sampler)}`` for several metrics measured on the same images."""
    return {name: Measure(value, num_samples, sampler) for name, value in values.items()}


def seed_quality(reports: list, *, num_samples: int, sampler: str, first_seed: int) -> tuple[dict, str]:
    """A card's quality from one quality report per sampling seed (``first_seed`` onwards): the mean FID
    and confident share, the rarest class over the seeds; and the notes' sentence saying so, with the spread."""
    if not reports:
        raise ValueError("reports must hold at least one quality report (one per sampling seed), got none")
    fids = torch.tensor([float(r.fid) for r in reports], dtype=torch.float64)
    confident = torch.tensor([float(r.confident_fraction) for r in reports], dtype=torch.float64)
    quality = measures({"fid": round(float(fids.mean()), 2), "confident_fraction": round(float(confident.mean()), 4),
                        "min_class_share": round(min(float(r.min_class_share) for r in reports), 4)}, num_samples=num_samples, sampler=sampler)
    seeds = f"mean over sampling seeds {first_seed}-{first_seed + len(reports) - 1}" if len(reports) > 1 else f"sampling seed {first_seed}"
    spread = f"; spread over seeds (sd): confident {float(confident.std()):.4f}, fid {float(fids.std()):.2f}" if len(reports) > 1 else ""
    notes = f"quality: {seeds}, {num_samples} samples each, against as many test images; min_class_share is the rarest class over the seeds{spread}"
    return quality, notes


def write_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` as JSON to ``path`` atomically (temporary file, fsync, rename); returns the path."""
    if not isinstance(card, ModelCard):
        raise ValueError(f"card must be a dh.ModelCard, got {type(card).__name__}")
    text = json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n"  # before any file is opened
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_card(path: str | os.PathLike, what: str) -> ModelCard:
    """The :class:`ModelCard` at ``path``; ``what`` names the model in messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no card at {path}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"the card {path.name} of {what} is not valid JSON ({error})") from error
    try:
        return ModelCard.from_dict(values)
    except ValueError as error:
        raise ValueError(f"the card {path.name} of {what} does not follow the card schema: {error}") from error


def read_model(weights: str | os.PathLike, card_path: str | os.PathLike, name: str, what: str) -> tuple[ModelCard, dict]:
    """The card and the weights payload of model ``name``, after checking that the card names
    ``name``, the weights have the card's SHA-256 and their own content digest, the weights name
    ``name`` too, and the card agrees with the weights on every identity field (:data:`IDENTITY`)."""
    card = read_card(card_path, what)
    if card.name != name:
        raise ValueError(f"{what}: its card {Path(card_path).name} names the model {card.name!r}, not {name!r}; a card is read only under its own name")
    payload = read_weights(weights, what, sha256=card.sha256)
    if "name" not in payload:
        raise ValueError(f"{what}: {Path(weights).name} does not say which model it is (no name inside); re-save it with dh.save_pretrained")
    stored = {key: payload.get("config" if key == "network" else key) for key in IDENTITY}
    if stored["name"] != name:
        raise ValueError(f"{what}: the weights {Path(weights).name} are the model {stored['name']!r}, not {name!r}; weights load only under their own name")
    differences = [f"{key}: weights {stored[key]!r} vs card {value!r}" for key, value in card.identity().items() if stored[key] != value]
    if differences:
        raise ValueError(f"{what}: the card disagrees with the weights it describes on " + "; ".join(differences))
    return card, payload
