"""The pieces of the U-Net: sinusoidal timestep embeddings, residual blocks (GroupNorm + SiLU)
that take the time (and class) embedding, self-attention over positions, and the down-sampling
choices. Taught in: 03_unet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020).

    emb[:, i] = sin(t · ω_i) for i < dim/2 and cos(t · ω_{i − dim/2}) after, with
    ω_i = max_period^(−i / (dim/2)). t: (B,) integer or float; returns (B, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be a (B,) tensor of timesteps, got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class WSConv2d(nn.Conv2d):
    """A convolution whose kernel is standardised (zero mean, unit variance per output channel) before
    use (Qiao et al. 2019); paired with GroupNorm it can stabilise training (used by lucidrains'
    denoising-diffusion-pytorch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) * torch.rsqrt(var + 1e-5), self.bias, self.stride, self.padding)


def make_downsample(channels: int, kind: str) -> nn.Module:
    """Halve H and W: a stride-2 3×3 convolution (``"conv"``), or space-to-depth, moving each 2×2 block
    of pixels into channels losslessly, then a 1×1 convolution (``"space_to_depth"``)."""
    if kind == "conv":
        return nn.Conv2d(channels, channels, 3, stride=2, padding=1)
    if kind == "space_to_depth":
        return nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * channels, channels, 1))
    raise ValueError(f"downsample must be 'conv' or 'space_to_depth', got {kind!r}")


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (channels must be a multiple of 8)."""
    return nn.GroupNorm(8, channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, then an adaptive GroupNorm → SiLU → dropout → conv, plus a skip.

    The embedding e (time, plus class when conditional) sets a per-channel scale and shift applied
    *after* the second normalisation: h ← GroupNorm(h)·(1 + scale(e)) + shift(e) (adaptive group
    norm, Dhariwal & Nichol 2021). Added before the normalisation instead, as in Ho et al. (2020),
    the part of the shift shared by a group's channels would be removed by the norm itself.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0, weight_standardization: bool = False):
        super().__init__()
        conv = WSConv2d if weight_standardization else nn.Conv2d
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)  # per-channel scale and shift
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map, with a residual."""

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        # (3, B, heads, positions, head_dim), contiguous: fused attention kernels need a unit last stride
        q, k, v = qkv.permute(1, 0, 2, 4, 3).contiguous().unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))
