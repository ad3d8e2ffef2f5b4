"""The noise-prediction network eps_θ(x_t, t[, y]): a small U-Net, built from its own config.

It knows nothing about noise schedules: it maps (x_t, t, y) to a tensor of x_t's shape. Its
:class:`UNetConfig` is saved with its weights, so a checkpoint or a shipped model can be checked
against the network it is loaded into. The same network serves pixels (1×32×32) and an
autoencoder's latents (e.g. 4×8×8): only the config differs. Taught in: 03_unet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import ConfigMixin, check_choice, check_images, check_labels, check_positive_int
from .layers import ResBlock, SelfAttention, make_downsample, group_norm, timestep_embedding

DOWNSAMPLES = ("conv", "space_to_depth")


@dataclass(frozen=True)
class UNetConfig(ConfigMixin):
    """Everything that defines the network's shape (the fields are described in :class:`UNet`)."""

    channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)
    patch_size: int = 2  # space-to-depth stem: the U-Net runs at image_size / patch_size (4x faster on a CPU)
    downsample: str = "conv"
    weight_standardization: bool = False
    image_channels: int = 1
    image_size: int = 32
    num_classes: int | None = None

    def __post_init__(self) -> None:
        for name in ("channels", "num_res_blocks", "patch_size", "image_channels", "image_size"):
            check_positive_int(getattr(self, name), name)
        if self.channels % 8:
            raise ValueError(f"channels must be a multiple of 8 (GroupNorm groups), got {self.channels}")
        if not isinstance(self.channel_mults, tuple) or not self.channel_mults:
            raise ValueError(f"channel_mults must be a non-empty tuple of positive integers, got {self.channel_mults!r}")
        for mult in self.channel_mults:
            check_positive_int(mult, "channel_mults entries")
        check_choice(self.downsample, DOWNSAMPLES, "downsample")
        if not isinstance(self.weight_standardization, bool):
            raise ValueError(f"weight_standardization must be True or False, got {self.weight_standardization!r}")
        if self.num_classes is not None:
            check_positive_int(self.num_classes, "num_classes")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size must be a positive divisor of image_size {self.image_size}, got {self.patch_size}")
        size = self.image_size // self.patch_size
        if size % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(
                f"image_size {self.image_size} / patch_size {self.patch_size} cannot be halved {len(self.channel_mults) - 1} times (channel_mults={self.channel_mults})"
            )
        sizes = {size // 2**level for level in range(len(self.channel_mults))}
        if not isinstance(self.attention_resolutions, tuple) or not set(self.attention_resolutions) <= sizes:
            raise ValueError(f"attention_resolutions must be a tuple of feature-map sizes the network reaches, {sorted(sizes)}; got {self.attention_resolutions!r}")


class UNet(nn.Module):
    """eps_θ(x_t, t, y): predicts the noise in x_t, built from a :class:`UNetConfig`, whose fields are:

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

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise ValueError(f"config must be a dh.UNetConfig, got {type(config).__name__}")
        self.config = config
        channels, channel_mults, num_res_blocks = config.channels, config.channel_mults, config.num_res_blocks
        attention_resolutions, num_classes, image_channels = config.attention_resolutions, config.num_classes, config.image_channels
        image_size, patch_size, downsample, weight_standardization = config.image_size, config.patch_size, config.downsample, config.weight_standardization
        self.channels = channels
        self.num_classes = num_classes
        self.image_channels = image_channels
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
            else:  # num_classes itself is the null class
                check_labels(y, t.shape[0], self.num_classes + 1)
            emb = emb + self.class_emb(y)
        elif y is not None:
            raise ValueError("y was given but this UNet is unconditional (num_classes=None)")
        return emb

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_t: (B, C, H, W); t: (B,) int64; y: optional (B,) int64 labels. Returns eps_hat, x_t's shape."""
        check_images(x_t, "x_t")
        expected = (self.image_channels, self.image_size, self.image_size)
        if tuple(x_t.shape[1:]) != expected:
            raise ValueError(f"x_t must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got shape {tuple(x_t.shape)}")
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




def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
