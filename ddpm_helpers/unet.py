"""The noise-prediction network eps_θ(x_t, t[, y]): a small U-Net for 32×32 images.

It knows nothing about noise schedules: it maps (x_t, t, y) to a tensor of x_t's shape.
Pieces: sinusoidal timestep embeddings, residual blocks (GroupNorm + SiLU) that add the time
(and class) embedding, self-attention at chosen resolutions, and a down/up path joined by skip
connections. Taught in: 03_unet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_images
from .config import Config


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020).

    emb[:, i] = sin(t · ω_i) for i < dim/2 and cos(t · ω_{i − dim/2}) after, with
    ω_i = max_period^(−i / (dim/2)). t: (B,) integer or float; returns (B, dim) float32.
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (channels must be a multiple of 8)."""
    return nn.GroupNorm(8, channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, add the embedding, GroupNorm → SiLU → dropout → conv, plus a skip.

    The embedding (time, plus class when conditional) is projected to ``out_channels`` and added
    to every pixel of the first convolution's output.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
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
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        # (B, heads, positions, head_dim) for scaled_dot_product_attention
        attended = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """eps_θ(x_t, t, y): predicts the noise in x_t.

    Args:
        channels: width of the first level; level i has ``channels * channel_mults[i]``.
        channel_mults: one entry per resolution level; each level after the first halves H and W.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (e.g. 8 for 8×8) that get self-attention.
        num_classes: None for an unconditional model; else labels 0..num_classes−1 are embedded,
            and the extra index ``num_classes`` is the learned *null* class used when ``y`` is None
            (the unconditional branch of classifier-free guidance).
    """

    def __init__(
        self,
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (8,),
        num_classes: int | None = None,
        image_channels: int = 1,
        image_size: int = 32,
    ):
        super().__init__()
        if channels % 8:
            raise ValueError(f"channels must be a multiple of 8, got {channels}")
        if not channel_mults:
            raise ValueError("channel_mults must have at least one level")
        if image_size % 2 ** (len(channel_mults) - 1):
            raise ValueError(
                f"image_size {image_size} cannot be halved {len(channel_mults) - 1} times (channel_mults={channel_mults})"
            )
        self.channels = channels
        self.num_classes = num_classes
        self.image_size = image_size
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        self.stem = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [channels]
        width, size = channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(self._stage(width, channels * mult, emb_dim, size in attention_resolutions))
                width = channels * mult
                skip_channels.append(width)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skip_channels.append(width)
                size //= 2
        self.mid = nn.ModuleList([ResBlock(width, width, emb_dim), SelfAttention(width), ResBlock(width, width, emb_dim)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = channels * mult
                self.up.append(self._stage(width + skip_channels.pop(), out, emb_dim, size in attention_resolutions))
                width = out
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)))
                size *= 2
        self.head = nn.Sequential(group_norm(width), nn.SiLU(), nn.Conv2d(width, image_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # start by predicting eps_hat = 0
        nn.init.zeros_(self.head[-1].bias)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, emb_dim: int, attention: bool) -> nn.ModuleList:
        layers = [ResBlock(in_channels, out_channels, emb_dim)]
        if attention:
            layers.append(SelfAttention(out_channels))
        return nn.ModuleList(layers)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The embedding every ResBlock receives: time MLP output, plus the class embedding."""
        emb = self.time_mlp(timestep_embedding(t, self.channels))
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes)
            elif int(y.min()) < 0 or int(y.max()) > self.num_classes:
                raise ValueError(f"y must hold labels in [0, {self.num_classes}] ({self.num_classes} = null class)")
            emb = emb + self.class_emb(y)
        elif y is not None:
            raise ValueError("y was given but this UNet is unconditional (num_classes=None)")
        return emb

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_t: (B, C, H, W); t: (B,) int64; y: optional (B,) int64 labels. Returns eps_hat, x_t's shape."""
        check_images(x_t, "x_t")
        if x_t.shape[-1] != self.image_size or x_t.shape[-2] != self.image_size:
            raise ValueError(f"x_t must be {self.image_size}×{self.image_size}, got shape {tuple(x_t.shape)}")
        if t.ndim != 1 or t.shape[0] != x_t.shape[0]:
            raise ValueError(f"t must have shape ({x_t.shape[0]},), got {tuple(t.shape)}")
        emb = self.embed(t, y)
        h = self.stem(x_t)
        skips = [h]
        for layer in self.down:
            h = self._run(layer, h, emb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(layer, h, emb)
        return self.head(h)

    @staticmethod
    def _run(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.ModuleList):  # a stage: ResBlock, optionally followed by attention
            for block in layer:
                h = block(h, emb) if isinstance(block, ResBlock) else block(h)
            return h
        return layer(h)  # down- or up-sampling


def make_unet(config: Config, num_classes: int | None = None) -> UNet:
    """The U-Net described by ``config`` (unconditional unless ``num_classes`` is given)."""
    return UNet(
        channels=config.channels,
        channel_mults=config.channel_mults,
        num_res_blocks=config.num_res_blocks,
        attention_resolutions=config.attention_resolutions,
        num_classes=num_classes,
        image_size=config.image_size,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
