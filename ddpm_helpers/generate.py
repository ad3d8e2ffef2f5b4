"""The shipped models by name → images in one call, the way diffusers' pipelines serve a reader.

    result = dh.generate("conditional", digits=[7, 7, 3], sampler="dpm-solver++-sde", steps=20, seed=0)
    result.images        # (3, 1, 32, 32) in [-1, 1]
    dh.generate("unconditional", num_images=16)
    dh.generate("latent", num_images=16)        # sampled in latent space, decoded through its own autoencoder

Everything a model needs comes from its weights (:mod:`~ddpm_helpers.cards`): the diffusion it was
trained for, the prediction type (a v-model arrives wrapped in ``EpsFromV``) and, for a latent model,
the latent scale and the autoencoder checked by SHA-256 (:func:`~ddpm_helpers.pretrained.load_latent_model`).
The loop underneath is :func:`~ddpm_helpers.samplers.sample` with a :class:`~ddpm_helpers.samplers.SamplerSpec`
of one of :data:`~ddpm_helpers.steps.STEPS`. Taught in: 05_sampling (samplers), 07_conditional (digits, guidance).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from .cards import read_card
from .checks import check_fraction, check_positive_int
from .diffusion import DataSpace
from .latent import decode_latents
from .pretrained import load_latent_model, load_pretrained
from .samplers import SamplerSpec, sample
from .schedules import make_schedule
from .steps import STEPS
from .weights import WEIGHTS_DIR


class Generated(NamedTuple):
    """What :func:`generate` made and how: ``images`` (N, C, H, W) float32 on the CPU in [-1, 1],
    the ``digits`` asked for (None for an unconditional model), the ``model`` name, the sampler
    ``spec``, the ``guidance_scale`` and the ``seed``."""

    images: torch.Tensor
    digits: list[int] | None
    model: str
    spec: SamplerSpec
    guidance_scale: float
    seed: int


def diffusion_models(directory: str | Path = WEIGHTS_DIR) -> list[str]:
    """The names of the diffusion models in ``directory`` (default: the shipped ones)."""
    names = []
    for path in sorted(Path(directory).glob("*.json")):
        if path.with_suffix(".pt").is_file() and read_card(path, f"pretrained model {path.stem!r}").kind == "ddpm-unet":
            names.append(path.stem)
    return names


def _check_digits(digits: object, num_classes: int | None, model: str) -> list[int]:
    if num_classes is None:
        raise ValueError(f"digits: the model {model!r} is not class-conditional, so it cannot be asked for digits (got {digits!r}); "
                         "pass num_images= instead, or use the 'conditional' model")
    if isinstance(digits, torch.Tensor):
        digits = digits.tolist()
    if isinstance(digits, (int, str)) or not isinstance(digits, Sequence) or len(digits) == 0:
        raise ValueError(f"digits must be a non-empty list of digits, e.g. [7, 7, 3], got {digits!r}")
    bad = [d for d in digits if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < num_classes]
    if bad:
        raise ValueError(f"digits must be integers from 0 to {num_classes - 1} (the classes of {model!r}), got {bad} in {list(digits)!r}")
    return [int(d) for d in digits]


def generate(
    model: str = "conditional", *, digits: Sequence[int] | torch.Tensor | None = None, num_images: int | None = None,
    sampler: str = "dpm-solver++-sde", steps: int | None = 20, guidance_scale: float = 1.0, seed: int = 0,
    device: torch.device | str = "cpu", batch_size: int = 125, directory: str | Path = WEIGHTS_DIR,
) -> Generated:
    """Images from the model named ``model``, in one call.

    A class-conditional model draws one image per entry of ``digits`` (each 0–9), mixing its two
    predictions with classifier-free guidance, ε̃ = ε(x_t, ∅) + s·(ε(x_t, y) − ε(x_t, ∅)), s =
    ``guidance_scale`` (1: the conditional model as trained); an unconditional or latent model draws
    ``num_images``. ``sampler`` is a method of ``dh.STEPS`` run for ``steps`` steps (None: all T;
    "ddpm" always visits all T). The starting noise and every fresh draw come from a generator seeded
    with ``seed``, so the same call gives the same images. A latent model is sampled with x̂0 clipped
    to the range of its training latents where its card records one, and decoded through its own
    autoencoder. Returns :class:`Generated`.
    """
    available = diffusion_models(directory)
    if model not in available:
        raise ValueError(f"model must be the name of a shipped diffusion model, one of {available}, got {model!r}")
    if sampler not in STEPS:
        raise ValueError(f"sampler must be one of {list(STEPS)} (dh.STEPS), got {sampler!r}")
    if sampler == "ddpm" and steps is not None:
        raise ValueError(f"steps: the sampler 'ddpm' visits every one of the T steps, so steps must be None, got {steps!r}; for fewer steps use 'ddim' or 'dpm-solver++'")
    if steps is not None:
        check_positive_int(steps, "steps")
    check_positive_int(seed, "seed", minimum=0)
    check_positive_int(batch_size, "batch_size")
    check_fraction(guidance_scale, "guidance_scale", high=float("inf"))
    if num_images is not None:
        check_positive_int(num_images, "num_images")
    card = read_card(Path(directory) / f"{model}.json", f"pretrained model {model!r}")
    num_classes = card.network.get("num_classes")
    if digits is not None:
        digits = _check_digits(digits, num_classes, model)
        if num_images is not None and num_images != len(digits):
            raise ValueError(f"num_images must equal len(digits) = {len(digits)} when both are given, got {num_images}; give one of them")
        num_images = len(digits)
    elif num_classes is not None:
        raise ValueError(f"digits: the model {model!r} is class-conditional; ask for digits, e.g. digits=[7, 7, 3] (got digits=None)")
    elif num_images is None:
        raise ValueError(f"num_images: give how many images to draw from {model!r}, e.g. num_images=16 (got None)")
    if num_classes is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale applies to a class-conditional model only; {model!r} is not one (got {guidance_scale})")

    device = torch.device(device)
    if card.latent is None:
        network, diffusion = load_pretrained(model, device=device, directory=directory)
        shape = (card.network["image_channels"], card.network["image_size"], card.network["image_size"])
        space, spec = DataSpace(shape, (-1.0, 1.0)), SamplerSpec(sampler, num_steps=steps)
    else:
        network, diffusion, autoencoder, scale, space = load_latent_model(model, device=device, directory=directory)
        spec = SamplerSpec(sampler, num_steps=steps, clip_x0=space.value_range is not None)  # to its training latents' range, if recorded
    schedule = make_schedule(diffusion.schedule, diffusion.T).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    y = None if digits is None else torch.tensor(digits, device=device)
    x = sample(network, num_images, space, schedule, spec, y=y, guidance_scale=guidance_scale, generator=generator, batch_size=batch_size)
    if card.latent is not None:
        x = decode_latents(autoencoder, x.cpu(), scale).clamp(-1.0, 1.0)
    return Generated(x.float().cpu(), digits, model, spec, float(guidance_scale), seed)
