"""The settings of a run: one small frozen config per component, gathered in one :class:`Config`.

The book runs in two modes chosen by one environment variable, ``DDPM_MODE``:

* ``tiny``: CPU, seconds per chapter; used by the tests and CI. Small networks, few steps,
  the MNIST subset shipped inside this package.
* ``full``: the results the rendered book shows.

A second variable, ``DDPM_DATASET`` (``mnist``, the default, or ``fashion-mnist``), sets
``cfg.data.dataset`` in either mode, so the whole book re-runs on Fashion-MNIST by changing one value.

The modes are *values* (:data:`TINY`, :data:`FULL`), never branches in the chapters. Each component
has its own config, so a function takes only what it reads, and the network's config travels
with its weights (a checkpoint or shipped model is checked against it as a whole):

====================  ==========================================================
``cfg.data``          :class:`~ddpm_helpers.data.DataConfig`: which images (MNIST or Fashion-MNIST)
``cfg.unet``          :class:`~ddpm_helpers.unet.UNetConfig`: the ε-network
``cfg.diffusion``     :class:`~ddpm_helpers.schedules.DiffusionConfig`: T, β schedule, prediction
``cfg.train``         :class:`~ddpm_helpers.train_state.TrainConfig`: optimiser, learning rate, EMA
``cfg.judge``         :class:`~ddpm_helpers.samplers.SamplerSpec`: how the book samples to judge a model
====================  ==========================================================

Each component config lives beside its component; this module gathers them, with the presets and
:func:`load_config`. Knobs that only one chapter uses stay in that chapter, written with
:meth:`Config.pick`. Scripts change settings with :meth:`Config.with_overrides`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .checks import check_choice, check_positive_int, config_to_dict
from .data import DATASETS, DataConfig
from .samplers import SamplerSpec
from .schedules import DiffusionConfig
from .train_state import TrainConfig
from .unet import UNetConfig

MODE_VARIABLE = "DDPM_MODE"
DEFAULT_MODE = "full"
DATASET_VARIABLE = "DDPM_DATASET"
DEFAULT_DATASET = "mnist"
COMPONENTS = ("data", "unet", "diffusion", "train", "judge")
Value = TypeVar("Value")


@dataclass(frozen=True)
class Config:
    """All settings of one run of the book. Taught in: every chapter's first cell."""

    mode: str
    data: DataConfig
    unet: UNetConfig = UNetConfig()
    # The book's recipe (issue 27, benchmarks/results/recipe-cpu.md): the cosine schedule (Nichol and Dhariwal 2021),
    # where the linear one of Ho et al. (DiffusionConfig's default, chapter 1's lesson) spends about the last third of
    # the chain on almost pure noise; min-SNR-γ loss weights (TrainConfig's default); and a 20-step judge, the
    # stochastic DPM-Solver++(2M), which read within the sampling seeds' spread of DDIM with 100 steps and η = 1 (the
    # judge until 2026-12) on the models measured, at a fifth of the network evaluations.
    diffusion: DiffusionConfig = DiffusionConfig(schedule="cosine")
    train: TrainConfig = TrainConfig()
    judge: SamplerSpec = SamplerSpec("dpm-solver++-sde", num_steps=20)
    num_fid_samples: int = 1_000  # images per set for FID/KID (more than the 128 feature dimensions)
    sample_batch_size: int = 125  # images per network call when sampling many (a CPU is fastest near 100)
    num_samples: int = 64  # images generated or inspected for a figure
    num_mc_samples: int = 20_000  # Monte Carlo draws for numeric checks
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.mode, tuple(PRESETS_NAMES), "mode")
        for name, kind in (("data", DataConfig), ("unet", UNetConfig), ("diffusion", DiffusionConfig), ("train", TrainConfig), ("judge", SamplerSpec)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a dh.{kind.__name__}, got {type(getattr(self, name)).__name__}")
        for name in ("num_fid_samples", "sample_batch_size", "num_samples", "num_mc_samples"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.seed, "seed", minimum=0)
        if self.unet.image_size != self.data.image_size:
            raise ValueError(f"unet.image_size ({self.unet.image_size}) must equal data.image_size ({self.data.image_size})")

    def pick(self, *, tiny: Value, full: Value) -> Value:
        """The value for this run's mode: a chapter's own knob, both values in sight,
        e.g. ``RACE_STEPS = cfg.pick(tiny=(2, 4), full=(5, 10, 20))``."""
        return tiny if self.mode == "tiny" else full

    def replace(self, **changes: object) -> "Config":
        """A copy with some fields changed, e.g. ``cfg.replace(diffusion=cfg.diffusion.replace(T=100))``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every setting as a nested dict of primitives (for logs and records)."""
        return config_to_dict(self)

    def with_overrides(self, overrides: Sequence[str]) -> "Config":
        """A copy with ``component.field=value`` (or top-level ``field=value``) settings replaced, e.g.
        ``cfg.with_overrides(["train.lr=3e-3", "diffusion.schedule=cosine", "seed=1"])``.

        Each value is read as its field's type: ``int``, ``float``, ``true``/``false``, text, ``none``
        for a field that may be None, and ``1,2,2`` or ``[1, 2, 2]`` for a tuple. Each component is
        rebuilt once, so its checks see all its changes. An unknown component or field, or a value
        that is not of the field's type, is a ValueError that names it. The one parser of every
        script's and benchmark's ``--set``.
        """
        if isinstance(overrides, (str, bytes)) or not isinstance(overrides, Sequence):
            raise ValueError(f"overrides must be a list of 'component.field=value' strings, got {type(overrides).__name__}")
        changes: dict[str, dict] = {}
        for text in overrides:
            component, field, value = parse_override(self, text)
            changes.setdefault(component, {})[field] = value
        top = changes.pop("", {})
        return self.replace(**top, **{name: getattr(self, name).replace(**fields) for name, fields in changes.items()})

    def _data_name(self) -> str:
        """The data in the first line: the source alone for MNIST, as every stored chapter prints it
        (the data set was added later), the data set before the source otherwise."""
        return self.data.source if self.data.dataset == "mnist" else f"{self.data.dataset}/{self.data.source}"

    def summary(self) -> str:
        """One line for a notebook's first cell."""
        u = self.unet
        return (
            f"mode={self.mode}  data={self._data_name()}  T={self.diffusion.T}  schedule={self.diffusion.schedule}  "
            f"unet=(channels={u.channels}, mults={u.channel_mults}, "
            f"res_blocks={u.num_res_blocks}, attention@{u.attention_resolutions}, patch={u.patch_size})  "
            f"steps={self.train.num_train_steps}  batch={self.train.batch_size}"
        )


PRESETS_NAMES = ("tiny", "full")

TINY = Config(
    mode="tiny",
    data=DataConfig(source="bundled", num_train_images=512, num_val_images=64),
    unet=UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,)),
    train=TrainConfig(batch_size=16, num_train_steps=4, warmup_steps=2, lr_cooldown_fraction=0.5, eval_every=2, checkpoint_every=2, num_val_loss_images=64),
    judge=SamplerSpec("dpm-solver++-sde", num_steps=2),
    num_fid_samples=200,
    sample_batch_size=100,
    num_samples=8,
    num_mc_samples=2_000,
)

FULL = Config(mode="full", data=DataConfig(source="download", num_train_images=None, num_val_images=1_000))

PRESETS: dict[str, Config] = {"tiny": TINY, "full": FULL}


def load_config(mode: str | None = None, *, dataset: str | None = None) -> Config:
    """The configuration for ``mode``, or for ``$DDPM_MODE`` (default ``full``) when ``mode`` is None,
    on ``dataset`` (``"mnist"`` or ``"fashion-mnist"``), or on ``$DDPM_DATASET`` (default ``mnist``)
    when ``dataset`` is None: the preset itself for MNIST, a copy with ``data.dataset`` changed otherwise."""
    if mode is None:
        mode = os.environ.get(MODE_VARIABLE, DEFAULT_MODE)
    key = mode.strip().lower() if isinstance(mode, str) else mode
    if key not in PRESETS:
        raise ValueError(f"mode must be one of {sorted(PRESETS)} (from the argument or ${MODE_VARIABLE}), got {mode!r}")
    if dataset is None:
        dataset = os.environ.get(DATASET_VARIABLE) or DEFAULT_DATASET
    name = dataset.strip().lower() if isinstance(dataset, str) else dataset
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)} (from the argument or ${DATASET_VARIABLE}), got {dataset!r}")
    preset = PRESETS[key]
    return preset if name == preset.data.dataset else preset.replace(data=preset.data.replace(dataset=name))


def parse_override(cfg: Config, text: str) -> tuple[str, str, object]:
    """``"train.lr=3e-3"`` → ``("train", "lr", 0.003)``; a top-level field has component ``""``."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"an override must read component.field=value (e.g. train.lr=3e-3) or field=value (e.g. seed=1), got {text!r}")
    key, _, value = text.partition("=")
    component, dot, field = key.strip().rpartition(".")
    if dot and component not in COMPONENTS:
        raise ValueError(f"override {text!r}: unknown component {component!r}; components: {list(COMPONENTS)}")
    owner = getattr(cfg, component) if dot else cfg
    hints = typing.get_type_hints(type(owner))
    known = [name for name in hints if dot or name not in (*COMPONENTS, "mode")]
    if field not in known:
        owners = [f"{name}.{field}" for name in COMPONENTS if not dot and field in typing.get_type_hints(type(getattr(cfg, name)))]
        hint = f" (did you mean {' or '.join(owners)}?)" if owners else ""
        raise ValueError(f"override {text!r}: unknown field {key.strip()!r}{hint}; fields{' of ' + component if dot else ''}: {sorted(known)}")
    return component, field, _parse_value(value.strip(), hints[field], key.strip())


def _parse_value(text: str, kind: object, name: str) -> object:
    """``text`` read as a value of the type ``kind`` (int, float, bool, str, tuple[X, ...], X | None)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else ()
    if options:
        if text.lower() in ("none", "null"):
            return None
        kind = next(option for option in options if option is not type(None))
    if typing.get_origin(kind) is tuple:
        inner = typing.get_args(kind)[0]
        items = [item.strip() for item in text.strip("[]()").split(",") if item.strip()]
        return tuple(_parse_value(item, inner, f"each item of {name}") for item in items)
    if kind is bool:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    elif kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    elif kind is str:
        return text
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, str(kind))
    raise ValueError(f"{name} must be {expected}{' or none' if options else ''}, got {text!r}")
