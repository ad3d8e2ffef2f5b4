"""Validation at the package's boundary: each check raises a ``ValueError`` naming the argument,
what was expected and what arrived.

Checks of tensor *values* (a timestep range, say) read the tensor back to the host, which on a
GPU waits for the device. A loop that has validated its inputs once runs its steps inside
:func:`validated`, and the steps then skip those value checks: once per call, not once per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_VALIDATED: ContextVar[bool] = ContextVar("ddpm_helpers_validated", default=False)
_device_reads = 0  # how many times a check has read tensor values back to the host


def read_back(values: torch.Tensor):
    """``values.tolist()``: copy a (small) tensor to the host, as Python numbers. On a GPU this
    waits for the device (a synchronisation), so every check that reads a tensor's values goes
    through here, where :func:`count_device_reads` counts it."""
    global _device_reads
    _device_reads += 1
    return values.detach().tolist()


class DeviceReads:
    """The number of :func:`read_back` calls since the block began (``count``), live inside it."""

    def __init__(self) -> None:
        self._start, self._end = _device_reads, None

    @property
    def count(self) -> int:
        return (_device_reads if self._end is None else self._end) - self._start


@contextlib.contextmanager
def count_device_reads() -> Iterator[DeviceReads]:
    """Count the device reads of the checks run inside the block::

        with dh.checks.count_device_reads() as reads:
            dh.sample(...)
        print(reads.count)
    """
    reads = DeviceReads()
    try:
        yield reads
    finally:
        reads._end = _device_reads


@contextlib.contextmanager
def validated() -> Iterator[None]:
    """Within this block, value checks that would synchronise with the device are skipped:
    the caller has checked those values once already."""
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


def values_checked() -> bool:
    """True inside :func:`validated`: the caller has already checked tensor values once."""
    return _VALIDATED.get()


def check_images(x: torch.Tensor, name: str = "x", *, value_range: tuple[float, float] | None = None) -> None:
    """``x`` must be a floating (B, C, H, W) tensor; with ``value_range``, also within it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if value_range is not None:
        check_range(x, name, value_range)


def _value_summary(x: torch.Tensor) -> tuple[bool, float, float, bool]:
    """(every value finite, min, max, some item not flat) of ``x`` (B, ...) in one device read."""
    items = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)
    varies = (items.amax(dim=1) > items.amin(dim=1)).any()
    stats = torch.stack([torch.isfinite(x).all().double(), x.min().double(), x.max().double(), varies.double()])
    finite, low, high, some_varies = read_back(stats)
    return bool(finite), low, high, bool(some_varies)


def _raise_if_outside(name: str, value_range: tuple[float, float], low: float, high: float, hint: str = "") -> None:
    if low < value_range[0] - 1e-4 or high > value_range[1] + 1e-4:
        advice = "use dh.to_model_range on [0, 1] images"
        if low >= 0 and 1 < high <= 255 + 1e-4:
            advice += "; [0, 255] pixels become [-1, 1] by x / 127.5 - 1"
        raise ValueError(f"{name} must lie in [{value_range[0]:g}, {value_range[1]:g}] ({advice}{hint}), got values in [{low:.3g}, {high:.3g}]")


def check_range(x: torch.Tensor, name: str, value_range: tuple[float, float]) -> None:
    """Every value of ``x`` must lie in ``value_range`` (to within 1e-4)."""
    if x.numel():
        low, high = read_back(torch.stack([x.min(), x.max()]))
        _raise_if_outside(name, value_range, low, high)


def _raise_if_not_finite(x: torch.Tensor, name: str) -> None:
    bad = int((~torch.isfinite(x)).sum())
    raise ValueError(f"{name} must be finite, got {bad:,} NaN or infinite value(s) of {x.numel():,}")


def check_finite(x: torch.Tensor, name: str) -> None:
    """Every value of ``x`` must be finite (NaN passes every range check, so it is checked apart)."""
    if x.numel() and not read_back(torch.isfinite(x).all()):
        _raise_if_not_finite(x, name)


def check_data(items: torch.Tensor, space, name: str, *, intentional: str = "") -> None:
    """``items`` must be (N, *space.shape), finite and, where the :class:`~ddpm_helpers.diffusion.DataSpace`
    has a range, within it; for a range symmetric about 0, see :func:`check_signed_range`."""
    check_batch(items, name)
    if tuple(items.shape[1:]) != tuple(space.shape):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, space.shape))}) for this data space, got {tuple(items.shape)}")
    if space.value_range is not None:
        check_signed_range(items, name, space.value_range, intentional=intentional)
    else:
        check_finite(items, name)


def check_signed_range(x: torch.Tensor, name: str, value_range: tuple[float, float], *, intentional: str = "") -> None:
    """``x`` (B, ...) must be finite and lie in ``value_range`` (one device read). For a range
    symmetric about 0 (images in [-1, 1], black at −1), a batch with no negative value at all in
    which some item is not one flat value is refused too: it is almost surely [0, 1] images (the
    rule of :mod:`ddpm_helpers.image_range`; flat items, e.g. all grey or all white, pass).
    ``intentional`` tells the reader how to pass such data on purpose where the caller allows it."""
    if not x.numel():
        return
    finite, low, high, some_varies = _value_summary(x)
    if not finite:
        _raise_if_not_finite(x, name)
    hint = f"; to pass other data on purpose, {intentional}" if intentional else ""
    _raise_if_outside(name, value_range, low, high, hint)
    if value_range[0] == -value_range[1] and low >= 0 and some_varies:
        raise ValueError(
            f"{name} must lie in [{value_range[0]:g}, {value_range[1]:g}] with black at {value_range[0]:g}, but has no negative value "
            f"at all while some item varies (range [{low:.3g}, {high:.3g}]): these look like [0, 1] images; convert them with dh.to_model_range"
            + (f" (if they really are [{value_range[0]:g}, {value_range[1]:g}] data, {intentional})" if intentional else "")
        )


def check_batch(x: torch.Tensor, name: str = "x") -> None:
    """``x`` must be a floating tensor (B, ...) with a batch dimension and at least one item dimension."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension and item dimensions (B, ...), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one item, got an empty batch of shape {tuple(x.shape)}")


def _check_indices(x: torch.Tensor, batch_size: int, low: int, high: int | None, name: str, noun: str, hint: str = "") -> None:
    """``x`` must be a (batch_size,) integer tensor with values in [low, high): labels and timesteps
    share this contract. The values are checked only outside :func:`validated` (checking them
    synchronises with the device)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a ({batch_size},) int64 tensor of {noun}s, got {type(x).__name__}")
    if x.ndim != 1 or x.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape ({batch_size},), one {noun} per item, got shape {tuple(x.shape)}")
    if x.is_floating_point() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of {noun}s, got dtype {x.dtype}")
    if high is not None and not values_checked() and x.numel():
        smallest, largest = read_back(torch.stack([x.min(), x.max()]))
        if smallest < low or largest >= high:
            raise ValueError(f"{name} must hold {noun}s in [{low}, {high - 1}]{hint}, got values in [{smallest}, {largest}]")


def check_labels(y: torch.Tensor, batch_size: int, num_labels: int | None, name: str = "y") -> None:
    """``y`` must be a (B,) integer tensor of labels in [0, num_labels) (None: any values)."""
    _check_indices(y, batch_size, 0, num_labels, name, "label")


def check_class_labels(y: torch.Tensor, batch_size: int, num_classes: int | None, name: str = "y", *, null_allowed: bool = False) -> torch.Tensor:
    """``y`` checked as the class labels of a model with ``num_classes`` classes (None: an
    unconditional model, which takes none) and returned as int64 (any integer dtype is accepted).
    A label lies in [0, num_classes), or in [0, num_classes] where the null class may be asked for
    (``null_allowed``, e.g. a loss on label-dropped batches)."""
    if num_classes is None:
        raise ValueError(
            f"{name} holds class labels, but the model is unconditional (it has no num_classes); pass {name}=None, "
            f"or use a class-conditional model such as dh.UNet(cfg.unet.replace(num_classes=10))"
        )
    hint = f" ({num_classes} is the null class)" if null_allowed else f" (the null class {num_classes} is not a label to ask for: pass {name}=None for unconditional samples)"
    _check_indices(y, batch_size, 0, num_classes + 1 if null_allowed else num_classes, name, "label", hint)
    return y.long()


def check_timesteps(t: torch.Tensor, batch_size: int, T: int, name: str = "t", *, low: int = 0) -> None:
    """``t`` must be a (B,) integer tensor with values in [low, T) (``low=-1`` allows "past the end")."""
    _check_indices(t, batch_size, low, T, name, "timestep", " (0-based; the paper's step is t + 1)")


def check_earlier(t_prev: torch.Tensor, t: torch.Tensor, name: str = "t_prev") -> None:
    """``t_prev`` must be an integer tensor of t's shape with −1 ≤ t_prev < t (−1: the clean data)."""
    if not isinstance(t_prev, torch.Tensor) or t_prev.shape != t.shape or t_prev.is_floating_point() or t_prev.dtype == torch.bool:
        got = f"{type(t_prev).__name__}" if not isinstance(t_prev, torch.Tensor) else f"shape {tuple(t_prev.shape)}, dtype {t_prev.dtype}"
        raise ValueError(f"{name} must be an integer tensor of t's shape {tuple(t.shape)}, got {got}")
    if t_prev.numel() and not _VALIDATED.get() and read_back(((t_prev >= t) | (t_prev < -1)).any()):
        raise ValueError(f"{name} must satisfy -1 <= {name} < t, got {name}={t_prev.tolist()} for t={t.tolist()}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """``a`` and ``b`` must have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_choice(value: object, choices: tuple, name: str) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> None:
    """``value`` must be an int (not a bool or a string) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_fraction(
    value: object, name: str, *, low: float = 0.0, high: float = 1.0, include_low: bool = True, include_high: bool = True
) -> None:
    """``value`` must be a finite real number in the interval from ``low`` to ``high``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
    if ok:
        ok = (value >= low if include_low else value > low) and (value <= high if include_high else value < high)
    if not ok:
        interval = f"{'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def config_to_dict(config: object) -> dict:
    """A frozen dataclass as a plain dict of primitives (tuples become lists, nested configs dicts)."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[field.name] = value
    return values


def config_from_dict(cls: type, values: dict):
    """Inverse of :func:`config_to_dict` for the flat dataclass ``cls`` (lists become tuples)."""
    if not isinstance(values, dict):
        raise ValueError(f"a {cls.__name__} must be read from a dict, got {type(values).__name__}")
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}; known: {sorted(names)}")
    return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})


class ConfigMixin:
    """What every component config (a frozen dataclass) shares: ``replace`` and a dict round trip."""

    def replace(self, **changes: object):
        """A copy with some fields changed, e.g. ``cfg.train.replace(lr=1e-3)``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of primitives (tuples become lists), safe for JSON and ``weights_only`` loading."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """Inverse of :meth:`to_dict`; unknown fields are an error."""
        return config_from_dict(cls, values)
