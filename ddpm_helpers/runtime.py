"""Where the code runs: choosing and describing the device, seeding, and the process group.

Every number the book reports names the device it was measured on (:func:`describe_device`).
"""

from __future__ import annotations

import platform
import random

import numpy as np
import torch
import torch.distributed as dist


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when available, else Apple's MPS, else the CPU; ``prefer`` (e.g. "cpu") overrides."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | str) -> str:
    """A human-readable name of the device, e.g. 'NVIDIA H100 80GB HBM3' or 'CPU (2 threads, x86_64)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{device.type.upper()} ({threads} thread{'s' if threads != 1 else ''}, {platform.machine()})"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (for code that uses global RNGs) and return a fresh CPU generator.

    The package's own stochastic functions take ``generator=`` instead of relying on global state,
    and never call this behind the reader's back: a chapter calls it once, visibly.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised (torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
