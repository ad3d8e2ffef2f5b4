"""Sample-quality metrics: FID and KID on the MNIST classifier's features, class accuracy and
confidence from its logits, SSIM and PSNR for reconstructions, and nearest training neighbours.

FID, KID, SSIM and PSNR are pure functions of tensors; :func:`classify` is the only place that
runs the classifier. Every FID is biased at small sample counts: compare numbers computed on the
same number of samples, and report that number. Taught in: measuring_quality.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_finite, check_labels, check_positive_int
from .diffusion import MNIST_PIXELS
from .image_range import check_model_images, to_unit_interval


class Classified(NamedTuple):
    """The classifier's view of a batch: penultimate features (N, 128) and logits (N, 10)."""

    features: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 500) -> Classified:
    """Features and logits of ``images`` ((N, 1, 32, 32) in [-1, 1], N ≥ 1; evident [0, 1] images are
    refused by the rule of :mod:`ddpm_helpers.image_range`), computed in batches on the classifier's
    device; returned on the CPU in float32."""
    _check_mnist_images(images, "images")
    device = next(classifier.parameters()).device
    classifier.eval()
    features, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        f = classifier.features(batch)
        features.append(f.float().cpu())
        logits.append(classifier.head(f).float().cpu())
    return Classified(torch.cat(features), torch.cat(logits))


def _check_mnist_images(x: torch.Tensor, name: str, *, any_size: bool = False, value_range: tuple[float, float] | None = None) -> None:
    """At least one grey image, finite, in [-1, 1] and not evidently [0, 1] images (or in a stated
    ``value_range``; see :mod:`ddpm_helpers.image_range`): (N, 1, 32, 32) for the classifier;
    (N, 1, H, W) of any size for the pixel metrics (``any_size``)."""
    check_model_images(x, name, value_range=value_range)
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got an empty batch of shape {tuple(x.shape)}")
    if any_size and x.shape[1] != 1:
        raise ValueError(f"{name} must be grey images of shape (N, 1, H, W), got {tuple(x.shape)}; compare colour images one channel at a time")
    if not any_size and tuple(x.shape[1:]) != MNIST_PIXELS.shape:
        raise ValueError(f"{name} must have shape (N, 1, 32, 32): MNIST digits padded to 32x32 (dh.load_mnist does it), got {tuple(x.shape)}")


def _check_features(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str], min_count: int = 2) -> None:
    """Two finite (N, D) feature sets with D ≥ 1 and at least ``min_count`` rows each, of one D."""
    for x, name in zip((a, b), names):
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), a tensor of N feature vectors, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[1] == 0:
            raise ValueError(f"{name} must have at least one feature dimension (D >= 1), got shape {tuple(x.shape)}: with none every distance is 0")
        if x.shape[0] < min_count:
            raise ValueError(f"{name} needs at least {min_count} samples, got {x.shape[0]}")
        check_finite(x, name)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature size, got {a.shape[1]} and {b.shape[1]}")


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017), in float64:

    FID = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}).

    features_a: (N, D), features_b: (M, D), each with more samples than dimensions for a full-rank fit.
    """
    _check_features(features_a, features_b, ("features_a", "features_b"))
    dim = features_a.shape[1]
    for x, name in ((features_a, "features_a"), (features_b, "features_b")):
        if x.shape[0] <= dim:
            raise ValueError(f"{name} needs more samples than feature dimensions ({dim}) for a covariance, got {x.shape[0]}")
    a, b = features_a.double().numpy(), features_b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))  # (D, D), also for D = 1
    root_a = _sqrt_psd(sigma_a)
    cross = _sqrt_psd(root_a @ sigma_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(cross))


def kid(features_a: torch.Tensor, features_b: torch.Tensor, *, num_subsets: int = 100, subset_size: int = 1000, generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the kernel
    k(x, y) = (xᵀy / D + 1)³, averaged over random subsets. Returns (mean, standard deviation).

    Each subset draws ``subset_size`` rows of each set without replacement; with ``subset_size``
    at or above both set sizes every subset is the whole set and the standard deviation is 0, so
    choose it below the set sizes (e.g. half) to see KID's spread. With ``num_subsets=1`` there is
    no spread to measure: the standard deviation is returned as NaN (unknown), never 0, which would
    claim a certainty the estimate does not have."""
    _check_features(features_a, features_b, ("features_a", "features_b"))
    check_positive_int(subset_size, "subset_size", minimum=2)  # the unbiased estimate divides by size - 1
    check_positive_int(num_subsets, "num_subsets")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    a, b = features_a.double(), features_b.double()
    dim = a.shape[1]
    values = []
    for _ in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:size]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:size]]
        k_xx, k_yy, k_xy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (size * (size - 1))
        values.append(float(off_diagonal - 2 * k_xy.mean()))
    values_t = torch.tensor(values)
    return float(values_t.mean()), float(values_t.std()) if num_subsets > 1 else math.nan


def _check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    """A finite (N, C) tensor with N ≥ 1 rows (a share of no samples is undefined) and C ≥ 2 classes."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        got = f"shape {tuple(logits.shape)}, dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be a floating tensor of shape (N, C), one row of class scores per sample, got {got}")
    if logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"{name} must hold at least one sample and two classes, got shape {tuple(logits.shape)}")
    check_finite(logits, name)


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max class equals the label (for conditional samples: the requested digit).
    logits: (N, C), N ≥ 1; labels: (N,) integers in [0, C)."""
    _check_logits(logits)
    check_labels(labels, logits.shape[0], logits.shape[1], "labels")
    return float((logits.argmax(1) == labels).float().mean())


def confidences(logits: torch.Tensor) -> torch.Tensor:
    """The classifier's probability of its predicted class, (N,), from logits (N, C) with N ≥ 1."""
    _check_logits(logits)
    return F.softmax(logits.float(), dim=1).max(dim=1).values


def confident_fraction(logits: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of samples the classifier recognises confidently (top probability ≥ ``threshold``)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return float((confidences(logits) >= threshold).float().mean())


def class_histogram(logits: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Fraction of samples predicted as each class, (num_classes,): a skew reveals mode collapse.
    logits: (N, num_classes), N ≥ 1."""
    _check_logits(logits)
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits must have num_classes = {num_classes} columns, got shape {tuple(logits.shape)}; pass num_classes={logits.shape[1]}")
    return torch.bincount(logits.argmax(1), minlength=num_classes).float() / logits.shape[0]


def _as_pixel_arrays(x: torch.Tensor, name: str, value_range: tuple[float, float] | None) -> np.ndarray:
    _check_mnist_images(x, name, any_size=True, value_range=value_range)
    return to_unit_interval(x, value_range).numpy()  # [0, 1]


def psnr(reference: torch.Tensor, images: torch.Tensor, *, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB, on [0, 1] pixels p (data range 1), via scikit-image:

        PSNR = 10 log10(1 / MSE),   MSE = mean over pixels of (p_reference − p_image)².

    reference, images: (N, 1, H, W) → (N,) float64. Pixels are p = (x + 1)/2 for images in [-1, 1]
    (``value_range=None``: evident [0, 1] images are refused, flat ones accepted; the rule is in
    :mod:`ddpm_helpers.image_range`), or p = (x − low)/(high − low) for a stated
    ``value_range=(low, high)``, which is checked exactly: pass ``(0, 1)`` for [0, 1] images, or
    ``(-1, 1)`` for light [-1, 1] images the rule would take for [0, 1] ones.
    An image identical to its reference has no error and an infinite PSNR: it is returned as ``inf``
    without the divide-by-zero warning scikit-image raises on the way. Taught in: measuring_quality.
    """
    from skimage.metrics import peak_signal_noise_ratio

    ref, img = _as_pixel_arrays(reference, "reference", value_range), _as_pixel_arrays(images, "images", value_range)
    if ref.shape != img.shape:
        raise ValueError(f"reference and images must have the same shape, got {ref.shape} and {img.shape}")
    values = [math.inf if np.array_equal(r, i) else peak_signal_noise_ratio(r, i, data_range=1.0) for r, i in zip(ref, img)]
    return torch.tensor(values, dtype=torch.float64)


def ssim(reference: torch.Tensor, images: torch.Tensor, *, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004) on [0, 1] pixels, via scikit-image (7×7
    windows, C₁ = 0.01², C₂ = 0.03²). reference, images: (N, 1, H, W) → (N,). Pixels and
    ``value_range`` as in :func:`psnr`. Taught in: measuring_quality."""
    from skimage.metrics import structural_similarity

    ref, img = _as_pixel_arrays(reference, "reference", value_range), _as_pixel_arrays(images, "images", value_range)
    if ref.shape != img.shape:
        raise ValueError(f"reference and images must have the same shape, got {ref.shape} and {img.shape}")
    return torch.tensor([structural_similarity(r[0], i[0], data_range=1.0) for r, i in zip(ref, img)])


def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest references to each query by Euclidean distance in feature space.

    queries: (N, D), references: (M, D). Returns (distances (N, k), indices (N, k)) — a memorisation
    check: samples much closer to a training image than test images are to theirs were copied.
    """
    _check_features(queries, references, ("queries", "references"), min_count=1)
    if not 1 <= k <= references.shape[0]:
        raise ValueError(f"k must lie in [1, {references.shape[0]}], got {k}")
    # without the matrix-multiply shortcut, so that a point's distance to itself is exactly 0
    distances = torch.cdist(queries.float(), references.float(), compute_mode="donot_use_mm_for_euclid_dist")
    result = distances.topk(k, dim=1, largest=False)
    return result.values, result.indices


COLLAPSE_SHARE = 0.3  # a predicted class above this share of the samples flags a collapsed histogram


class QualityReport(NamedTuple):
    """How good a set of unconditional samples is, judged by the MNIST classifier."""

    num_samples: int
    fid: float  # against the reference features, at num_samples samples
    confident_fraction: float  # share of samples recognised with probability ≥ 0.9
    min_class_share: float  # the rarest predicted digit's share (0.1 when balanced)
    class_shares: list[float]  # predicted-class histogram

    @property
    def collapsed(self) -> bool:
        """True when one predicted class holds more than :data:`COLLAPSE_SHARE` of the samples (3× its
        share among balanced digits). Then the confident fraction means little: clipped Gaussian noise
        is "confidently recognised", all as one digit (see measuring_quality)."""
        return max(self.class_shares) > COLLAPSE_SHARE

    def summary(self) -> str:
        """One line: FID at n, the confident share, the class shares' range, and a warning if collapsed."""
        line = (f"FID {self.fid:.2f} (n = {self.num_samples}), confident {self.confident_fraction:.1%}, "
                f"class shares {self.min_class_share:.1%} to {max(self.class_shares):.1%}")
        return line + ("  WARNING: collapsed class histogram, the confident share is not a quality score here" if self.collapsed else "")


def quality_report(classifier: nn.Module, samples: torch.Tensor, reference_features: torch.Tensor) -> QualityReport:
    """FID against ``reference_features``, confident recognition and the predicted-class histogram of
    ``samples`` ((N, 1, 32, 32) in [-1, 1]). The book's convention: the reference is the same number
    of real *test* images (never trained on), as in :func:`ddpm_helpers.evaluation.real_reference`."""
    classified = classify(classifier, samples)
    shares = class_histogram(classified.logits)
    return QualityReport(
        num_samples=samples.shape[0],
        fid=fid(classified.features, reference_features),
        confident_fraction=confident_fraction(classified.logits),
        min_class_share=float(shares.min()),
        class_shares=[round(float(s), 4) for s in shares],
    )
