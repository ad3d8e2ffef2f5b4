"""A small convolutional autoencoder whose latents a diffusion model can learn instead of pixels.

Latent diffusion (Rombach et al. 2022) first compresses an image x (B, C, H, W) into a smaller
latent z = E(x) (B, c, H/f, W/f), trains the diffusion model on z, and maps samples back with
x̂ = D(z). With the defaults here a 1×32×32 MNIST digit becomes a 4×8×8 latent (f = 4).

The network knows nothing about noise. Its building block is a residual block whose branch ends in
a squeeze-and-excitation channel gate (Hu et al. 2018):

    gate = σ(W₂ · ReLU(W₁ · mean_{h,w}(h) + b₁) + b₂)    (B, C, 1, 1), every entry in (0, 1)
    block(x) = x + gate ⊙ h,   h = conv₃ₓ₃(ReLU(conv₃ₓ₃(x)))

Taught in: the latent-diffusion chapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import ConfigMixin, check_fraction, check_images, check_positive_int, validated
from .image_range import check_model_images


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: x ⊙ σ(W₂ · ReLU(W₁ · mean_{h,w}(x))).

    x: (B, C, H, W) → same shape; :meth:`gate` returns the (B, C, 1, 1) factors in (0, 1).
    The hidden width is ``max(min_hidden, channels // reduction)``. Why a floor: with 16 or 32
    channels and reduction 8 the hidden layer would have 2 or 4 units, a bottleneck so narrow that
    the gate can barely express per-channel choices. The floor keeps it expressive at a negligible
    parameter cost (a few hundred weights next to the tens of thousands of a 3×3 convolution).
    """

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 4):
        super().__init__()
        check_positive_int(channels, "channels")
        check_positive_int(reduction, "reduction")
        check_positive_int(min_hidden, "min_hidden")
        self.channels = channels
        self.hidden_channels = max(min_hidden, channels // reduction)
        self.squeeze = nn.Conv2d(channels, self.hidden_channels, 1)  # W₁, b₁
        self.excite = nn.Conv2d(self.hidden_channels, channels, 1)  # W₂, b₂

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """σ(W₂ · ReLU(W₁ · mean_{h,w}(x) + b₁) + b₂): x (B, C, H, W) → (B, C, 1, 1)."""
        check_images(x, "x")
        if x.shape[1] != self.channels:
            raise ValueError(f"x must have {self.channels} channels, got shape {tuple(x.shape)}")
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class AttentionResBlock(nn.Module):
    """x + CA(conv₃ₓ₃(ReLU(conv₃ₓ₃(x)))), with CA the channel gate (the identity if not ``attention``).

    x: (B, C, H, W) → same shape. When the last convolution is zero the block is the identity,
    so a deep stack starts close to a plain path and each block learns a correction.
    """

    def __init__(self, channels: int, *, attention: bool = True, reduction: int = 8, min_hidden: int = 4):
        super().__init__()
        check_positive_int(channels, "channels")
        if not isinstance(attention, bool):
            raise ValueError(f"attention must be a bool, got {attention!r}")
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels, reduction, min_hidden) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(F.relu(self.conv1(x))))


@dataclass(frozen=True)
class AutoencoderConfig(ConfigMixin):
    """Every value that defines an :class:`Autoencoder`; saved with its weights.

    ``channels`` lists the widths of the stages; each stage halves the resolution once, so the
    latent is (latent_channels, image_size / 2^len(channels), image_size / 2^len(channels)).
    """

    in_channels: int = 1
    image_size: int = 32
    channels: tuple[int, ...] = (32, 64)
    latent_channels: int = 4
    attention: bool = True
    reduction: int = 8
    min_hidden: int = 4

    def __post_init__(self) -> None:
        for name in ("in_channels", "image_size", "latent_channels", "reduction", "min_hidden"):
            check_positive_int(getattr(self, name), name)
        channels = self.channels
        if (
            not isinstance(channels, tuple)
            or not channels
            or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
        ):
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {channels!r}")
        factor = 2 ** len(channels)
        if self.image_size % factor:
            raise ValueError(
                f"image_size must be divisible by 2**len(channels) = {factor} "
                f"(one halving per entry of channels={channels}), got {self.image_size}"
            )
        if not isinstance(self.attention, bool):
            raise ValueError(f"attention must be a bool, got {self.attention!r}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, image_size / 2^len(channels), image_size / 2^len(channels))."""
        size = self.image_size // 2 ** len(self.channels)
        return (self.latent_channels, size, size)


class Autoencoder(nn.Module):
    """E: x (B, C, H, W) → z (B, *config.latent_shape) and D: z → x̂ (B, C, H, W).

    Encoder: 3×3 conv to channels[0]; per stage a residual block and a stride-2 3×3 conv to the
    next width (the last keeps channels[-1]); a residual block; a 1×1 conv to latent_channels.
    The decoder mirrors it with nearest-neighbour ×2 upsampling and ends in one logit a per pixel;
    :meth:`decode` maps it to x̂ = 2σ(a) − 1 in (-1, 1), and :func:`reconstruction_loss` compares
    σ(a) with the pixel's intensity by cross-entropy.
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        if not isinstance(config, AutoencoderConfig):
            raise ValueError(f"config must be an AutoencoderConfig, got {type(config).__name__}")
        self.config = config
        widths = config.channels
        options = dict(attention=config.attention, reduction=config.reduction, min_hidden=config.min_hidden)

        encoder: list[nn.Module] = [nn.Conv2d(config.in_channels, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            next_width = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            encoder += [AttentionResBlock(width, **options), nn.Conv2d(width, next_width, 3, stride=2, padding=1)]
        encoder += [AttentionResBlock(widths[-1], **options), nn.Conv2d(widths[-1], config.latent_channels, 1)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            nn.Conv2d(config.latent_channels, widths[-1], 1),
            AttentionResBlock(widths[-1], **options),
        ]
        width = widths[-1]
        for next_width in reversed(widths):
            decoder += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, next_width, 3, padding=1),
                AttentionResBlock(next_width, **options),
            ]
            width = next_width
        decoder.append(nn.Conv2d(widths[0], config.in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x). x: (B, in_channels, image_size, image_size) in [-1, 1] → z: (B, *latent_shape).

        Images evidently in [0, 1] or [0, 255] are refused (the rule of :mod:`ddpm_helpers.image_range`:
        values outside [-1, 1], or none negative while some image varies; flat images pass).
        """
        check_model_images(x, "x")
        size = self.config.image_size
        expected = (self.config.in_channels, size, size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, expected))}), got shape {tuple(x.shape)}")
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output a = D(z), one logit per pixel: x̂ = 2σ(a) − 1 (see :meth:`decode`)."""
        check_images(z, "z")
        expected = self.config.latent_shape
        if tuple(z.shape[1:]) != expected:
            raise ValueError(
                f"z must have shape (B, {', '.join(map(str, expected))}) (the config's latent_shape), "
                f"got shape {tuple(z.shape)}"
            )
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x̂ = 2σ(D(z)) − 1 = tanh(D(z)/2), in (-1, 1) like the images.
        z: (B, *latent_shape) → x̂: (B, in_channels, image_size, image_size)."""
        return torch.tanh(self.decode_logits(z) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def reconstruction_loss(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between each pixel's intensity p = (x + 1)/2 in [0, 1] and σ(a), a = D(E(x)):

        L = mean over B, C, H, W of −[p log σ(a) + (1 − p) log(1 − σ(a))].

    MNIST pixels are nearly all 0 or 1. Squared error through a squashing output stalls once the
    output saturates at the background (its gradient carries the factor σ'(a) → 0), and without a
    squashing output the background is reconstructed with faint noise; the cross-entropy's
    gradient, σ(a) − p, does neither. Its minimum is the entropy of the grey pixels, not 0.
    x: (B, C, H, W) in [-1, 1], B ≥ 1 → scalar. Images evidently in [0, 1] or [0, 255] are refused
    by the rule of :mod:`ddpm_helpers.image_range` (flat images, e.g. all white, pass).
    """
    if not isinstance(model, Autoencoder):
        raise ValueError(f"model must be an Autoencoder, got {type(model).__name__}")
    check_model_images(x, "x")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one image, got an empty batch of shape {tuple(x.shape)}")
    with validated():  # checked once here, not again inside encode
        return F.binary_cross_entropy_with_logits(model.decode_logits(model.encode(x)), (x + 1) / 2)


def warmup_cosine_lr(step: int, *, num_steps: int, lr: float, warmup_steps: int) -> float:
    """Learning rate of 0-based ``step``: lr·(step+1)/warmup_steps during the warm-up, then
    lr·½(1 + cos(π·p)) with p = (step − warmup_steps) / (num_steps − warmup_steps); 0 at num_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, num_steps - warmup_steps))
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_autoencoder(
    model: Autoencoder,
    images: torch.Tensor,
    *,
    num_steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup_steps: int = 50,
    generator: torch.Generator,
    progress: bool = True,
) -> list[float]:
    """Minimise :func:`reconstruction_loss` with AdamW; returns the loss of every step.

    Each step draws ``batch_size`` images with replacement (indices from ``generator``), uses the
    learning rate of :func:`warmup_cosine_lr` and clips the gradient norm to 1.0. A non-finite
    loss stops training with a ``ValueError`` naming the step. images: (N, C, H, W) in [-1, 1],
    checked once before the first step by the rule of :mod:`ddpm_helpers.image_range` (evident
    [0, 1] or [0, 255] images are refused; flat ones pass). Taught in: 06_latent.
    """
    if not isinstance(model, Autoencoder):
        raise ValueError(f"model must be an Autoencoder, got {type(model).__name__}")
    check_positive_int(num_steps, "num_steps")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(warmup_steps, "warmup_steps", minimum=0)
    check_fraction(lr, "lr", high=float("inf"), include_low=False)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_model_images(images, "images")
    if images.shape[0] == 0:
        raise ValueError(f"images must hold at least one image, got shape {tuple(images.shape)}")

    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    was_training = model.training
    model.train()
    losses: list[float] = []
    report_every = max(1, num_steps // 10)
    for step in range(num_steps):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step, num_steps=num_steps, lr=lr, warmup_steps=warmup_steps)
        index = torch.randint(images.shape[0], (batch_size,), generator=generator, device=generator.device)
        x = images[index.to(images.device)].to(device)
        with validated():  # the images were checked once above
            loss = reconstruction_loss(model, x)
        if not torch.isfinite(loss):
            model.train(was_training)
            raise ValueError(f"reconstruction loss became non-finite at step {step}: {loss.item()} (try a lower lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress and ((step + 1) % report_every == 0 or step + 1 == num_steps):
            print(f"autoencoder step {step + 1}/{num_steps}  loss {losses[-1]:.4f}", flush=True)
    model.train(was_training)
    return losses
