"""MNIST as (N, 1, 32, 32) tensors in [-1, 1], held in memory.

Where the images come from, in this order:

1. ``root=`` passed to :func:`load_mnist`, or the environment variable ``DDPM_MNIST_ROOT``: a folder
   holding ``MNIST/raw/`` in torchvision's layout (your own copy; nothing is downloaded);
2. the configuration's ``data_source``: ``"bundled"`` reads the 2,000 + 1,000 image subset shipped
   inside this package (tiny mode), ``"download"`` lets torchvision fetch MNIST into
   ``~/.cache/ddpm_helpers`` (full mode; works on Colab and wherever the internet is reachable).

The 28×28 digits are padded with background to 32×32 so the U-Net can halve them three times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checks import ConfigMixin, check_choice, check_positive_int

DATA_SOURCES = ("bundled", "download")
ROOT_VARIABLE = "DDPM_MNIST_ROOT"
BUNDLED_ROOT = Path(__file__).resolve().parent / "mnist_subset"
CACHE_ROOT = Path.home() / ".cache" / "ddpm_helpers"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataConfig(ConfigMixin):
    """Which MNIST images a run uses (``cfg.data``). Taught in: 01_forward_process."""

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


class ImageSet(NamedTuple):
    """Images (N, 1, 32, 32) float32 in [-1, 1] and their labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] or floats in [0, 1] → floats in [-1, 1]."""
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1
    return x * 2 - 1


def to_pixel_range(x: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] → floats in [0, 1] (clamped), for plotting and saving."""
    return ((x + 1) / 2).clamp(0, 1)


def _data_unavailable(root: Path, reason: str) -> RuntimeError:
    return RuntimeError(
        f"MNIST could not be loaded from {root}: {reason}\n"
        f"Fix it in one of these ways:\n"
        f"  * point {ROOT_VARIABLE} (or load_mnist(root=...)) at a folder that holds MNIST/raw/ in torchvision's layout\n"
        f"    (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte);\n"
        f"  * run where the internet is reachable (e.g. Colab) so torchvision can download MNIST;\n"
        f"  * or use tiny mode (DDPM_MODE=tiny), which reads the subset shipped with this package."
    )


def _read_torchvision(root: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST  # imported here: only loading needs torchvision

    prefix = "train" if train else "t10k"
    files = f"{root / 'MNIST' / 'raw'}/{{{prefix}-images-idx3-ubyte, {prefix}-labels-idx1-ubyte}}"
    try:
        dataset = MNIST(str(root), train=train, download=download)
    except RuntimeError as error:  # torchvision: "Dataset not found." / download failures
        raise _data_unavailable(root, str(error)) from error
    except OSError as error:  # no network, DNS failure, ...
        raise _data_unavailable(root, f"download failed ({error})") from error
    except Exception as error:  # a damaged idx file: torchvision raises a bare AssertionError, a ValueError, ...
        raise ValueError(f"MNIST files {files} are damaged or not MNIST idx files ({type(error).__name__}: {error or 'bad header'}); "
                         f"replace them with intact copies") from error
    pixels, labels = dataset.data, dataset.targets
    if pixels.ndim != 3 or tuple(pixels.shape[1:]) != (28, 28) or pixels.dtype != torch.uint8:
        raise ValueError(f"MNIST files {files}: images must be 28x28 bytes, got shape {tuple(pixels.shape)} and dtype {pixels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != pixels.shape[0]:
        raise ValueError(f"MNIST files {files}: {pixels.shape[0]} images but {labels.shape[0] if labels.ndim else 0} labels; the two files do not belong together")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"MNIST files {files}: labels must be digits 0-9, got values in [{int(labels.min())}, {int(labels.max())}]")
    return pixels, labels


def _data_config(config) -> DataConfig:
    """``config`` itself, or the ``data`` of a whole :class:`~ddpm_helpers.config.Config`."""
    config = getattr(config, "data", config)
    if not isinstance(config, DataConfig):
        raise ValueError(f"config must be a dh.Config or dh.DataConfig, got {type(config).__name__}")
    return config


def resolve_root(config: DataConfig, root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The folder to read MNIST from and whether torchvision may download into it."""
    config = _data_config(config)
    chosen = root if root is not None else os.environ.get(ROOT_VARIABLE)
    if chosen:
        return Path(chosen).expanduser(), False
    if config.source == "bundled":
        return BUNDLED_ROOT, False
    return CACHE_ROOT, True


def load_mnist(split: str, config: DataConfig, *, root: str | os.PathLike | None = None, num_images: int | None = None) -> ImageSet:
    """MNIST ``split`` ("train", "val" or "test") as an :class:`ImageSet` in [-1, 1], padded to 32×32.
    ``config`` is a :class:`DataConfig` or a whole ``dh.Config`` (its ``data`` is used).

    "val" is the last ``config.num_val_images`` of the official training images and "train" the rest,
    so validation images are never trained on. ``num_images`` (default: the configuration's
    ``num_train_images`` for "train", all otherwise) keeps the first images of the split.
    """
    config = _data_config(config)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_images is not None and num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    folder, download = resolve_root(config, root)
    pixels, labels = _read_torchvision(folder, train=split != "test", download=download)
    if split != "test":
        num_val = config.num_val_images
        if num_val >= pixels.shape[0]:
            raise ValueError(f"num_val_images ({num_val}) must be smaller than the {pixels.shape[0]} training images")
        cut = pixels.shape[0] - num_val
        pixels, labels = (pixels[cut:], labels[cut:]) if split == "val" else (pixels[:cut], labels[:cut])
    limit = num_images if num_images is not None else (config.num_train_images if split == "train" else None)
    if limit is not None:
        pixels, labels = pixels[:limit], labels[:limit]
    pad = (config.image_size - pixels.shape[-1]) // 2
    images = F.pad(to_model_range(pixels), (pad, pad, pad, pad), value=-1.0).unsqueeze(1)
    return ImageSet(images.contiguous(), labels.long())
