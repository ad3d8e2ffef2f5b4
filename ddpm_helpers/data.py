"""MNIST or Fashion-MNIST as (N, 1, 32, 32) tensors in [-1, 1], held in memory.

The two data sets share one format: IDX files of 28×28 grey bytes with labels 0-9 (Fashion-MNIST was
made as a drop-in replacement for MNIST), so one reader, :func:`read_idx`, serves both, and
``cfg.data.dataset`` chooses between them: ``"mnist"`` (the default) or ``"fashion-mnist"``
(``DDPM_DATASET=fashion-mnist`` sets it for :func:`~ddpm_helpers.config.load_config`).

Where the images come from, in this order:

1. ``root=`` passed to :func:`load_mnist`, or the data set's environment variable (``DDPM_MNIST_ROOT``,
   ``DDPM_FASHION_MNIST_ROOT``): your own copy, nothing is downloaded. The folder holds the four IDX
   files, in torchvision's layout (``MNIST/raw/``, ``FashionMNIST/raw/``) or directly (as Debian
   installs them), each plain or gzip-compressed;
2. the configuration's ``source``: ``"bundled"`` reads the 2,000 + 1,000 image subset shipped inside
   this package (tiny mode); ``"download"`` (full mode) reads a copy installed on the system where
   there is one (Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``), and
   otherwise lets torchvision download the files into ``~/.cache/ddpm_helpers`` (e.g. on Colab).

The 28×28 images are padded with background to 32×32 so the U-Net can halve them three times.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .checks import ConfigMixin, check_choice, check_positive_int

DATA_SOURCES = ("bundled", "download")
PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_ROOT = Path.home() / ".cache" / "ddpm_helpers"
SPLITS = ("train", "val", "test")
FILE_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class Dataset(NamedTuple):
    """What differs between the data sets :func:`load_mnist` reads; everything else is shared."""

    title: str  # as messages write it
    folder: str  # torchvision's dataset class, and its folder: <root>/<folder>/raw/
    root_variable: str  # the environment variable that names the reader's own copy
    bundled_root: Path  # the subset shipped in the package, in torchvision's layout
    system_roots: tuple[Path, ...]  # copies installed on the system, found without configuration
    system_hint: str  # how to install such a copy ("" where there is none)
    class_names: tuple[str, ...]  # label i means class_names[i]


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset("MNIST", "MNIST", "DDPM_MNIST_ROOT", PACKAGE_DIR / "mnist_subset", (), "",
                     tuple("0123456789")),
    "fashion-mnist": Dataset("Fashion-MNIST", "FashionMNIST", "DDPM_FASHION_MNIST_ROOT", PACKAGE_DIR / "fashion_mnist_subset",
                             (Path("/usr/share/datasets/fashion-mnist"),), "apt-get install dataset-fashion-mnist (Debian, Ubuntu)",
                             ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
}
ROOT_VARIABLE = DATASETS["mnist"].root_variable
BUNDLED_ROOT = DATASETS["mnist"].bundled_root


@dataclass(frozen=True)
class DataConfig(ConfigMixin):
    """Which images a run uses (``cfg.data``). Taught in: 01_forward_process."""

    source: str  # "bundled" (the subset shipped in the package) or "download" (a system copy or torchvision)
    num_train_images: int | None  # None: every image of the training split
    num_val_images: int  # held out from the end of the official training images
    image_size: int = 32
    dataset: str = "mnist"  # "mnist" or "fashion-mnist" (added later: "mnist" is what ran before the field)

    def __post_init__(self) -> None:
        check_choice(self.source, DATA_SOURCES, "data.source")
        if self.num_train_images is not None:
            check_positive_int(self.num_train_images, "data.num_train_images")
        check_positive_int(self.num_val_images, "data.num_val_images")
        check_positive_int(self.image_size, "data.image_size", minimum=28)
        if self.image_size % 2:
            raise ValueError(f"data.image_size must be an even size of at least 28 (the 28x28 images are padded evenly), got {self.image_size}")
        check_choice(self.dataset, tuple(DATASETS), "data.dataset")


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


def class_names(config: "DataConfig | object | str") -> tuple[str, ...]:
    """The names of the 10 classes, label i → ``class_names(cfg)[i]``: ``"0"``…``"9"`` for MNIST,
    ``"T-shirt/top"``…``"Ankle boot"`` for Fashion-MNIST. ``config``: a ``dh.Config``, a
    :class:`DataConfig` or a data set's name."""
    name = config if isinstance(config, str) else _data_config(config).dataset
    check_choice(name, tuple(DATASETS), "dataset")
    return DATASETS[name].class_names


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """The unsigned bytes stored in the IDX file at ``path`` (plain or gzip-compressed), in the shape
    its header gives: (N, 28, 28) for images, (N,) for labels.

    IDX, LeCun's format for MNIST: two zero bytes, a type byte (0x08: unsigned bytes), the number of
    dimensions, each dimension as a big-endian 32-bit integer, then the values in row-major order.
    A file that does not follow it is a ValueError that names the file and what is wrong.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip's magic number: the files as published (and as Debian installs them)
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: damaged gzip data ({error or type(error).__name__})") from error
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{path}: not an IDX file: it must start with two zero bytes, a type byte and a dimension count, "
                         f"got {data[:4].hex(' ') if data else 'an empty file'}")
    kind, ndim = data[2], data[3]
    if kind != 0x08 or not 1 <= ndim <= 3:
        raise ValueError(f"{path}: IDX type 0x{kind:02x} with {ndim} dimensions; MNIST-style files hold unsigned bytes (type 0x08) in 1 to 3 dimensions")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise ValueError(f"{path}: the header is cut short ({len(data)} bytes, {start} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    if len(data) - start != math.prod(shape):
        raise ValueError(f"{path}: the header promises {'x'.join(map(str, shape))} = {math.prod(shape)} bytes of values, the file holds {len(data) - start}")
    if not math.prod(shape):
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[start:]), dtype=torch.uint8).view(*shape)


def _data_unavailable(info: Dataset, root: Path, reason: str) -> RuntimeError:
    system = (f"  * install a copy where it is found without configuration ({info.system_hint}: "
              f"{', '.join(map(str, info.system_roots))});\n" if info.system_roots else "")
    return RuntimeError(
        f"{info.title} could not be loaded from {root}: {reason}\n"
        f"Fix it in one of these ways:\n"
        f"  * point {info.root_variable} (or load_mnist(root=...)) at a folder that holds {info.folder}/raw/ in torchvision's layout\n"
        f"    (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; or these four files directly, plain or .gz);\n"
        f"{system}"
        f"  * run where the internet is reachable (e.g. Colab) so torchvision can download {info.title};\n"
        f"  * or use tiny mode (DDPM_MODE=tiny), which reads the subset shipped with this package."
    )


def _find_files(root: Path, info: Dataset, names: tuple[str, ...]) -> list[Path] | None:
    """The files ``names`` (each plain or .gz) in ``root/<folder>/raw`` or else in ``root`` itself, or None."""
    for folder in (root / info.folder / "raw", root):
        found = [next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None) for name in names]
        if all(found):
            return found
    return None


def _download(root: Path, info: Dataset, train: bool) -> None:
    """torchvision fetches and unpacks the files into ``root/<folder>/raw`` (and reads them once)."""
    from torchvision import datasets  # imported here: only downloading needs torchvision

    files = f"{root / info.folder / 'raw'}/{{{', '.join(FILE_NAMES['train' if train else 'test'])}}}"
    try:
        getattr(datasets, info.folder)(str(root), train=train, download=True)
    except RuntimeError as error:  # torchvision: download failures, bad checksums
        raise _data_unavailable(info, root, str(error)) from error
    except OSError as error:  # no network, DNS failure, ...
        raise _data_unavailable(info, root, f"download failed ({error})") from error
    except Exception as error:  # a damaged file already in the cache: torchvision raises a bare AssertionError, a ValueError, ...
        raise ValueError(f"{info.title} files {files} are damaged or not {info.title} idx files ({type(error).__name__}: {error or 'bad header'}); "
                         f"replace them with intact copies") from error


def _read_split(root: Path, info: Dataset, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images (N, 28, 28) and labels (N,) of the official training or test files under ``root``."""
    names = FILE_NAMES["train" if train else "test"]
    paths = _find_files(root, info, names)
    if paths is None and download:
        _download(root, info, train)
        paths = _find_files(root, info, names)
    if paths is None:
        raise _data_unavailable(info, root, f"{' and '.join(names)} (plain or .gz) are not both in {root / info.folder / 'raw'} or in {root}")
    files = f"{paths[0].parent}/{{{', '.join(path.name for path in paths)}}}"
    try:
        pixels, labels = read_idx(paths[0]), read_idx(paths[1])
    except ValueError as error:
        raise ValueError(f"{info.title} files {files} are damaged or not {info.title} idx files ({type(error).__name__}: {error}); "
                         f"replace them with intact copies") from error
    if pixels.ndim != 3 or tuple(pixels.shape[1:]) != (28, 28):
        raise ValueError(f"{info.title} files {files}: images must be 28x28 bytes, got shape {tuple(pixels.shape)} and dtype {pixels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != pixels.shape[0]:
        raise ValueError(f"{info.title} files {files}: {pixels.shape[0]} images but {labels.shape[0] if labels.ndim else 0} labels; the two files do not belong together")
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{info.title} files {files}: labels must be class indices 0-9, got values in [{int(labels.min())}, {int(labels.max())}]")
    return pixels, labels


def _data_config(config) -> DataConfig:
    """``config`` itself, or the ``data`` of a whole :class:`~ddpm_helpers.config.Config`."""
    config = getattr(config, "data", config)
    if not isinstance(config, DataConfig):
        raise ValueError(f"config must be a dh.Config or dh.DataConfig, got {type(config).__name__}")
    return config


def resolve_root(config: DataConfig, root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The folder to read ``config.dataset`` from, and whether torchvision may download into it."""
    config = _data_config(config)
    info = DATASETS[config.dataset]
    chosen = root if root is not None else os.environ.get(info.root_variable)
    if chosen:
        return Path(chosen).expanduser(), False
    if config.source == "bundled":
        return info.bundled_root, False
    for system in info.system_roots:
        if all(_find_files(system, info, names) for names in FILE_NAMES.values()):
            return system, False
    return CACHE_ROOT, True


def load_mnist(split: str, config: DataConfig, *, root: str | os.PathLike | None = None, num_images: int | None = None) -> ImageSet:
    """The ``split`` ("train", "val" or "test") of ``config.dataset`` (MNIST or Fashion-MNIST) as an
    :class:`ImageSet` in [-1, 1], padded to 32×32. ``config`` is a :class:`DataConfig` or a whole
    ``dh.Config`` (its ``data`` is used).

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
    pixels, labels = _read_split(folder, DATASETS[config.dataset], train=split != "test", download=download)
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
