"""Judging a diffusion model by its samples: draw them, then score them with the MNIST classifier.

Used by the training chapter (quality over training time) and the benchmark scripts, so that every
reported number is computed the same way: the same sampler (the config's ``judge``, defined once),
the same sample count, the same real reference set. Taught in: 04_training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from . import metrics
from .checks import check_images, check_positive_int
from .classifier import FEATURE_DIM, load_classifier
from .diffusion import MNIST_PIXELS
from .samplers import SamplerSpec, sample
from .schedules import NoiseSchedule


class RealReference(NamedTuple):
    """The classifier, features of ``num_samples`` real test images, and the real-vs-real FID floor."""

    classifier: nn.Module
    features: torch.Tensor
    fid_floor: float  # FID between as many real training and real test images

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]


def real_reference(
    train_images: torch.Tensor, test_images: torch.Tensor, num_samples: int, device: torch.device | str = "cpu", *, dataset: str = "mnist"
) -> RealReference:
    """Load the shipped classifier of ``dataset`` (the judge: MNIST's by default, ``"fashion-mnist"`` for clothes)
    and embed the first ``num_samples`` test images as the FID reference; the floor compares them with as many
    training images (the best FID a perfect model could expect). Pass ``dataset=cfg.data.dataset`` so that the
    images and the judge are of the same data set."""
    check_positive_int(num_samples, "num_samples")
    for images, name in ((train_images, "train_images"), (test_images, "test_images")):
        check_images(images, name)
    if num_samples <= FEATURE_DIM:
        raise ValueError(f"num_samples must exceed the {FEATURE_DIM} feature dimensions for FID's covariance to be estimable, got {num_samples}")
    if min(train_images.shape[0], test_images.shape[0]) < num_samples:
        raise ValueError(f"num_samples ({num_samples}) exceeds the images given ({train_images.shape[0]} train, {test_images.shape[0]} test)")
    classifier = load_classifier(device, dataset=dataset)
    features = metrics.classify(classifier, test_images[:num_samples]).features
    floor = metrics.fid(metrics.classify(classifier, train_images[:num_samples]).features, features)
    return RealReference(classifier, features, floor)


def sample_quality(
    model: nn.Module,
    schedule: NoiseSchedule,
    reference: RealReference,
    spec: SamplerSpec,
    *,
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[metrics.QualityReport, torch.Tensor]:
    """Draw ``reference.num_samples`` images with ``spec`` (fixed seed) and score them; returns (report, samples).

    The book judges its models with ``cfg.judge``: the stochastic DPM-Solver++(2M) with 20 steps, which
    matched DDIM with 100 steps and η = 1 (the judge before it) over the same sampling seeds on the same
    models (benchmarks/results/recipe-cpu.md). Both are stochastic: for a model early in training a
    stochastic sampler gave far better samples than deterministic DDIM ("The sampler used to judge a
    young model" on that page; chapter 5 compares the samplers on the final model).
    """
    generator = torch.Generator(device=schedule.device).manual_seed(seed)
    samples = sample(model, reference.num_samples, MNIST_PIXELS, schedule, spec, generator=generator, batch_size=batch_size)
    return metrics.quality_report(reference.classifier, samples, reference.features), samples
