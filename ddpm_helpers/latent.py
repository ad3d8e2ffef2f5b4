"""Moving between images and the scaled latents a latent diffusion model is trained on.

The diffusion process assumes data of roughly unit variance: the forward process
x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·eps ends in N(0, I) only if x0 is on that scale. Pixels in
[-1, 1] are close to it; an autoencoder's latents can be anywhere. Rombach et al. (2022) therefore
multiply the latents by one scalar, scale = 1 / std(z), computed from the data, so that

    z_scaled = scale · E(x)    has unit variance,    and    x̂ = D(z_scaled / scale).

Taught in: the latent-diffusion chapter.
"""

from __future__ import annotations

import math

import torch

from .autoencoder import Autoencoder, AutoencoderConfig
from .checks import check_images, check_positive_int, validated
from .image_range import check_model_images


def _check_autoencoder(model: object) -> None:
    if not isinstance(model, Autoencoder):
        raise ValueError(f"model must be an Autoencoder, got {type(model).__name__}")


def encode_images(model: Autoencoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """z = E(x) for every image, in batches, without gradients and in eval mode.

    images: (N, C, H, W) in [-1, 1] → z: (N, *model.config.latent_shape), float32 on the CPU.
    Images evidently in [0, 1] or [0, 255] are refused by the rule of :mod:`ddpm_helpers.image_range`
    (values outside [-1, 1], or none negative while some image varies; flat images, e.g. all
    white, pass): an autoencoder trained on [-1, 1] digits reconstructs [0, 1] ones at a few dB.
    """
    _check_autoencoder(model)
    check_model_images(images, "images")
    check_positive_int(batch_size, "batch_size")
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    latents = [torch.empty(0, *model.config.latent_shape)]
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(parameter.device, parameter.dtype)
            with validated():  # checked once above, not once per batch
                latents.append(model.encode(x).float().cpu())
    model.train(was_training)
    return torch.cat(latents)


def latent_scale(latents: torch.Tensor) -> float:
    """scale = 1 / std(z) over all values of ``latents`` (any shape), so that scale·z has unit variance.

    Computed in float64 from the data, as Rombach et al. (2022) do before training the diffusion model.
    """
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.numel() < 2:
        raise ValueError(f"latents must hold at least two values to have a std, got shape {tuple(latents.shape)}")
    std = float(latents.double().std())
    if not math.isfinite(std) or std == 0.0:
        raise ValueError(f"latents must have a finite, non-zero std, got std {std}")
    return 1.0 / std


def latent_range(latents: torch.Tensor) -> tuple[float, float]:
    """(min, max) over all values of ``latents`` (the scaled training latents): the interval a sampler
    clips x̂0 to in latent space, as it clips to [-1, 1] in pixels (06_latent).

    A latent has no range known beforehand, but the data the model learnt from fills one; on the cosine
    schedule a sampler's x̂0 at t near T multiplies the network's error by up to 1/√ᾱ_T, and clipping it to
    where the data lies is what keeps a 20-step sampler on the data.
    """
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.numel() < 2 or not bool(torch.isfinite(latents).all()):
        raise ValueError(f"latents must hold at least two values, all finite, got shape {tuple(latents.shape)}")
    low, high = float(latents.min()), float(latents.max())
    if not low < high:
        raise ValueError(f"latents must not all be equal (got every value {low}): they fill no interval")
    return low, high


def decode_latents(model: Autoencoder, z_scaled: torch.Tensor, scale: float, batch_size: int = 500) -> torch.Tensor:
    """x̂ = D(z_scaled / scale), in batches, without gradients and in eval mode.

    z_scaled: (N, *latent_shape) → x̂: (N, C, H, W), float32 on the CPU, in (-1, 1).
    The division is done in float64 and then rounded to the model's dtype, so latents scaled as
    ``z.double() * scale`` come back bit-for-bit as z. (In float32, (z·scale)/scale differs from z
    by one rounding in about one value in ten: harmless, but not exact.)
    """
    _check_autoencoder(model)
    check_images(z_scaled, "z_scaled")
    check_positive_int(batch_size, "batch_size")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number (from latent_scale), got {scale!r}")
    parameter = next(model.parameters())
    size = model.config.image_size
    was_training = model.training
    model.eval()
    images = [torch.empty(0, model.config.in_channels, size, size)]
    with torch.no_grad():
        for start in range(0, z_scaled.shape[0], batch_size):
            z = z_scaled[start : start + batch_size].double() / scale
            images.append(model.decode(z.to(parameter.device, parameter.dtype)).float().cpu())
    model.train(was_training)
    return torch.cat(images)


def check_latent_model(autoencoder_config: AutoencoderConfig, unet_in_channels: int, unet_image_size: int) -> None:
    """A latent diffusion network must take what the autoencoder produces: (C, H, W) = latent_shape.

    Raises a ``ValueError`` naming both sides when ``unet_in_channels`` or ``unet_image_size``
    differ from ``autoencoder_config.latent_shape``.
    """
    if not isinstance(autoencoder_config, AutoencoderConfig):
        raise ValueError(f"autoencoder_config must be an AutoencoderConfig, got {type(autoencoder_config).__name__}")
    channels, size, _ = autoencoder_config.latent_shape
    if unet_in_channels != channels or unet_image_size != size:
        raise ValueError(
            f"the latent model must match the autoencoder's latent_shape {autoencoder_config.latent_shape} "
            f"(latent_channels={autoencoder_config.latent_channels}, image_size={autoencoder_config.image_size}, "
            f"channels={autoencoder_config.channels}), got unet_in_channels={unet_in_channels}, "
            f"unet_image_size={unet_image_size}"
        )
