"""What is diffused: a :class:`DataSpace` (the shape of one item and, when known, its range), and
the check that data belongs to one. Images are (B, C, H, W) in [-1, 1] (:data:`MNIST_PIXELS`);
latents have their own shape and no range. Taught in: 06_latent.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

from .checks import check_batch, check_data, check_signed_range


class _DataSpaceFields(NamedTuple):
    shape: tuple[int, ...]
    value_range: tuple[float, float] | None = None


class DataSpace(_DataSpaceFields):
    """What is being diffused: the shape of one item and, when known, the interval its values lie in.

    Decided once, where the data is: MNIST pixels are ``DataSpace((1, 32, 32), (-1.0, 1.0))``
    (:data:`MNIST_PIXELS`); an autoencoder's latents have its latent shape and no known range. The
    process code works on any shape; clipping x0_hat and clamping samples happen only where the
    range is known. Checked when made: ``shape`` is a non-empty tuple of positive ints and
    ``value_range`` is None (unbounded) or finite (low, high) with low < high. Taught in: 06_latent.
    """

    __slots__ = ()

    def __new__(cls, shape: tuple[int, ...], value_range: tuple[float, float] | None = None) -> DataSpace:
        return super().__new__(cls, _checked_shape(shape), _checked_range(value_range))

    def _replace(self, **changes: object) -> DataSpace:
        return DataSpace(**{**self._asdict(), **changes})


def _checked_shape(shape: object) -> tuple[int, ...]:
    ok = isinstance(shape, (tuple, list)) and len(shape) > 0 and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape
    )
    if not ok:
        raise ValueError(f"DataSpace shape must be a non-empty tuple of positive ints, the shape of one item such as (1, 32, 32), got {shape!r}")
    return tuple(int(n) for n in shape)


def _checked_range(value_range: object) -> tuple[float, float] | None:
    if value_range is None:
        return None
    ok = isinstance(value_range, (tuple, list)) and len(value_range) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value_range
    )
    if not ok or not value_range[0] < value_range[1]:
        raise ValueError(
            f"DataSpace value_range must be None (values not bounded, e.g. latents) or a pair (low, high) of finite numbers "
            f"with low < high, e.g. (-1.0, 1.0) for images, got {value_range!r}"
        )
    return (float(value_range[0]), float(value_range[1]))


MNIST_PIXELS = DataSpace((1, 32, 32), (-1.0, 1.0))


def check_x0(x0: torch.Tensor, space: DataSpace | None, name: str = "x0") -> None:
    """``x0`` must be a batch of data of ``space`` (:func:`~ddpm_helpers.checks.check_data`), or for
    ``space=None`` a batch of images (B, C, H, W) in [-1, 1] by the package's rule (finite, within
    [-1, 1], and not evidently [0, 1] images: :func:`~ddpm_helpers.checks.check_signed_range`).
    Other data (latents, vectors, light images) is passed on purpose with its own ``space``."""
    intentional = f"pass space=dh.DataSpace({name}.shape[1:]) (no range) or the DataSpace the data lives in"
    if space is not None:
        if not isinstance(space, DataSpace):
            raise ValueError(f"space must be a dh.DataSpace (e.g. dh.MNIST_PIXELS) or None for images in [-1, 1], got {type(space).__name__}")
        check_data(x0, space, name, intentional=intentional)
        return
    check_batch(x0, name)
    if x0.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images (B, C, H, W), got shape {tuple(x0.shape)} (one image: {name}[None] adds the batch "
            f"dimension; for data of another shape, {intentional})"
        )
    check_signed_range(x0, name, MNIST_PIXELS.value_range, intentional=intentional)
