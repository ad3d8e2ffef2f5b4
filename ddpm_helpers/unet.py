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
        patch_size: 1, or p > 1 to fold each p×p patch of pixels into channels first (space-to-depth)
            and unfold the output at the end: the network then runs at (H/p)×(W/p), p² times cheaper
            at its top level. ``attention_resolutions`` refer to the sizes inside the network.
        downsample: ``"conv"`` (strided convolution) or ``"space_to_depth"`` between levels.
        weight_standardization: standardise every ResBlock convolution's kernel.
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
        patch_size: int = 1,
        downsample: str = "conv",
        weight_standardization: bool = False,
    ):
        super().__init__()
        if channels % 8:
            raise ValueError(f"channels must be a multiple of 8, got {channels}")
        if not channel_mults:
            raise ValueError("channel_mults must have at least one level")
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size must be a positive divisor of image_size {image_size}, got {patch_size}")
        if (image_size // patch_size) % 2 ** (len(channel_mults) - 1):
            raise ValueError(
                f"image_size {image_size} / patch_size {patch_size} cannot be halved {len(channel_mults) - 1} times (channel_mults={channel_mults})"
            )
        self.channels = channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.patch_size = patch_size
        self.weight_standardization = weight_standardization
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        self.stem = nn.Conv2d(image_channels * patch_size**2, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [channels]
        width, size = channels, image_size // patch_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(self._stage(width, channels * mult, emb_dim, size in attention_resolutions, weight_standardization))
                width = channels * mult
                skip_channels.append(width)
            if level < len(channel_mults) - 1:
                self.down.append(make_downsample(width, downsample))
                skip_channels.append(width)
                size //= 2
        ws = weight_standardization
        self.mid = nn.ModuleList([ResBlock(width, width, emb_dim, weight_standardization=ws), SelfAttention(width), ResBlock(width, width, emb_dim, weight_standardization=ws)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                out = channels * mult
                self.up.append(self._stage(width + skip_channels.pop(), out, emb_dim, size in attention_resolutions, ws))
                width = out
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1)))
                size *= 2
        self.head = nn.Sequential(group_norm(width), nn.SiLU(), nn.Conv2d(width, image_channels * patch_size**2, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # start by predicting eps_hat = 0
        nn.init.zeros_(self.head[-1].bias)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, emb_dim: int, attention: bool, weight_standardization: bool = False) -> nn.ModuleList:
        layers = [ResBlock(in_channels, out_channels, emb_dim, weight_standardization=weight_standardization)]
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
        h = self.stem(F.pixel_unshuffle(x_t, self.patch_size) if self.patch_size > 1 else x_t)
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
        out = self.head(h)
        return F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out

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
        patch_size=config.patch_size,
        downsample=config.downsample,
        weight_standardization=config.weight_standardization,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
