"""Exponential moving average of a model's weights, the weights the book samples with.

Taught in: 04_training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .checks import check_fraction


class EMA:
    """An exponential moving average of a model's weights: θ_ema ← decay·θ_ema + (1 − decay)·θ.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so early averages are
    not dominated by the random initialisation. Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        check_fraction(decay, "decay", include_high=False)
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s weights (same architecture) and copy its buffers."""
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for averaged, current in zip(self.model.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1 - decay)
        for averaged, current in zip(self.model.buffers(), model.buffers()):
            averaged.copy_(current)

    def state_dict(self) -> dict:
        """The averaged weights, the update count and the decay (for a checkpoint)."""
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
