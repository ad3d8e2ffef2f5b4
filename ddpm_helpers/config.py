"""Every number that differs between the tiny and the full run, in one frozen dataclass.

The book runs in two modes chosen by one environment variable, ``DDPM_MODE``:

* ``tiny``: CPU, seconds per chapter; used by the tests and CI. Small networks, few steps,
  the MNIST subset shipped inside this package.
* ``full``: the results the rendered book shows; the full MNIST training set.

The modes are *values* of :class:`Config`, never branches in the chapters.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

MODE_VARIABLE = "DDPM_MODE"
DEFAULT_MODE = "full"


@dataclass(frozen=True)
class Config:
    """All settings of one run of the book. Taught in: every chapter's first cell."""

    mode: str
    # data
    data_source: str  # "bundled" (shipped subset) or "download" (torchvision, full MNIST)
    num_train_images: int | None  # None: every image of the training split
    num_val_images: int  # held out from the end of the official training images
    image_size: int = 32
    # diffusion
    T: int = 1000
    schedule: str = "linear"
    # U-Net (benchmarks/architecture_speed.py measures what each choice costs)
    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    patch_size: int = 2  # space-to-depth stem: the U-Net runs at image_size / patch_size (4x faster on a CPU)
    downsample: str = "conv"
    weight_standardization: bool = False
    # training (chosen for time-to-quality on two CPU cores; see the training chapter)
    batch_size: int = 64
    num_train_steps: int = 18_000
    lr: float = 2e-3
    warmup_steps: int = 50
    lr_cooldown_steps: int = 6_000  # the learning rate falls linearly to 0 over the last steps of the run
    channels_last: bool = True  # NHWC memory format for training: about 16% more images/s on a CPU
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    loss_type: str = "l2"
    label_dropout: float = 0.1  # conditional models: share of labels replaced by the null class (classifier-free guidance)
    eval_every: int = 250
    checkpoint_every: int = 500
    # figures and checks
    num_samples: int = 64  # images generated or inspected for a figure
    num_mc_samples: int = 20_000  # Monte Carlo draws for numeric checks
    num_fid_samples: int = 1_000  # images per set for FID/KID (more than the 128 feature dimensions)
    num_sampling_steps: int = 100  # DDIM steps used to judge a model by its samples
    sampling_eta: float = 1.0  # DDIM noise: 1 = ancestral-like (better for young models), 0 = deterministic
    sample_batch_size: int = 125  # images per network call when sampling many (a CPU is fastest near 100)
    race_steps: tuple[int, ...] = (5, 10, 20, 50, 100, 250, 1000)  # step counts of the sampler race (chapter 5)
    guidance_scales: tuple[float, ...] = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0)  # classifier-free guidance sweep (chapter 7)
    num_nll_images: int = 1_000  # test images whose likelihood bound is estimated (chapter 2)
    num_nll_timesteps: int = 100  # sampled steps per image in that estimate
    num_exact_nll_images: int = 8  # test images whose bound is summed over all T steps
    num_overfit_steps: int = 300  # optimisation steps of the single-batch overfitting check
    publish_weights: bool = True  # a full run writes the weights later chapters load; tiny runs never do
    seed: int = 0

    def __post_init__(self) -> None:
        if self.data_source not in ("bundled", "download"):
            raise ValueError(
                f"data_source must be 'bundled' or 'download', got {self.data_source!r}"
            )
        if self.channels % 8:
            raise ValueError(f"channels must be a multiple of 8 (GroupNorm groups), got {self.channels}")
        if not 0 <= self.lr_cooldown_steps <= self.num_train_steps:
            raise ValueError(f"lr_cooldown_steps must lie in [0, num_train_steps={self.num_train_steps}], got {self.lr_cooldown_steps}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        if self.sample_batch_size < 1:
            raise ValueError(f"sample_batch_size must be a positive number of images, got {self.sample_batch_size}")
        if self.T < 2:
            raise ValueError(f"T must be at least 2, got {self.T}")

    def replace(self, **changes: object) -> "Config":
        """A copy with some fields changed, e.g. ``cfg.replace(schedule="cosine")``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of primitives (tuples become lists), safe for ``torch.load(weights_only=True)``."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Inverse of :meth:`to_dict`."""
        names = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown Config fields: {unknown}")
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})

    def summary(self) -> str:
        """One line for a notebook's first cell."""
        return (
            f"mode={self.mode}  data={self.data_source}  T={self.T}  schedule={self.schedule}  "
            f"unet=(channels={self.channels}, mults={self.channel_mults}, "
            f"res_blocks={self.num_res_blocks}, attention@{self.attention_resolutions}, patch={self.patch_size})  "
            f"steps={self.num_train_steps}  batch={self.batch_size}"
        )


TINY = Config(
    mode="tiny",
    data_source="bundled",
    num_train_images=512,
    num_val_images=64,
    T=1000,
    channels=8,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    batch_size=16,
    num_train_steps=4,
    warmup_steps=2,
    lr_cooldown_steps=2,
    eval_every=2,
    checkpoint_every=2,
    num_samples=8,
    num_mc_samples=2_000,
    num_fid_samples=200,
    num_sampling_steps=2,
    sample_batch_size=100,
    race_steps=(2, 4),
    guidance_scales=(0.0, 1.0, 3.0),
    num_nll_images=200,
    num_nll_timesteps=2,
    num_exact_nll_images=1,
    num_overfit_steps=10,
    publish_weights=False,
)

FULL = Config(
    mode="full",
    data_source="download",
    num_train_images=None,
    num_val_images=1_000,
)

PRESETS: dict[str, Config] = {"tiny": TINY, "full": FULL}


def load_config(mode: str | None = None) -> Config:
    """The configuration for ``mode``, or for ``$DDPM_MODE`` (default ``full``) when ``mode`` is None."""
    if mode is None:
        mode = os.environ.get(MODE_VARIABLE, DEFAULT_MODE)
    key = mode.strip().lower()
    if key not in PRESETS:
        raise ValueError(
            f"mode must be one of {sorted(PRESETS)} (from the argument or ${MODE_VARIABLE}), got {mode!r}"
        )
    return PRESETS[key]


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when available, else Apple's MPS, else the CPU; ``prefer`` (e.g. "cpu") overrides."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (for code that uses global RNGs) and return a fresh CPU generator.

    The package's own stochastic functions take ``generator=`` instead of relying on global state.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
