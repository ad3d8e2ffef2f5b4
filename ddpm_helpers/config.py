"""The settings of a run: one small frozen config per component, gathered in one :class:`Config`.

The book runs in two modes chosen by one environment variable, ``DDPM_MODE``:

* ``tiny``: CPU, seconds per chapter; used by the tests and CI. Small networks, few steps,
  the MNIST subset shipped inside this package.
* ``full``: the results the rendered book shows.

The modes are *values* (:data:`TINY`, :data:`FULL`), never branches in the chapters. Each component
has its own config, so a function takes only what it reads, and the network's config travels
with its weights (a checkpoint or shipped model is checked against it as a whole):

====================  ==========================================================
``cfg.data``          :class:`DataConfig`: which MNIST images
``cfg.unet``          :class:`~ddpm_helpers.unet.UNetConfig`: the ε-network
``cfg.diffusion``     :class:`~ddpm_helpers.schedules.DiffusionConfig`: T, the β schedule, the prediction
``cfg.train``         :class:`TrainConfig`: optimiser, schedule of the learning rate, EMA
``cfg.judge``         :class:`~ddpm_helpers.samplers.SamplerSpec`: how the book samples to judge a model
====================  ==========================================================

Knobs that only one chapter uses stay in that chapter, written with :meth:`Config.pick`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TypeVar

from .checks import ConfigMixin, check_choice, check_fraction, check_positive_int, config_to_dict
from .diffusion import LOSS_TYPES, LOSS_WEIGHTINGS
from .samplers import SamplerSpec
from .schedules import DiffusionConfig
from .unet import UNetConfig

MODE_VARIABLE = "DDPM_MODE"
DEFAULT_MODE = "full"
DATA_SOURCES = ("bundled", "download")
Value = TypeVar("Value")


@dataclass(frozen=True)
class DataConfig(ConfigMixin):
    """Which MNIST images a run uses. Taught in: 01_forward_process."""

    source: str  # "bundled" (the subset shipped in the package) or "download" (torchvision)
    num_train_images: int | None  # None: every image of the training split
    num_val_images: int  # held out from the end of the official training images
    image_size: int = 32

    def __post_init__(self) -> None:
        check_choice(self.source, DATA_SOURCES, "data.source")
        if self.num_train_images is not None:
            check_positive_int(self.num_train_images, "data.num_train_images")
        check_positive_int(self.num_val_images, "data.num_val_images")
        check_positive_int(self.image_size, "data.image_size", minimum=28)
        if self.image_size % 2:
            raise ValueError(f"data.image_size must be an even size of at least 28 (MNIST's 28x28 digits are padded evenly), got {self.image_size}")


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
    """How a diffusion model is trained (chosen for time to quality on two CPU cores; see 04_training)."""

    batch_size: int = 64
    num_train_steps: int = 18_000
    lr: float = 2e-3
    warmup_steps: int = 50
    lr_cooldown_fraction: float = 1 / 3  # the learning rate falls linearly to 0 over this share of the run
    channels_last: bool = True  # NHWC memory format: about 16% more images/s on a CPU
    ema_decay: float = 0.995
    grad_clip: float = 1.0  # the largest gradient norm
    loss_type: str = "l2"
    loss_weighting: str = "uniform"  # or "min_snr": min(SNR, gamma) / SNR per timestep (diffusion.loss_weights)
    min_snr_gamma: float = 5.0
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
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"train.channels_last must be True or False, got {self.channels_last!r}")


@dataclass(frozen=True)
class Config:
    """All settings of one run of the book. Taught in: every chapter's first cell."""

    mode: str
    data: DataConfig
    unet: UNetConfig = UNetConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    judge: SamplerSpec = SamplerSpec("ddim", num_steps=100, eta=1.0)  # eta 1: better for young models (05_sampling)
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

    def summary(self) -> str:
        """One line for a notebook's first cell."""
        u = self.unet
        return (
            f"mode={self.mode}  data={self.data.source}  T={self.diffusion.T}  schedule={self.diffusion.schedule}  "
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
    judge=SamplerSpec("ddim", num_steps=2, eta=1.0),
    num_fid_samples=200,
    sample_batch_size=100,
    num_samples=8,
    num_mc_samples=2_000,
)

FULL = Config(mode="full", data=DataConfig(source="download", num_train_images=None, num_val_images=1_000))

PRESETS: dict[str, Config] = {"tiny": TINY, "full": FULL}


def load_config(mode: str | None = None) -> Config:
    """The configuration for ``mode``, or for ``$DDPM_MODE`` (default ``full``) when ``mode`` is None."""
    if mode is None:
        mode = os.environ.get(MODE_VARIABLE, DEFAULT_MODE)
    key = mode.strip().lower() if isinstance(mode, str) else mode
    if key not in PRESETS:
        raise ValueError(f"mode must be one of {sorted(PRESETS)} (from the argument or ${MODE_VARIABLE}), got {mode!r}")
    return PRESETS[key]
