"""Input checks shared by the package: each raises a ``ValueError`` naming the argument,
what was expected and what arrived."""

from __future__ import annotations

import torch


def check_images(x: torch.Tensor, name: str = "x", *, in_model_range: bool = False) -> None:
    """``x`` must be a floating (B, C, H, W) tensor; with ``in_model_range``, also within [-1, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if in_model_range and x.numel():
        low, high = float(x.min()), float(x.max())
        if low < -1 - 1e-4 or high > 1 + 1e-4:
            raise ValueError(
                f"{name} must lie in [-1, 1] (use dh.to_model_range on [0, 1] images), "
                f"got values in [{low:.3g}, {high:.3g}]"
            )


def check_timesteps(t: torch.Tensor, batch_size: int, T: int, name: str = "t") -> None:
    """``t`` must be a (B,) integer tensor with values in [0, T)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a (B,) int64 tensor, got {type(t).__name__}")
    if t.ndim != 1 or t.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape ({batch_size},), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer timestep indices, got dtype {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(
            f"{name} must lie in [0, {T}) (0-based; the paper's step is t + 1), "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """``a`` and ``b`` must have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
