"""The package's image convention, and the one rule by which it is checked: images are (B, C, H, W)
floats in [-1, 1] (black −1, white +1); [0, 1] and [0, 255] appear only at the edges (loading, plotting).

Images in [0, 1] passed where [-1, 1] images belong are the commonest silent mistake: they are legal
values, so nothing fails, and every number computed from them is wrong (an autoencoder reconstructs
them at a few dB; PSNR gains 6 dB). Any [0, 1] tensor is also a legal [-1, 1] tensor, so no check can
be both exact and catch them; the rule below refuses only what is evidently [0, 1] data:

1. Every value is finite and lies in [-1, 1] (to within 1e-4). Values above 1 are refused, with the
   hint that data with no negative value up to 255 looks like [0, 255] pixels.
2. A batch with no negative value at all, in which some image is not one flat colour, is refused as
   [0, 1] images: a digit, a photograph, noise in [0, 1] — anything with a dark background or dark
   detail has negative values in [-1, 1].

Never refused: any tensor with a negative value, and flat images (all white, all mid-grey, any one
colour), alone or together, e.g. a uniform grey image against a white one. Refused although legal:
images that vary but are nowhere darker than mid-grey. Functions that take ``value_range=`` accept
those when told the range, ``value_range=(-1, 1)``: a stated range is checked exactly (rule 1 only).
Taught in: the notation page (images in [-1, 1]); every function that takes images cites this rule.
"""

from __future__ import annotations

import math

import torch

from .checks import check_finite, check_images, read_back, values_checked

MODEL_RANGE = (-1.0, 1.0)


def check_model_images(x: torch.Tensor, name: str, *, value_range: tuple[float, float] | None = None) -> None:
    """``x`` must be a floating, finite (B, C, H, W) batch of images by the rule of this module.

    ``value_range=None``: images in [-1, 1], with rule 2 refusing evident [0, 1] images. A given
    ``(low, high)``: every value must lie in it (no guessing). The values are read only outside
    :func:`~ddpm_helpers.checks.validated` (the caller's loop has checked them once).
    """
    check_images(x, name)
    if value_range is not None:
        check_value_range(value_range)
    if values_checked() or not x.numel():
        return
    check_finite(x, name)
    low, high = value_range or MODEL_RANGE
    x_min, x_max = read_back(torch.stack([x.min(), x.max()]))  # one device read, counted
    if x_min < low - 1e-4 or x_max > high + 1e-4:
        hint = "use dh.to_model_range on [0, 1] images"
        if value_range is None and x_min >= 0 and x_max <= 255 + 1e-4:
            hint = "these look like [0, 255] pixels: convert them with x / 127.5 - 1"
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}] ({hint}), got values in [{x_min:.3g}, {x_max:.3g}]")
    if value_range is None and x_min >= 0 and read_back((x.flatten(1).amax(1) > x.flatten(1).amin(1)).any()):
        raise ValueError(
            f"{name} must lie in [-1, 1] with black at -1, but no value is negative while some image varies "
            f"(range [{x_min:.3g}, {x_max:.3g}]): these look like [0, 1] images; convert them with dh.to_model_range. "
            f"(Flat images, all white or all grey, are accepted; where a light [-1, 1] image is meant, pass value_range=(-1, 1) if the function takes it.)"
        )


def check_value_range(value_range: object, name: str = "value_range") -> None:
    """``value_range`` must be a pair (low, high) of finite numbers with low < high."""
    ok = isinstance(value_range, tuple) and len(value_range) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value_range
    )
    if not ok or value_range[0] >= value_range[1]:
        raise ValueError(f"{name} must be a tuple (low, high) of finite numbers with low < high, e.g. (0, 1), got {value_range!r}")


def to_unit_interval(x: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Pixels (x − low) / (high − low) in [0, 1], in float64 on the CPU; [-1, 1] when ``value_range`` is None."""
    x = x.detach().double().cpu()
    if value_range is None:
        return (x + 1) / 2
    low, high = value_range
    return (x - low) / (high - low)
