"""Where the code runs: choosing and describing the device, seeding, and the process group.

Every number the book reports names the device it was measured on (:func:`describe_device`).
"""

from __future__ import annotations

import platform
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


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


def mixed_precision_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for training on ``device``: None on a CPU (no gain measured there), bfloat16
    on GPUs with native bf16 arithmetic (compute capability 8.0 and up: A100, H100, RTX 30xx and later),
    float16 with loss scaling on older ones. ``torch.cuda.is_bf16_supported()`` alone would say True on
    a T4 (7.5) through emulation, where bf16 convolutions are slow."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


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


def all_average(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """Average the gradients and the loss over all processes in one all-reduce; returns the mean loss."""
    _, size = world()
    if size == 1:
        return loss
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads] + [loss.detach().float().reshape(1)])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-1]


def any_process(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true in any process, so that all processes stop at the same step."""
    if world()[1] == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
